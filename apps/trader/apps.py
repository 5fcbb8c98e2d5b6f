from __future__ import annotations

from django.apps import AppConfig


class TraderAppConfig(AppConfig):
    name = "apps.trader"
    label = "trader"
    verbose_name = "Trader"
    default_auto_field = "django.db.models.BigAutoField"
