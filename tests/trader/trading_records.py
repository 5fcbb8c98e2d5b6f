"""Trading records as the trading engine produces them, for the recording tests."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from apps.kalshi.clock import epoch_us
from apps.trader.core.trading.records import FillRecord, OrderRecord, PositionRecord

T0_US = epoch_us(datetime(2026, 12, 2, 14, 30, 5, 123456, tzinfo=UTC))


def placed(client_order_id: str = "c-1", *, at_ms: int = 0, **fields: Any) -> OrderRecord:
    """An order just sent: 5.00 contracts bid at 0.4500 on KXA, by the quoter."""
    record = OrderRecord(
        client_order_id=client_order_id,
        order_id="",
        ticker="KXA",
        side="bid",
        yes_price=4500,
        initial_count=500,
        fill_count=0,
        remaining_count=500,
        time_in_force="good_till_canceled",
        status="submitted",
        fees=0,
        reason="placed by quoter: bid 0.0200 under the mid",
        strategy="quoter",
        at_us=T0_US + at_ms * 1000,
    )
    return replace(record, **fields)


def changed(order: OrderRecord, *, at_ms: int, reason: str, **fields: Any) -> OrderRecord:
    """The same order after a change ``at_ms`` after T0."""
    return replace(order, at_us=T0_US + at_ms * 1000, reason=reason, **fields)


def fill(trade_id: str = "t-1", *, order: OrderRecord | None = None, at_ms: int = 0, **fields: Any) -> FillRecord:
    """A maker fill of 2.00 contracts at 0.4500 (of ``order`` when given)."""
    record = FillRecord(
        trade_id=trade_id,
        order_id=order.order_id if order is not None else "",
        client_order_id=order.client_order_id if order is not None else "",
        ticker="KXA",
        side="bid",
        yes_price=4500,
        count=200,
        fee=3_150,
        is_taker=False,
        post_position=200,
        ts_ms=(T0_US // 1000) + at_ms,
        received_us=T0_US + at_ms * 1000 + 850,
    )
    return replace(record, **fields)


def position(ticker: str = "KXA", *, at_ms: int = 0, **fields: Any) -> PositionRecord:
    record = PositionRecord(
        ticker=ticker,
        position=200,
        cost=900_000,
        realized_pnl=0,
        fees_paid=3_150,
        mark_price=4550,
        unrealized_pnl=10_000,
        at_us=T0_US + at_ms * 1000,
    )
    return replace(record, **fields)


def a_trading_morning() -> list[OrderRecord | FillRecord | PositionRecord]:
    """Two orders of the quoter: one rests, fills in part and is cancelled; one is refused by a risk limit."""
    bid = placed("c-1")
    resting = changed(bid, at_ms=40, reason="resting on the exchange", status="resting", order_id="ex-1")
    partly = changed(
        resting, at_ms=900, reason="filled 2.00 at 0.4500", fill_count=200, remaining_count=300, fees=3_150
    )
    cancelled = changed(partly, at_ms=1500, reason="cancelled: kill switch", status="canceled", remaining_count=0)
    refused = placed(
        "c-2",
        at_ms=60,
        side="ask",
        yes_price=4700,
        status="refused",
        reason="refused by max_position: 5.00 over the limit of 10.00",
        error_code="max_position",
    )
    return [
        bid,
        resting,
        refused,
        fill("t-1", order=resting, at_ms=900),
        partly,
        position(at_ms=900),
        cancelled,
    ]
