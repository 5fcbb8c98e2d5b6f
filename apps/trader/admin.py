from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from django.contrib import admin
from django.db.models import CASCADE, Model, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from apps.marketdata.admin import RecordedGapInline, RecordedMarketInline
from apps.marketdata.export import FORMATS
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
        if len(tickers) > MARKET_FILTER_LIMIT:
            return []  # a list nobody can scan; the search box finds a ticker
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
        "duration",
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
        "metrics_table",
        "web_links",
    )
    exclude = ("latest_status", "latest_metrics")

    # The console's pages are named, not imported: the web app sits above this one.
    def view_on_site(self, obj: TradingSession) -> str:
        """ "View on site": the session's page in the console's history (transitions and charts)."""
        return reverse("console-session", args=[obj.pk])

    @admin.display(description="on the web")
    def web_links(self, obj: TradingSession) -> SafeString:
        exports = format_html_join(
            " ",
            '<a href="{}" download>{}</a>',
            ((reverse("console-session-export", args=[obj.pk, fmt]), fmt) for fmt in FORMATS),
        )
        return format_html(
            '<a href="{}">console view</a> · <a href="{}">every session</a> · export {}',
            reverse("console-session", args=[obj.pk]),
            reverse("console-sessions"),
            exports,
        )

    @admin.display(description="markets")
    def market_list(self, obj: TradingSession) -> str:
        # A session can watch 10,000 markets: the list column names a few so the table keeps its width.
        markets = obj.markets or []
        shown = ", ".join(markets[:MARKETS_LISTED])
        return f"{shown} and {len(markets) - MARKETS_LISTED} more" if len(markets) > MARKETS_LISTED else shown

    @admin.display(description="duration", ordering="ended_at")
    def duration(self, obj: TradingSession) -> str:
        if obj.ended_at is None:
            return "running" if obj.status == TradingSession.Status.RUNNING else "—"
        seconds = int((obj.ended_at - obj.started_at).total_seconds())
        hours, rest = divmod(seconds, 3600)
        return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"

    @admin.display(description="metrics")
    def metrics_table(self, obj: TradingSession) -> SafeString:
        rows = list(_flatten(obj.latest_metrics or {}))
        if not rows:
            return format_html("<span>{}</span>", "none recorded")
        body = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
        return format_html('<table class="trader-metrics"><tbody>{}</tbody></table>', body)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Sessions are history: pages are read-only (no Save buttons), deleting is the only change.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.status == TradingSession.Status.RUNNING:
            return False  # a running trader is writing into it
        return super().has_delete_permission(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[TradingSession]) -> None:
        super().delete_queryset(request, queryset.exclude(status=TradingSession.Status.RUNNING))

    def get_deleted_objects(
        self, objs: Iterable[TradingSession], request: HttpRequest
    ) -> tuple[list[str], dict[str, int], set[str], list[str]]:
        """The confirmation page's summary, counted instead of listed: Django's default names every related
        row, and a session's recording can hold millions."""
        sessions = [session for session in objs if session.status != TradingSession.Status.RUNNING]
        ids = [session.pk for session in sessions]
        counts: dict[str, int] = {str(TradingSession._meta.verbose_name_plural): len(sessions)}
        perms_needed: set[str] = set()
        for related, field in _cascaded_relations():
            count = related._default_manager.filter(**{f"{field}__in": ids}).count()
            if not count:
                continue
            meta = related._meta
            counts[str(meta.verbose_name_plural)] = count
            if not request.user.has_perm(f"{meta.app_label}.delete_{meta.model_name}"):
                perms_needed.add(str(meta.verbose_name))
        return [str(session) for session in sessions], counts, perms_needed, []


MARKETS_LISTED = 3
"""Markets named in the session list's column."""
MARKET_FILTER_LIMIT = 100
"""Above this many distinct markets the sidebar offers no market links."""


def _cascaded_relations() -> list[tuple[type[Model], str]]:
    """(model, its field naming the session) for each kind of row that goes with a deleted session (a replay
    of it stays, and forgets what it replayed)."""
    return [
        (relation.related_model, relation.field.name)
        for relation in TradingSession._meta.related_objects
        if relation.on_delete is CASCADE
    ]


def _flatten(metrics: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted name, value) for every leaf of the nested metrics document, in name order."""
    for name in sorted(metrics):
        value = metrics[name]
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", str(value)
