from __future__ import annotations

from django.apps import AppConfig


class ConsoleAppConfig(AppConfig):
    name = "apps.console"
    label = "console"
    verbose_name = "Console"
