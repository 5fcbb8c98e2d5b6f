"""Positions and P&L of this trader's account, computed from its own fills.

Each market holds a signed position (+ YES, - NO, 1/100 contract), what the open position cost, the realized
P&L and the fees, booked the way the exchange books them (Kalshi's ``GET /portfolio/positions``:
``position_fp``, ``market_exposure_dollars``, ``realized_pnl_dollars``, ``fees_paid_dollars``), so at the end
of a run the two agree to the micro-dollar and ``differences`` says where they do not.

Each fill is booked by ``apps.kalshi.positions.BookedPosition``, Kalshi's booking rules in one place (the
built-in exchange books its accounts with it too).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from apps.kalshi.fixedpoint import DOLLAR, format_money, format_size
from apps.kalshi.portfolio import MarketPosition
from apps.kalshi.positions import BookedPosition
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
        self._held: dict[str, BookedPosition] = {}
        self._trade_ids: set[str] = set()

    def load(self, positions: Iterable[MarketPosition], *, trade_ids: Iterable[str] = ()) -> None:
        """Baseline from REST (start of a session or after a reconnect): replaces what is held.

        ``trade_ids`` are fills the baseline already includes (from ``GET /portfolio/fills``), so a late
        message of one of them is not booked on top. Fills booked before stay known for the same reason.
        """
        self._held = {p.ticker: _booked(p) for p in positions}
        self._trade_ids.update(trade_ids)

    def apply_fill(self, fill: FillRecord) -> bool:
        """Book one fill; False (nothing changes) when its trade_id was booked already (idempotent)."""
        if fill.trade_id in self._trade_ids:
            return False
        self._trade_ids.add(fill.trade_id)
        self._held.setdefault(fill.ticker, BookedPosition()).book(fill.side, fill.count, fill.yes_price, fill.fee)
        return True

    def tickers(self) -> list[str]:
        """Every market held or traded, by ticker."""
        return sorted(self._held)

    def position(self, ticker: str) -> int:
        """Contracts held in ``ticker``, signed (+ YES, - NO), 1/100 contract."""
        held = self._held.get(ticker)
        return held.position if held else 0

    def record(self, ticker: str, mark: int | None, at_us: int) -> PositionRecord:
        """``ticker``'s position as a record, marked at the YES price ``mark``."""
        held = self._held.get(ticker) or BookedPosition()
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
        return [self.record(ticker, marks.get(ticker), at_us) for ticker in self.tickers()]

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
        theirs = {p.ticker: _booked(p) for p in positions}
        lines = []
        for ticker in sorted(self._held.keys() | theirs.keys()):
            mine, other = self._held.get(ticker) or BookedPosition(), theirs.get(ticker) or BookedPosition()
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


def _booked(position: MarketPosition) -> BookedPosition:
    """The exchange's report of a position, in the ledger's terms (its cost is ``market_exposure``)."""
    return BookedPosition(position.position, position.market_exposure, position.realized_pnl, position.fees_paid)
