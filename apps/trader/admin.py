"""Admin for sessions and what they traded: read-only history, prices and money as dollar strings."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from django.contrib import admin
from django.db.models import CASCADE, Model, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from apps.kalshi.fixedpoint import format_money, format_price, format_size
from apps.marketdata.admin import RecordedGapInline, RecordedMarketInline
from apps.marketdata.export import FORMATS
from apps.trader.models import Fill, Order, OrderChange, PositionSnapshot, StateTransition, TradingSession


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


def dollars(price: int | None) -> str:
    """A YES price (1/10,000 dollar) as Kalshi writes it, with the dollar sign: "$0.4500"."""
    return "—" if price is None else _signed_dollars(format_price(price))


def money(amount: int | None) -> str:
    """Micro-dollars to the micro-dollar: "$0.003150", "-$12.500000"."""
    return "—" if amount is None else _signed_dollars(format_money(amount))


def contracts(count: int) -> str:
    """1/100 contract as Kalshi writes it: "12.50"."""
    return format_size(count)


def _session_link(session_id: int) -> SafeString:
    return format_html(
        '<a href="{}">{}</a>', reverse("admin:trader_tradingsession_change", args=[session_id]), session_id
    )


def _signed_dollars(text: str) -> str:
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"


class _LatestFormSet(BaseInlineFormSet):  # type: ignore[type-arg]
    """An inline's rows cut to the inline's ``latest`` first rows in its ordering: a session's page stays fast with
    10,000 orders, and links to the whole list."""

    latest = 20

    def get_queryset(self) -> QuerySet[Any]:
        if not hasattr(self, "_latest"):
            self._latest = super().get_queryset()[: self.latest]
        return self._latest


class _ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class _ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """History: no adding, no editing, no deleting one row (they go with their session)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class _OrderFigures:
    """An order's (or change's) price, counts and fees as an operator reads them."""

    @admin.display(description="price", ordering="yes_price")
    def price(self, obj: Order | OrderChange) -> str:
        return dollars(obj.yes_price)

    @admin.display(description="count", ordering="initial_count")
    def initial(self, obj: Order | OrderChange) -> str:
        return contracts(obj.initial_count)

    @admin.display(description="filled", ordering="fill_count")
    def filled(self, obj: Order | OrderChange) -> str:
        return contracts(obj.fill_count)

    @admin.display(description="remaining", ordering="remaining_count")
    def remaining(self, obj: Order | OrderChange) -> str:
        return contracts(obj.remaining_count)

    @admin.display(description="fees", ordering="fees")
    def fees_paid(self, obj: Order | OrderChange) -> str:
        return money(obj.fees)


class _StrategyName:
    @admin.display(description="strategy", ordering="strategy")
    def strategy_name(self, obj: Order) -> SafeString:
        # A dotted path is as wide as the rest of the row: the class name, the path on hover.
        return format_html('<span title="{}">{}</span>', obj.strategy, obj.strategy.rsplit(".", 1)[-1])


class _FillFigures:
    @admin.display(description="price", ordering="yes_price")
    def price(self, obj: Fill) -> str:
        return dollars(obj.yes_price)

    @admin.display(description="count", ordering="count")
    def contracts(self, obj: Fill) -> str:
        return contracts(obj.count)

    @admin.display(description="fee", ordering="fee")
    def fee_paid(self, obj: Fill) -> str:
        return money(obj.fee)

    @admin.display(description="position after", ordering="post_position")
    def position_after(self, obj: Fill) -> str:
        return contracts(obj.post_position)


class OrderChangeInline(_OrderFigures, _ReadOnlyInline):
    model = OrderChange
    verbose_name = "change"
    ordering = ("at", "id")
    fields = ("at", "status", "price", "initial", "filled", "remaining", "fees_paid", "reason", "error_code")
    readonly_fields = fields


class OrderFillInline(_FillFigures, _ReadOnlyInline):
    model = Fill
    fk_name = "order"
    ordering = ("traded_at", "id")
    fields = ("traded_at", "trade_id", "price", "contracts", "fee_paid", "is_taker", "position_after")
    readonly_fields = fields


class SessionOrderInline(_OrderFigures, _StrategyName, _ReadOnlyInline):
    """The session's latest orders; the session's trading links to all of them."""

    model = Order
    formset = _LatestFormSet
    verbose_name_plural = f"latest {_LatestFormSet.latest} orders"
    ordering = ("-created_at", "-id")
    fields = (
        "created_at",
        "client_order_id",
        "ticker",
        "side",
        "price",
        "initial",
        "filled",
        "remaining",
        "status",
        "fees_paid",
        "strategy_name",
    )
    readonly_fields = fields
    show_change_link = True


class SessionFillInline(_FillFigures, _ReadOnlyInline):
    """The session's latest fills; the session's trading links to all of them."""

    model = Fill
    fk_name = "session"
    formset = _LatestFormSet
    verbose_name_plural = f"latest {_LatestFormSet.latest} fills"
    ordering = ("-traded_at", "-id")
    fields = (
        "traded_at",
        "trade_id",
        "client_order_id",
        "ticker",
        "side",
        "price",
        "contracts",
        "fee_paid",
        "is_taker",
        "position_after",
    )
    readonly_fields = fields


@admin.register(Order)
class OrderAdmin(_OrderFigures, _StrategyName, _ReadOnlyAdmin):
    list_display = (
        "created_at",
        "session_link",
        "client_order_id",
        "ticker",
        "side",
        "price",
        "initial",
        "filled",
        "remaining",
        "status",
        "fees_paid",
        "strategy_name",
    )
    list_filter = (("session", admin.RelatedOnlyFieldListFilter), "status", "side", "strategy")
    search_fields = ("ticker", "=client_order_id", "=exchange_order_id")
    ordering = ("-created_at", "-id")
    fields = (
        "session",
        ("client_order_id", "exchange_order_id"),
        ("ticker", "side", "time_in_force"),
        ("price", "initial", "filled", "remaining"),
        ("status", "error_code", "fees_paid"),
        "strategy",
        ("created_at", "updated_at"),
    )
    readonly_fields = (
        "session",
        "client_order_id",
        "exchange_order_id",
        "ticker",
        "side",
        "time_in_force",
        "price",
        "initial",
        "filled",
        "remaining",
        "status",
        "error_code",
        "fees_paid",
        "strategy",
        "created_at",
        "updated_at",
    )
    inlines = (OrderChangeInline, OrderFillInline)
    # The sidebar's session choices and the count of a filtered list stay cheap on a large table.
    show_full_result_count = False

    @admin.display(description="session", ordering="session")
    def session_link(self, obj: Order) -> SafeString:
        return _session_link(obj.session_id)


@admin.register(Fill)
class FillAdmin(_FillFigures, _ReadOnlyAdmin):
    list_display = (
        "traded_at",
        "session_link",
        "trade_id",
        "order_link",
        "ticker",
        "side",
        "price",
        "contracts",
        "fee_paid",
        "is_taker",
        "position_after",
    )
    list_filter = (("session", admin.RelatedOnlyFieldListFilter), "side", "is_taker")
    search_fields = ("ticker", "=trade_id", "=client_order_id", "=exchange_order_id")
    ordering = ("-traded_at", "-id")
    fields = (
        "session",
        "order",
        ("trade_id", "client_order_id", "exchange_order_id"),
        ("ticker", "side", "is_taker"),
        ("price", "contracts", "fee_paid", "position_after"),
        ("traded_at", "received_at"),
    )
    readonly_fields = (
        "session",
        "order",
        "trade_id",
        "client_order_id",
        "exchange_order_id",
        "ticker",
        "side",
        "is_taker",
        "price",
        "contracts",
        "fee_paid",
        "position_after",
        "traded_at",
        "received_at",
    )
    show_full_result_count = False

    @admin.display(description="session", ordering="session")
    def session_link(self, obj: Fill) -> SafeString:
        return _session_link(obj.session_id)

    @admin.display(description="order")
    def order_link(self, obj: Fill) -> SafeString | str:
        if obj.order_id is None:
            return obj.client_order_id or "—"
        url = reverse("admin:trader_order_change", args=[obj.order_id])
        return format_html('<a href="{}">{}</a>', url, obj.client_order_id or obj.order_id)


@admin.register(PositionSnapshot)
class PositionSnapshotAdmin(_ReadOnlyAdmin):
    list_display = (
        "at",
        "session_link",
        "ticker",
        "held",
        "open_cost",
        "realized",
        "fees",
        "mark",
        "unrealized",
    )
    list_filter = (("session", admin.RelatedOnlyFieldListFilter),)
    search_fields = ("ticker",)
    ordering = ("-at", "-id")
    fields = (
        "session",
        ("ticker", "at"),
        ("held", "open_cost"),
        ("realized", "fees", "mark", "unrealized"),
    )
    readonly_fields = ("session", "ticker", "at", "held", "open_cost", "realized", "fees", "mark", "unrealized")
    show_full_result_count = False

    @admin.display(description="session", ordering="session")
    def session_link(self, obj: PositionSnapshot) -> SafeString:
        return _session_link(obj.session_id)

    @admin.display(description="position", ordering="position")
    def held(self, obj: PositionSnapshot) -> str:
        return contracts(obj.position)

    @admin.display(description="cost", ordering="cost")
    def open_cost(self, obj: PositionSnapshot) -> str:
        return money(obj.cost)

    @admin.display(description="realized P&L", ordering="realized_pnl")
    def realized(self, obj: PositionSnapshot) -> str:
        return money(obj.realized_pnl)

    @admin.display(description="fees paid", ordering="fees_paid")
    def fees(self, obj: PositionSnapshot) -> str:
        return money(obj.fees_paid)

    @admin.display(description="mark", ordering="mark_price")
    def mark(self, obj: PositionSnapshot) -> str:
        return dollars(obj.mark_price)

    @admin.display(description="unrealized P&L", ordering="unrealized_pnl")
    def unrealized(self, obj: PositionSnapshot) -> str:
        return money(obj.unrealized_pnl)


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
    inlines = (RecordedMarketInline, RecordedGapInline, StateTransitionInline, SessionOrderInline, SessionFillInline)
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
        "trading",
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

    @admin.display(description="trading")
    def trading(self, obj: TradingSession) -> SafeString:
        """Counts of what the session traded, each linking to its list filtered to the session."""
        kinds = (
            ("order", obj.orders.count(), "trader_order_changelist"),
            ("fill", obj.fills.count(), "trader_fill_changelist"),
            ("position snapshot", obj.position_snapshots.count(), "trader_positionsnapshot_changelist"),
        )
        return format_html_join(
            " · ",
            '<a href="{}?session__id__exact={}">{} {}</a>',
            (
                (reverse(f"admin:{name}"), obj.pk, f"{count:,}", kind if count == 1 else f"{kind}s")
                for kind, count, name in kinds
            ),
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


def _cascaded_relations(model: type[Model] = TradingSession, path: str = "") -> list[tuple[type[Model], str]]:
    """(model, its lookup reaching the session) for each kind of row that goes with a deleted session, and with
    the rows that go with it (an order's changes); a replay of it stays, and forgets what it replayed."""
    found: list[tuple[type[Model], str]] = []
    for relation in model._meta.related_objects:
        if relation.on_delete is not CASCADE or relation.related_model is model:
            continue
        lookup = f"{relation.field.name}__{path}" if path else relation.field.name
        found.append((relation.related_model, lookup))
        found += _cascaded_relations(relation.related_model, lookup)
    return found


def _flatten(metrics: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted name, value) for every leaf of the nested metrics document, in name order."""
    for name in sorted(metrics):
        value = metrics[name]
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", str(value)
