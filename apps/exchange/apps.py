from __future__ import annotations

from django.apps import AppConfig


class ExchangeAppConfig(AppConfig):
    """The built-in Kalshi exchange simulator; it has no models, only the runexchange command."""

    name = "apps.exchange"
    label = "exchange"
    verbose_name = "Exchange simulator"
