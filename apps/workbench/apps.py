from __future__ import annotations

from django.apps import AppConfig


class WorkbenchAppConfig(AppConfig):
    """The outermost layer: soak, benchtrader, benchrecording and replaysession drive the trader, its
    recordings and the exchange simulator together. No other app imports it; it has no models."""

    name = "apps.workbench"
    label = "workbench"
    verbose_name = "Workbench: soak, benchmarks, replay"
