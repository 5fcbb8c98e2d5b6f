"""What the trader records about its trading: typed rows, defined once, written behind the trader.

Prices are YES prices in 1/10,000 dollar, counts 1/100 contract, money micro-dollars (``apps.kalshi.fixedpoint``);
times are integer microseconds since the Unix epoch. The session writer queues them in order and the
session store writes them (``SessionStore.trading_records``); a shutdown that cannot write them saves them
with the session's other unwritten rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from apps.kalshi.portfolio import BookSide, TimeInForce

OrderState = Literal["submitted", "resting", "executed", "canceled", "rejected", "refused", "unknown"]
"""An order of this trader as it knows it: ``submitted`` (sent, no answer yet), the exchange's ``resting``,
``executed`` (filled in full) and ``canceled``, ``rejected`` (the exchange said no), ``refused`` (a risk limit
stopped it before it left the process), ``unknown`` (the answer was lost and not yet recovered)."""

FINAL_ORDER_STATES: frozenset[str] = frozenset({"executed", "canceled", "rejected", "refused"})


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """One change of one of this trader's orders: the order as it stands after the change, and why."""

    client_order_id: str
    order_id: str
    """The exchange's id; '' until the exchange has answered (and for a refused order, for ever)."""
    ticker: str
    side: BookSide
    yes_price: int
    initial_count: int
    fill_count: int
    remaining_count: int
    time_in_force: TimeInForce
    status: OrderState
    fees: int
    """Fees paid on this order's fills so far, micro-dollars."""
    reason: str
    """Why this change happened, for a person: "placed by quoter: bid 0.02 under the mid", "refused by
    max_position: ...", "cancelled: kill switch", "filled 2.00 at 0.4500"."""
    strategy: str
    at_us: int
    error_code: str = ""
    """The exchange's error code of a rejection, or the risk rule of a refusal."""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "order", **asdict(self)}


@dataclass(frozen=True, slots=True)
class FillRecord:
    """One fill of one of this trader's orders, as the ``fill`` channel (or REST) reported it."""

    trade_id: str
    order_id: str
    client_order_id: str
    ticker: str
    side: BookSide
    yes_price: int
    count: int
    fee: int
    is_taker: bool
    post_position: int
    """The market position after this fill, signed (+ YES, - NO), 1/100 contract."""
    ts_ms: int
    """When the exchange made the trade."""
    received_us: int

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "fill", **asdict(self)}


@dataclass(frozen=True, slots=True)
class PositionRecord:
    """A market position as the trader computed it from fills, at ``at_us``."""

    ticker: str
    position: int
    """Signed: + YES, - NO; 1/100 contract."""
    cost: int
    """What the open position cost, micro-dollars."""
    realized_pnl: int
    fees_paid: int
    mark_price: int | None
    """The YES price the position is marked at (the book's mid), None without a two-sided book."""
    unrealized_pnl: int | None
    at_us: int

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "position", **asdict(self)}


TradingRecord = OrderRecord | FillRecord | PositionRecord

_KINDS: dict[str, type[OrderRecord] | type[FillRecord] | type[PositionRecord]] = {
    "order": OrderRecord,
    "fill": FillRecord,
    "position": PositionRecord,
}


def record_from_dict(document: dict[str, Any]) -> TradingRecord:
    """The record ``as_dict`` wrote (a saved, unwritten row read back); ValueError when it is not one."""
    fields = dict(document)
    kind = _KINDS.get(fields.pop("kind", None))
    if kind is None:
        raise ValueError(f"not a trading record: kind {document.get('kind')!r}")
    try:
        return kind(**fields)
    except TypeError as exc:
        raise ValueError(f"not a {document['kind']} record: {exc}") from None
