from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.marketdata.admin import RecordedGapInline, RecordedMarketInline
from apps.trader.models import StateTransition, TradingSession


class StateTransitionInline(admin.TabularInline):  # type: ignore[type-arg]
    model = StateTransition
    extra = 0
    can_delete = False
    ordering = ("timestamp", "id")
    fields = ("timestamp", "from_state", "to_state", "context")
    readonly_fields = fields
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MarketFilter(admin.SimpleListFilter):
    """Sessions that subscribed to one market."""

    title = "market"
    parameter_name = "market"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        tickers: set[str] = set()
        for markets in TradingSession.objects.values_list("markets", flat=True)[:500]:
            tickers.update(markets or [])
        return [(t, t) for t in sorted(tickers)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[TradingSession]) -> QuerySet[TradingSession]:
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(markets__icontains=f'"{value}"')


@admin.register(TradingSession)
class TradingSessionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "id",
        "environment",
        "status",
        "current_state",
        "market_list",
        "started_at",
        "ended_at",
        "deltas_received",
        "gaps",
        "reconnects",
    )
    list_filter = ("environment", "status", ("started_at", admin.DateFieldListFilter), MarketFilter)
    search_fields = ("markets", "error", "exchange_url")
    date_hierarchy = "started_at"
    ordering = ("-started_at",)
    inlines = (RecordedMarketInline, RecordedGapInline, StateTransitionInline)
    readonly_fields = (
        "environment",
        "markets",
        "exchange_url",
        "started_at",
        "ended_at",
        "status",
        "current_state",
        "state_entered_at",
        "heartbeat_at",
        "messages_received",
        "snapshots_received",
        "deltas_received",
        "reconnects",
        "gaps",
        "resyncs",
        "bytes_received",
        "error",
        "latest_metrics",
    )
    exclude = ("latest_status",)

    @admin.display(description="markets")
    def market_list(self, obj: TradingSession) -> str:
        return ", ".join(obj.markets or [])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
