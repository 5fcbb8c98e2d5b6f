"""Positions and P&L of this trader's account, computed from its own fills.

Each market holds a signed position (+ YES, - NO, 1/100 contract), what the open position cost, the realized
P&L and the fees, booked the way the exchange books them (Kalshi's ``GET /portfolio/positions``:
``position_fp``, ``market_exposure_dollars``, ``realized_pnl_dollars``, ``fees_paid_dollars``), so at the end
of a run the two agree to the micro-dollar and ``differences`` says where they do not.

A fill that meets the opposite holding closes it first: a YES bought against NO held releases the pair's
dollar, which is the same as selling the NO at 1 - price, and the closed part's share of the cost is
released rounded down (the exchange's rounding of a partial close); only the rest opens. Prices are YES
prices in 1/10,000 dollar and counts 1/100 contract, so a count times a price is exactly micro-dollars.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from apps.kalshi.fixedpoint import DOLLAR, format_money, format_size
from apps.kalshi.portfolio import BookSide, MarketPosition
from apps.trader.core.trading.records import FillRecord, PositionRecord


@dataclass(frozen=True, slots=True)
class PnL:
    """The account's P&L over every market, micro-dollars."""

    realized: int
    unrealized: int | None
    """Marked to the given marks; None when a market with a position has no mark."""
    fees: int
    exposure: int
    """What the open positions cost."""

    @property
    def total(self) -> int:
        """Realized plus unrealized (0 when unknown) less fees."""
        return self.realized + (self.unrealized or 0) - self.fees


@dataclass(slots=True)
class _Held:
    position: int = 0
    cost: int = 0
    realized_pnl: int = 0
    fees_paid: int = 0


def outcome_cost(side: BookSide, count: int, price: int) -> int:
    """What ``count`` costs the side that opens with it, micro-dollars: YES at ``price`` for a bid, NO at
    ``1 - price`` for an ask."""
    return count * (price if side == "bid" else DOLLAR - price)


def unrealized_pnl(position: int, cost: int, mark: int | None) -> int | None:
    """What a position is worth at the YES price ``mark`` less what it cost; None without a mark (0 when flat)."""
    if position == 0:
        return 0
    if mark is None:
        return None
    value = position * mark if position > 0 else -position * (DOLLAR - mark)
    return value - cost


class Ledger:
    """Per market position, cost, realized P&L and fees, from a REST baseline and the fills since."""

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}
        self._trade_ids: set[str] = set()

    def load(self, positions: Iterable[MarketPosition], *, trade_ids: Iterable[str] = ()) -> None:
        """Baseline from REST (start of a session or after a reconnect): replaces what is held.

        ``trade_ids`` are fills the baseline already includes (from ``GET /portfolio/fills``), so a late
        message of one of them is not booked on top. Fills booked before stay known for the same reason.
        """
        self._held = {p.ticker: _Held(p.position, p.market_exposure, p.realized_pnl, p.fees_paid) for p in positions}
        self._trade_ids.update(trade_ids)

    def apply_fill(self, fill: FillRecord) -> bool:
        """Book one fill; False (nothing changes) when its trade_id was booked already (idempotent)."""
        if fill.trade_id in self._trade_ids:
            return False
        self._trade_ids.add(fill.trade_id)
        held = self._held.setdefault(fill.ticker, _Held())
        direction = 1 if fill.side == "bid" else -1
        closing = min(fill.count, max(0, -direction * held.position))
        opening = fill.count - closing
        if closing:
            # Closing k of the opposite outcome is worth what that outcome trades at: 1 - price for NO
            # closed by a bid, the price for YES closed by an ask.
            proceeds = outcome_cost("ask" if fill.side == "bid" else "bid", closing, fill.yes_price)
            size = abs(held.position)
            released = held.cost if closing == size else held.cost * closing // size
            held.cost -= released
            held.realized_pnl += proceeds - released
            held.position += direction * closing
        if opening:
            held.cost += outcome_cost(fill.side, opening, fill.yes_price)
            held.position += direction * opening
        # Kept apart from realized P&L, as Kalshi's positions report them.
        held.fees_paid += fill.fee
        return True

    def position(self, ticker: str) -> int:
        """Contracts held in ``ticker``, signed (+ YES, - NO), 1/100 contract."""
        held = self._held.get(ticker)
        return held.position if held else 0

    def record(self, ticker: str, mark: int | None, at_us: int) -> PositionRecord:
        """``ticker``'s position as a record, marked at the YES price ``mark``."""
        held = self._held.get(ticker) or _Held()
        return PositionRecord(
            ticker=ticker,
            position=held.position,
            cost=held.cost,
            realized_pnl=held.realized_pnl,
            fees_paid=held.fees_paid,
            mark_price=mark,
            unrealized_pnl=unrealized_pnl(held.position, held.cost, mark),
            at_us=at_us,
        )

    def records(self, marks: Mapping[str, int | None], at_us: int) -> list[PositionRecord]:
        """Every market held or traded, by ticker."""
        return [self.record(ticker, marks.get(ticker), at_us) for ticker in sorted(self._held)]

    def pnl(self, marks: Mapping[str, int | None]) -> PnL:
        """The account's P&L with positions marked at ``marks`` (YES prices by ticker)."""
        unrealized: int | None = 0
        for ticker, held in self._held.items():
            value = unrealized_pnl(held.position, held.cost, marks.get(ticker))
            unrealized = None if value is None or unrealized is None else unrealized + value
        return PnL(
            realized=sum(h.realized_pnl for h in self._held.values()),
            unrealized=unrealized,
            fees=sum(h.fees_paid for h in self._held.values()),
            exposure=sum(h.cost for h in self._held.values()),
        )

    def differences(self, positions: Iterable[MarketPosition]) -> list[str]:
        """Human lines for each field where the ledger and the exchange's positions differ ([] when equal).

        A market missing on one side counts as flat there with nothing realized.
        """
        theirs = {p.ticker: _Held(p.position, p.market_exposure, p.realized_pnl, p.fees_paid) for p in positions}
        lines = []
        for ticker in sorted(self._held.keys() | theirs.keys()):
            mine, other = self._held.get(ticker) or _Held(), theirs.get(ticker) or _Held()
            for label, name, formatted in (
                ("position", "position", format_size),
                ("market_exposure", "cost", format_money),
                ("realized_pnl", "realized_pnl", format_money),
                ("fees_paid", "fees_paid", format_money),
            ):
                ours, exchange = getattr(mine, name), getattr(other, name)
                if ours != exchange:
                    lines.append(f"{ticker} {label}: trader {formatted(ours)}, exchange {formatted(exchange)}")
        return lines
