"""Admin for recordings: gaps on their own page, and a session's markets and gaps inline on the session."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.marketdata.models import RecordedGap, RecordedMarket


class _ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RecordedMarketInline(_ReadOnlyInline):
    """What the session recorded per market (totals kept by the writer, so the page stays fast)."""

    model = RecordedMarket
    verbose_name = "recorded market"
    ordering = ("market_ticker",)
    fields = (
        "market_ticker",
        "snapshots",
        "deltas",
        "last_sid",
        "last_seq",
        "first_received_at",
        "last_received_at",
    )
    readonly_fields = fields


class RecordedGapInline(_ReadOnlyInline):
    model = RecordedGap
    ordering = ("position",)
    fields = ("position", "kind", "sid", "expected_seq", "received_seq", "market_list", "detected_at", "healed_at")
    readonly_fields = fields

    @admin.display(description="markets")
    def market_list(self, obj: RecordedGap) -> str:
        return ", ".join(obj.markets or [])


@admin.register(RecordedGap)
class RecordedGapAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "id",
        "session",
        "position",
        "kind",
        "sid",
        "expected_seq",
        "received_seq",
        "market_list",
        "detected_at",
        "healed_at",
    )
    list_filter = ("kind", ("healed_at", admin.EmptyFieldListFilter), ("detected_at", admin.DateFieldListFilter))
    list_select_related = ("session",)
    search_fields = ("markets",)
    ordering = ("-detected_at", "-id")
    readonly_fields = (
        "session",
        "position",
        "kind",
        "sid",
        "expected_seq",
        "received_seq",
        "markets",
        "detected_at",
        "healed_at",
    )

    @admin.display(description="markets")
    def market_list(self, obj: RecordedGap) -> str:
        return ", ".join(obj.markets or [])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
