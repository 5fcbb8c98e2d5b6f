"""How trading shows: the words of its console lines and the rows of the status document (dollar strings)."""

from __future__ import annotations

from typing import Any

from apps.kalshi.fixedpoint import format_money, format_price, format_size
from apps.kalshi.portfolio import BookSide
from apps.trader.core.trading.records import FillRecord, OrderRecord, PositionRecord


def side_text(side: BookSide) -> str:
    return "buy YES" if side == "bid" else "sell YES"


def order_text(order: OrderRecord) -> str:
    done = f", {format_size(order.fill_count)} filled" if order.fill_count else ""
    return (
        f"{side_text(order.side)} {format_size(order.initial_count)} {order.ticker} at "
        f"{format_price(order.yes_price)}{done} [{order.strategy}]"
    )


def order_status(order: OrderRecord) -> dict[str, Any]:
    return {
        "client_order_id": order.client_order_id,
        "order_id": order.order_id,
        "ticker": order.ticker,
        "side": order.side,
        "yes_price": format_price(order.yes_price),
        "initial_count": format_size(order.initial_count),
        "fill_count": format_size(order.fill_count),
        "remaining_count": format_size(order.remaining_count),
        "status": order.status,
        "time_in_force": order.time_in_force,
        "strategy": order.strategy,
    }


def position_status(record: PositionRecord) -> dict[str, Any]:
    return {
        "ticker": record.ticker,
        "position": format_size(record.position),
        "cost": format_money(record.cost),
        "realized_pnl": format_money(record.realized_pnl),
        "fees_paid": format_money(record.fees_paid),
        "mark_price": format_price(record.mark_price) if record.mark_price is not None else None,
        "unrealized_pnl": format_money(record.unrealized_pnl) if record.unrealized_pnl is not None else None,
    }


def fill_status(fill: FillRecord) -> dict[str, Any]:
    return {
        "trade_id": fill.trade_id,
        "ticker": fill.ticker,
        "side": fill.side,
        "yes_price": format_price(fill.yes_price),
        "count": format_size(fill.count),
        "fee": format_money(fill.fee),
        "is_taker": fill.is_taker,
        "ts_ms": fill.ts_ms,
    }
