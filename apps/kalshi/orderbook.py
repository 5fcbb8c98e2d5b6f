"""One market's live orderbook, kept exactly from snapshots and deltas.

Kalshi's book holds YES bids and NO bids only. A NO bid at price p is a YES ask at 1 - p, so the best YES
ask is 1 - best NO bid (with ``use_yes_price`` false, the protocol's default).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Protocol

from apps.kalshi.fixedpoint import DOLLAR, format_price, format_size
from apps.kalshi.messages import Level, OrderbookSnapshot, Side, wire_levels


class BookInconsistent(ValueError):
    """A delta that would leave a negative size: the book no longer matches the exchange's."""


class LevelChange(Protocol):
    """What moves one level of a book: an ``OrderbookDelta``, or a change the simulator makes itself."""

    @property
    def side(self) -> Side: ...
    @property
    def price(self) -> int: ...
    @property
    def delta(self) -> int: ...
    @property
    def seq(self) -> int | None:
        """The seq of the message that carried the change; None for one no message carried."""
        ...


@dataclass(frozen=True, slots=True)
class TopOfBook:
    yes_bid: Level | None
    yes_ask: Level | None

    @property
    def spread(self) -> int | None:
        if self.yes_bid is None or self.yes_ask is None:
            return None
        return self.yes_ask[0] - self.yes_bid[0]

    @property
    def mid(self) -> int | None:
        """Halfway between the best YES bid and ask, rounded down to a price unit; None unless two-sided."""
        if self.yes_bid is None or self.yes_ask is None:
            return None
        return (self.yes_bid[0] + self.yes_ask[0]) // 2


class OrderBook:
    """Resting YES and NO bids of one market, as {price: size} in fixed-point units."""

    __slots__ = ("market_id", "market_ticker", "no", "seq", "sid", "yes")

    def __init__(self, market_ticker: str) -> None:
        self.market_ticker = market_ticker
        self.market_id = ""
        self.sid: int | None = None
        self.seq: int | None = None
        self.yes: dict[int, int] = {}
        self.no: dict[int, int] = {}

    def apply_snapshot(self, snapshot: OrderbookSnapshot) -> None:
        self.market_id = snapshot.market_id
        self.sid = snapshot.sid
        self.seq = snapshot.seq
        self.yes = {price: size for price, size in snapshot.yes if size > 0}
        self.no = {price: size for price, size in snapshot.no if size > 0}

    def apply_delta(self, delta: LevelChange) -> None:
        """Add ``delta.delta`` to the size at ``delta.price``; a size of 0 removes the level.

        The one way every book here moves: the client's, the simulator's markets and their history, the
        stream exchange's. BookInconsistent (the book unchanged) when a size would go negative. On the
        feed's hot path: kept to one dict lookup and one write.
        """
        levels = self.yes if delta.side == "yes" else self.no
        size = levels.get(delta.price, 0) + delta.delta
        if size < 0:
            raise BookInconsistent(
                f"{self.market_ticker}: {delta.side} {format_price(delta.price)} would go to {format_size(size)}"
            )
        if size:
            levels[delta.price] = size
        else:
            levels.pop(delta.price, None)
        self.seq = delta.seq

    def copy(self) -> OrderBook:
        """An independent book with the same levels, ids and position."""
        copy = OrderBook(self.market_ticker)
        copy.market_id, copy.sid, copy.seq = self.market_id, self.sid, self.seq
        copy.yes, copy.no = dict(self.yes), dict(self.no)
        return copy

    def levels(self, side: Side, depth: int | None = None) -> list[Level]:
        """Bids of one side, best (highest) first."""
        book = self.yes if side == "yes" else self.no
        ordered = sorted(book.items(), reverse=True)
        return ordered if depth is None else ordered[:depth]

    def top(self) -> TopOfBook:
        # The best price is the highest key: max over the keys, not over (price, size) tuples made per level.
        yes, no = self.yes, self.no
        yes_bid = None
        if yes:
            best = max(yes)
            yes_bid = (best, yes[best])
        yes_ask = None
        if no:
            best = max(no)
            yes_ask = (DOLLAR - best, no[best])
        return TopOfBook(yes_bid=yes_bid, yes_ask=yes_ask)

    def as_wire(self) -> dict[str, list[list[str]]]:
        """Both sides best first, as Kalshi's strings: {"yes": [["0.4200", "12.50"], ...], "no": [...]}."""
        return {"yes": wire_levels(self.levels("yes")), "no": wire_levels(self.levels("no"))}

    def summary(self, depth: int = 5) -> dict[str, Any]:
        """Top of book and the first levels, in Kalshi's string formats, for status and the console."""
        top = self.top()
        return {
            "market_ticker": self.market_ticker,
            "sid": self.sid,
            "seq": self.seq,
            "yes_bid": level_text(top.yes_bid),
            "yes_ask": level_text(top.yes_ask),
            "spread": price_text(top.spread) if top.spread is not None else None,
            "yes_levels": [level_text(level) for level in self.levels("yes", depth)],
            "no_levels": [level_text(level) for level in self.levels("no", depth)],
        }


def differing_levels(ours: OrderBook, theirs: OrderBook) -> list[tuple[Side, int, int, int]]:
    """Every level whose size differs between two books, as (side, price, our size, their size) with 0 for
    a missing level: YES side first then NO, best price first; empty when the books hold the same levels.

    The one book comparison: the cross-check words it, replay turns it into the changes that make ``ours``
    into ``theirs``.
    """
    differences: list[tuple[Side, int, int, int]] = []
    sides: tuple[Side, ...] = ("yes", "no")
    for side in sides:
        a = ours.yes if side == "yes" else ours.no
        b = theirs.yes if side == "yes" else theirs.no
        for price in sorted(a.keys() | b.keys(), reverse=True):
            size_a, size_b = a.get(price, 0), b.get(price, 0)
            if size_a != size_b:
                differences.append((side, price, size_a, size_b))
    return differences


# Tops are formatted thousands of times a second at 10,000 markets from at most 10,001 distinct prices:
# their texts are kept. Sizes are not: they hardly repeat, and a cache of them cost 2.7 MB for few hits.
price_text = functools.lru_cache(maxsize=DOLLAR + 1)(format_price)


def level_text(level: Level | None) -> dict[str, str] | None:
    """One level as consoles and status show it: {"price": "0.4200", "size": "12.50"}; None stays None."""
    if level is None:
        return None
    return {"price": price_text(level[0]), "size": format_size(level[1])}
