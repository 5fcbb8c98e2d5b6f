"""How Kalshi books a fill into a market position: a signed count, its cost, realized P&L and fees, exact.

A position is positive for YES contracts and negative for NO (Kalshi's ``position_fp``). A fill that meets
the opposite holding closes it first: a YES bought against NO held releases the pair's dollar, which is the
same as selling the NO at 1 - price, and the closed part's share of the cost is released rounded down;
only the rest opens. Fees are kept apart from realized P&L, as Kalshi's positions report them. Prices are
YES prices in 1/10,000 dollar and counts 1/100 contract, so a count times a price is exactly micro-dollars.
The built-in exchange books its accounts with it, and the trader its own positions from its fills.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.kalshi.fixedpoint import DOLLAR
from apps.kalshi.portfolio import BookSide


def outcome_cost(side: BookSide, count: int, price: int) -> int:
    """What ``count`` costs the side that opens with it, micro-dollars: YES at ``price`` for a bid, NO at
    ``1 - price`` for an ask."""
    return count * (price if side == "bid" else DOLLAR - price)


@dataclass(slots=True)
class BookedPosition:
    """One market's position as fills have booked it; money in micro-dollars."""

    position: int = 0
    """Signed, 1/100 contract: positive YES, negative NO."""
    cost: int = 0
    """What the open position cost (its cost basis; Kalshi's ``market_exposure``)."""
    realized_pnl: int = 0
    fees_paid: int = 0

    def book(self, side: BookSide, count: int, price: int, fee: int) -> int:
        """Book one fill (``side`` ``bid`` buys YES, ``ask`` buys NO, at the YES ``price``); returns the cash
        it moves, fee apart: what closing paid out, less what opening cost."""
        direction = 1 if side == "bid" else -1
        closing = min(count, max(0, -direction * self.position))
        opening = count - closing
        cash = 0
        if closing:
            # Closing k of the opposite outcome pays what that outcome is worth at this trade's price.
            proceeds = outcome_cost("ask" if side == "bid" else "bid", closing, price)
            size = abs(self.position)
            released = self.cost if closing == size else self.cost * closing // size
            self.cost -= released
            self.realized_pnl += proceeds - released
            self.position += direction * closing
            cash += proceeds
        if opening:
            spent = outcome_cost(side, opening, price)
            self.cost += spent
            self.position += direction * opening
            cash -= spent
        self.fees_paid += fee
        return cash
