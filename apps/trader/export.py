"""Exporting what a session traded: one record per order (as it stands) or per fill, oldest first.

Values are exact strings in Kalshi's V2 formats and names (``yes_price_dollars`` "0.4500", ``count_fp``
"2.00"); money is dollars to the micro-dollar ("0.003150"); times are ISO 8601 in UTC with microseconds.
``order_id`` is the exchange's id ("" until it answered), ``reason`` the order's latest change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from django.db.models import OuterRef, QuerySet, Subquery

from apps.kalshi.clock import epoch_us
from apps.kalshi.fixedpoint import format_money, format_price, format_size
from apps.marketdata.export import export_timestamp
from apps.trader.models import Fill, Order, OrderChange

ORDER_FIELDS = (
    "client_order_id",
    "order_id",
    "market_ticker",
    "book_side",
    "yes_price_dollars",
    "initial_count_fp",
    "fill_count_fp",
    "remaining_count_fp",
    "time_in_force",
    "status",
    "fees_dollars",
    "strategy",
    "error_code",
    "reason",
    "created_at",
    "updated_at",
)
FILL_FIELDS = (
    "trade_id",
    "order_id",
    "client_order_id",
    "market_ticker",
    "book_side",
    "yes_price_dollars",
    "count_fp",
    "fee_dollars",
    "is_taker",
    "post_position_fp",
    "ts_ms",
    "received_at",
)

_Row = TypeVar("_Row", Order, Fill)

_CHUNK = 2_000
"""Rows fetched at a time: memory stays flat however many the session traded."""


def session_orders(*, session_id: int, market_ticker: str | None = None) -> QuerySet[Order]:
    """The session's orders, oldest first, each with its latest change's reason as ``latest_reason``."""
    latest = OrderChange.objects.filter(order=OuterRef("pk")).order_by("-at", "-id").values("reason")[:1]
    orders = Order.objects.filter(session_id=session_id).annotate(latest_reason=Subquery(latest))
    if market_ticker is not None:
        orders = orders.filter(ticker=market_ticker)
    return orders.order_by("created_at", "id")


def session_fills(*, session_id: int, market_ticker: str | None = None) -> QuerySet[Fill]:
    """The session's fills in the exchange's trade order."""
    fills = Fill.objects.filter(session_id=session_id)
    if market_ticker is not None:
        fills = fills.filter(ticker=market_ticker)
    return fills.order_by("traded_at", "id")


def order_records(orders: Iterable[Order]) -> Iterator[dict[str, Any]]:
    """Orders (from ``session_orders``) as export records: dicts with exactly ORDER_FIELDS."""
    for order in _streamed(orders):
        yield {
            "client_order_id": order.client_order_id,
            "order_id": order.exchange_order_id,
            "market_ticker": order.ticker,
            "book_side": order.side,
            "yes_price_dollars": format_price(order.yes_price),
            "initial_count_fp": format_size(order.initial_count),
            "fill_count_fp": format_size(order.fill_count),
            "remaining_count_fp": format_size(order.remaining_count),
            "time_in_force": order.time_in_force,
            "status": order.status,
            "fees_dollars": format_money(order.fees),
            "strategy": order.strategy,
            "error_code": order.error_code,
            "reason": getattr(order, "latest_reason", None) or "",
            "created_at": export_timestamp(order.created_at),
            "updated_at": export_timestamp(order.updated_at),
        }


def fill_records(fills: Iterable[Fill]) -> Iterator[dict[str, Any]]:
    """Fills as export records: dicts with exactly FILL_FIELDS."""
    for fill in _streamed(fills):
        yield {
            "trade_id": fill.trade_id,
            "order_id": fill.exchange_order_id,
            "client_order_id": fill.client_order_id,
            "market_ticker": fill.ticker,
            "book_side": fill.side,
            "yes_price_dollars": format_price(fill.yes_price),
            "count_fp": format_size(fill.count),
            "fee_dollars": format_money(fill.fee),
            "is_taker": fill.is_taker,
            "post_position_fp": format_size(fill.post_position),
            "ts_ms": epoch_us(fill.traded_at) // 1000,
            "received_at": export_timestamp(fill.received_at),
        }


def _streamed(rows: Iterable[_Row]) -> Iterable[_Row]:
    return rows.iterator(chunk_size=_CHUNK) if isinstance(rows, QuerySet) else rows
