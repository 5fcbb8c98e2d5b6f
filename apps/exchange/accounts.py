"""Accounts of the built-in exchange: cash, and per market a signed position with its cost, realized P&L and fees.

A position is positive for YES contracts and negative for NO (Kalshi's ``position_fp``). A fill that meets
the opposite holding closes it first: a YES bought against NO held releases the pair's dollar, which is the
same as selling the NO at 1 - price; only the rest opens. Money is integer micro-dollars, counts 1/100
contract, prices 1/10,000 dollar (``apps.exchange.matching``), so every figure is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from apps.exchange.matching import BookFill
from apps.kalshi.fixedpoint import DOLLAR
from apps.kalshi.positions import BookedPosition, outcome_cost

MICRO_DOLLAR = 1_000_000
"""One dollar in money units."""
MONEY_DECIMALS = 6


def format_money(micro: int) -> str:
    """Micro-dollars as a ``*_dollars`` string with Kalshi's finest precision: 1234567 -> "1.234567"."""
    sign = "-" if micro < 0 else ""
    whole, fraction = divmod(abs(micro), MICRO_DOLLAR)
    return f"{sign}{whole}.{fraction:0{MONEY_DECIMALS}d}"


@dataclass(slots=True)
class Position(BookedPosition):
    """A market position as Kalshi books it, and what the account traded in the market."""

    volume: int = 0
    """Contracts traded, 1/100 contract."""
    traded: int = 0
    """What the trades cost the side that made them, micro-dollars (``total_traded_dollars``)."""
    last_updated_us: int = 0


@dataclass(slots=True)
class AccountSettlement:
    """A market's settlement as it reached one account."""

    ticker: str
    result: Literal["yes", "no"]
    yes_count: int
    no_count: int
    revenue: int
    """Micro-dollars paid out: $1 per winning contract."""
    settled_us: int
    cost: int = 0
    """The settled position's cost basis, micro-dollars."""
    fees: int = 0
    """Fees paid trading this market, micro-dollars."""


@dataclass(slots=True)
class Account:
    owner: str
    balance: int
    """Cash, micro-dollars."""
    positions: dict[str, Position] = field(default_factory=dict)
    settlements: list[AccountSettlement] = field(default_factory=list)

    def position(self, ticker: str) -> Position:
        return self.positions.setdefault(ticker, Position())

    def apply_fill(self, fill: BookFill) -> Position:
        """Move cash and the position for one of this account's fills."""
        held = self.position(fill.ticker)
        self.balance += held.book(fill.side, fill.count, fill.price, fill.fee) - fill.fee
        held.volume += fill.count
        held.traded += outcome_cost(fill.side, fill.count, fill.price)
        held.last_updated_us = fill.ts_us
        return held

    def settle(self, ticker: str, result: Literal["yes", "no"], *, now_us: int = 0) -> AccountSettlement | None:
        """Pay $1 per winning contract of ``ticker`` and close the position; None if nothing was held."""
        held = self.positions.get(ticker)
        if held is None or held.position == 0:
            return None
        yes_count, no_count = max(0, held.position), max(0, -held.position)
        won = yes_count if result == "yes" else no_count
        revenue = won * DOLLAR  # 1/100 contract x 1/10,000 dollar = micro-dollars
        cost = held.cost
        held.realized_pnl += revenue - held.cost
        held.cost = 0
        held.position = 0
        held.last_updated_us = now_us
        self.balance += revenue
        settlement = AccountSettlement(ticker, result, yes_count, no_count, revenue, now_us, cost, held.fees_paid)
        self.settlements.append(settlement)
        return settlement
