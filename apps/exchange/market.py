"""One simulated Kalshi market: its book, how it moves, and a bounded record of its past states.

Plain Python (no Django, no asyncio). Prices are 1/10,000 dollar and sizes 1/100 contract, as in
``apps.kalshi.fixedpoint``. The public book holds YES bids and NO bids; a NO bid at q is a YES ask at 1 - q.

Every order, the simulated liquidity's and users' alike, rests in one ``MatchingBook``. The random walk
acts in it as the "house": it rests orders, withdraws its own, and takes the best level with an IOC order,
which fills whatever rests there in time priority (users' orders too). The public book is the sum of the
matching book's levels: ``take_changes`` turns what the matching book did into ``orderbook_delta``
changes, and ``apply`` moves the public book and its history by them. The matching book never rests a
crossing order, so the public book stays uncrossed and no size goes negative.
"""

from __future__ import annotations

import bisect
import itertools
import random
import uuid
from collections import deque
from dataclasses import dataclass

from apps.exchange.matching import BookFill, BookOrder, BookSide, MatchingBook
from apps.kalshi.fixedpoint import CONTRACT, DOLLAR, format_price
from apps.kalshi.messages import Side
from apps.kalshi.orderbook import OrderBook

LINEAR_CENT = "linear_cent"
DECI_CENT = "deci_cent"
TAPERED_DECI_CENT = "tapered_deci_cent"
PRICE_LEVEL_STRUCTURES = (LINEAR_CENT, DECI_CENT, TAPERED_DECI_CENT)

CENT = DOLLAR // 100
DECI = DOLLAR // 1000

# (start, end, step) per structure, as Kalshi's price_ranges list them.
_RANGES: dict[str, tuple[tuple[int, int, int], ...]] = {
    LINEAR_CENT: ((0, DOLLAR, CENT),),
    DECI_CENT: ((0, DOLLAR, DECI),),
    TAPERED_DECI_CENT: ((0, 10 * CENT, DECI), (10 * CENT, 90 * CENT, CENT), (90 * CENT, DOLLAR, DECI)),
}

# Market ids are stable per ticker so recordings and tests can refer to them.
_MARKET_ID_NAMESPACE = uuid.UUID("6f1d3c52-1b7e-4a7e-9d53-0c6a0b3f2a11")

HOUSE = "(house)"
"""Owner of the simulated liquidity's resting orders."""
HOUSE_TAKER = "(house taker)"
"""Owner of the simulated flow's taking orders: another owner than the makers, so they trade with them."""
HOUSE_OWNERS = frozenset({HOUSE, HOUSE_TAKER})

MAX_LEVELS = 24
"""Above this many levels on a side, changes there are cancels, so books stay a plausible size."""


def valid_prices(structure: str) -> list[int]:
    """Every price strictly between 0 and 1 dollar that the structure allows, ascending."""
    prices: set[int] = set()
    for start, end, step in _RANGES[structure]:
        prices.update(range(start, end + 1, step))
    return sorted(p for p in prices if 0 < p < DOLLAR)


def price_ranges(structure: str) -> list[dict[str, str]]:
    """The REST ``price_ranges`` field: [{"start": "0.0000", "end": "1.0000", "step": "0.0100"}, ...]."""
    return [
        {"start": format_price(start), "end": format_price(end), "step": format_price(step)}
        for start, end, step in _RANGES[structure]
    ]


def market_id_for(ticker: str) -> str:
    return str(uuid.uuid5(_MARKET_ID_NAMESPACE, ticker))


def event_ticker_for(ticker: str) -> str:
    """KXFED-26DEC-T4.25 -> KXFED-26DEC; a ticker with a single dash is its own event."""
    return ticker.rsplit("-", 1)[0] if ticker.count("-") >= 2 else ticker


def series_ticker_for(ticker: str) -> str:
    return ticker.split("-", 1)[0]


@dataclass(frozen=True, slots=True)
class Change:
    """One book change, as an orderbook_delta carries it."""

    side: Side
    price: int
    delta: int
    trade: bool = False
    """A drawn change: take this much liquidity at the best level (with an order that trades)."""
    seq: None = None
    """No message carries a change when it is made: each subscriber's delta gets its own seq."""


class SimMarket:
    """The exchange's state for one market."""

    def __init__(
        self,
        ticker: str,
        *,
        structure: str = LINEAR_CENT,
        rng: random.Random,
        close_time: str,
        history_size: int,
    ) -> None:
        if structure not in _RANGES:
            raise ValueError(f"unknown price level structure {structure!r}")
        self.ticker = ticker
        self.market_id = market_id_for(ticker)
        self.event_ticker = event_ticker_for(ticker)
        self.series_ticker = series_ticker_for(ticker)
        self.structure = structure
        self.close_time = close_time
        self.status = "active"
        self.rng = rng
        self.prices = valid_prices(structure)
        self.price_set = frozenset(self.prices)
        self.book = OrderBook(ticker)
        """The public book: the matching book's levels, moved only by ``apply``."""
        self.book.market_id = self.market_id
        self.matching = MatchingBook(ticker)
        self._house_ids = itertools.count(1)
        # A plausible traded volume to start from, fixed per ticker (its own stream leaves the seeded book
        # and deltas unchanged), so discovery by 24 h volume has something to rank.
        self.volume = random.Random(f"volume:{ticker}").randint(1_000, 900_000) * CONTRACT
        self.open_interest = rng.randint(500, 50_000) * CONTRACT
        self.last_price: int | None = None
        n = len(self.prices)
        # The fair YES price walks as an index into the price grid, kept away from the extremes.
        self._low = max(1, n * 4 // 100)
        self._high = n - 1 - self._low
        self.fair = rng.randint(n * 15 // 100, n * 85 // 100)
        self._seed_book()
        self._history_size = max(1, history_size)
        self._base = self.book.copy()
        """The book before the oldest change still in ``_changes``."""
        self._base_event = 0
        self._changes: deque[tuple[int, Change]] = deque()

    # ------------------------------------------------------------------------------------------ book

    @property
    def yes(self) -> dict[int, int]:
        return self.book.yes

    @property
    def no(self) -> dict[int, int]:
        return self.book.no

    def _mirror(self, index: int) -> int:
        """The NO price of the YES price at ``index``: 1 - p, which is on the same (symmetric) grid."""
        return DOLLAR - self.prices[index]

    def _random_size(self) -> int:
        # Mostly whole contracts, sometimes fractional ones like 12.50 or 3.25.
        whole = self.rng.choice((1, 2, 5, 10, 10, 25, 50, 100, 150, 300, 500))
        extra = self.rng.choice((0, 0, 0, 0, 0, 25, 50, 75))
        return whole * CONTRACT + extra * CONTRACT // 100

    def _seed_book(self) -> None:
        spacing = 1 if self.structure == LINEAR_CENT else 3
        sides: tuple[Side, ...] = ("yes", "no")
        for side in sides:
            offset = 0
            for _ in range(self.rng.randint(6, 14)):
                offset += self.rng.randint(1, spacing + 1)
                index = self.fair - offset if side == "yes" else self.fair + offset
                if not 0 <= index < len(self.prices):
                    break
                price = self.prices[index] if side == "yes" else self._mirror(index)
                self.house_change(Change(side, price, self._random_size()))
        for change in self.take_changes():
            self.book.apply_delta(change)

    def best(self, side: Side) -> int | None:
        levels = self.yes if side == "yes" else self.no
        return max(levels) if levels else None

    def next_change(self) -> Change:
        """Draw the next random change. It is not applied: call ``apply`` with it."""
        for _ in range(20):
            change = self._draw()
            if change is not None:
                return change
        # Always possible: cancel whatever rests somewhere, or add a deep bid that cannot cross.
        sides: tuple[Side, ...] = ("yes", "no")
        for side in sides:
            own = self._house_levels(side)
            if own:
                price = min(own)
                return Change(side, price, -own[price])
        return Change("yes", self.prices[0], self._random_size())

    def _draw(self) -> Change | None:
        rng = self.rng
        if rng.random() < 0.1:
            self.fair = min(self._high, max(self._low, self.fair + rng.choice((-1, 1))))
        side: Side = "yes" if rng.random() < 0.5 else "no"
        levels = self.yes if side == "yes" else self.no
        roll = rng.random()
        if levels and roll < 0.12:
            price = max(levels)
            take = min(levels[price], rng.randint(1, 40) * CONTRACT)
            return Change(side, price, -take, trade=True)
        if levels and (roll < 0.45 or len(levels) > MAX_LEVELS):
            # Only the house's own orders can be withdrawn; users' stay until they go.
            own = self._house_levels(side)
            if not own:
                return None
            ordered = sorted(own)
            price = ordered[0] if len(levels) > MAX_LEVELS else rng.choice(ordered)
            size = own[price]
            if rng.random() < 0.5 or size <= CONTRACT:
                return Change(side, price, -size)
            return Change(side, price, -rng.randint(1, size // CONTRACT) * CONTRACT)
        offset = 1 + min(int(rng.expovariate(0.35)), 25)
        if self.structure != LINEAR_CENT:
            offset *= rng.randint(1, 3)
        index = self.fair - offset if side == "yes" else self.fair + offset
        index = min(len(self.prices) - 1, max(0, index))
        price = self.prices[index] if side == "yes" else self._mirror(index)
        other = self.best("no" if side == "yes" else "yes")
        if other is not None and price + other >= DOLLAR:
            # Stay below the other side's best: the highest grid price with price + other < 1.00.
            below = bisect.bisect_left(self.prices, DOLLAR - other) - 1
            if below < 0:
                return None
            price = self.prices[below]
        return Change(side, price, self._random_size())

    # ------------------------------------------------------------------------------------------ the house

    def _house_levels(self, side: Side) -> dict[int, int]:
        """The house's resting size per public price on one side (NO side at NO prices)."""
        if side == "yes":
            return self.matching.depth("bid", HOUSE)
        return {DOLLAR - price: size for price, size in self.matching.depth("ask", HOUSE).items()}

    def _house_order(self, owner: str, side: BookSide, price: int, count: int, **options: object) -> BookOrder:
        return BookOrder(f"{self.ticker}-H{next(self._house_ids)}", owner, self.ticker, side, price, count, **options)  # type: ignore[arg-type]

    def house_change(self, change: Change) -> list[BookFill]:
        """Have the house do what ``change`` says, in the matching book; returns the fills it made.

        A positive change rests a house order at that level, as it is (a replayed stream's change may not
        be matched away). A drawn ``trade`` takes that much at the level with an IOC order of the other
        side, trading with whatever rests there first. Any other negative change withdraws house orders,
        newest first; ValueError when the house has less than that there.
        """
        side: BookSide = "bid" if change.side == "yes" else "ask"
        price = change.price if change.side == "yes" else DOLLAR - change.price
        if change.delta > 0:
            self.matching.rest(self._house_order(HOUSE, side, price, change.delta))
            return []
        if change.trade:
            other: BookSide = "ask" if side == "bid" else "bid"
            taker = self._house_order(HOUSE_TAKER, other, price, -change.delta, time_in_force="immediate_or_cancel")
            fills = self.matching.submit(taker).fills
            self.record_trades(fills)
            return fills
        mine = [o for o in self.matching.orders_at(side, price) if o.owner == HOUSE]
        wanted = -change.delta
        if sum(o.remaining_count for o in mine) < wanted:
            raise ValueError(f"{self.ticker}: the house rests less than {-change.delta} at {change.side} {price}")
        for order in reversed(mine):
            if not wanted:
                break
            cut = min(wanted, order.remaining_count)
            self.matching.decrease(order.order_id, order.remaining_count - cut)
            wanted -= cut
        return []

    def record_trades(self, fills: list[BookFill]) -> None:
        """Count traded volume and the last price (each trade has a taker fill and a maker fill)."""
        for fill in fills:
            if fill.is_taker:
                self.volume += fill.count
                self.last_price = fill.price

    def take_changes(self) -> list[Change]:
        """The matching book's level changes since the last call, as public changes (one per level moved
        in a row, none of size 0). Each must then be ``apply``-ed."""
        merged: list[Change] = []
        for level in self.matching.take_changes():
            if merged and (merged[-1].side, merged[-1].price) == (level.side, level.price):
                merged[-1] = Change(level.side, level.price, merged[-1].delta + level.delta)
            else:
                merged.append(Change(level.side, level.price, level.delta))
        return [change for change in merged if change.delta]

    # ------------------------------------------------------------------------------------------ history

    def apply(self, change: Change, event: int) -> None:
        """Move the public book by a change and record it under the exchange-wide event number ``event``.

        BookInconsistent (a ValueError) when it would leave a negative size.
        """
        self.book.apply_delta(change)
        self._changes.append((event, change))
        while len(self._changes) > self._history_size:
            old_event, old = self._changes.popleft()
            self._base.apply_delta(old)
            self._base_event = old_event

    def book_at_event(self, event: int) -> tuple[dict[int, int], dict[int, int]] | None:
        """(yes, no) as they were once every change numbered <= ``event`` had been applied.

        None when that moment is older than the retained history.
        """
        if event < self._base_event:
            return None
        book = self._base.copy()
        for change_event, change in self._changes:
            if change_event > event:
                break
            book.apply_delta(change)
        return book.yes, book.no
