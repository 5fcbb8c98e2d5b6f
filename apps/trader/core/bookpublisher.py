"""Book publishing: the tops of the books that changed, batched per tick for consoles and per heartbeat for rows.

The feed marks a market as changed (a dict write and a set lookup per message); the work of formatting a
top is done once per tick, only for changed markets, and at most ``per_tick`` of them: when more changed, the
rest wait for the next tick, oldest first, so a busy market cannot starve a quiet one. The heartbeat's rows
take the tops the ticks formatted.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from apps.kalshi.clock import iso_from_epoch_us
from apps.kalshi.fixedpoint import CONTRACT, DOLLAR
from apps.kalshi.orderbook import OrderBook, price_text
from apps.trader.core.eventbus import Event, EventBus
from apps.trader.core.ports import FeedClient


class ChangedMarkets:
    """Markets in the order they first changed since they were last taken; each at most once.

    A set and a deque rather than an OrderedDict: at 10,000 markets nearly every message marks a market
    not marked yet, and a set add plus a deque append cost half an OrderedDict insertion.
    """

    __slots__ = ("_marked", "_order")

    def __init__(self) -> None:
        self._marked: set[str] = set()
        self._order: deque[str] = deque()
        """The marked markets, oldest first; may also hold markets discarded since (skipped when taken)."""

    def __len__(self) -> int:
        return len(self._marked)

    def mark(self, ticker: str) -> None:
        if ticker not in self._marked:
            self._marked.add(ticker)
            self._order.append(ticker)

    def discard(self, ticker: str) -> None:
        self._marked.discard(ticker)

    def take(self) -> str | None:
        """The oldest marked market (unmarking it), None when none is."""
        marked, order = self._marked, self._order
        while order:
            ticker = order.popleft()
            if ticker in marked:
                marked.remove(ticker)
                return ticker
        return None


DEPTH = 5
"""Levels a side each published book carries (the console's depth ladder)."""

DEPTH_KEYS = ("yes_bids", "yes_asks")
"""The keys of a published book that hold its levels."""


class BookPublisher:
    def __init__(
        self,
        bus: EventBus,
        client: Callable[[], FeedClient | None],
        *,
        interval: float = 0.05,
        per_tick: int = 1000,
    ) -> None:
        self._bus = bus
        self._client = client
        self.interval = interval
        self.per_tick = per_tick
        self.session_id: int | None = None
        self._pending = ChangedMarkets()
        """Markets changed since they were last published, oldest change first."""
        self._published: dict[str, dict[str, Any]] = {}
        """Tops published since the heartbeat last took them, oldest first, one per market (its latest): the
        heartbeat's MarketTop rows are the tops consoles were shown, formatted once (at 10,000 busy markets,
        formatting them again for the heartbeat cost a twentieth of the trader's time)."""
        self._updated: dict[str, tuple[int, int | None]] = {}
        """Per market: when its book last changed, and the exchange's ts_ms of that change (None: a snapshot)."""

    # ------------------------------------------------------------------------------------------ marking

    def book_changed(self, ticker: str, received_us: int, ts_ms: int | None) -> None:
        """The feed applied a snapshot (``ts_ms`` None) or a delta to ``ticker``'s book. On the hot path."""
        self._updated[ticker] = (received_us, ts_ms)
        self._pending.mark(ticker)

    def markets_changed(self, tickers: Iterable[str]) -> None:
        """Something other than the book changed for these markets (they went stale): show them again."""
        for ticker in tickers:
            self._pending.mark(ticker)

    def forget(self, tickers: Iterable[str]) -> None:
        """Markets no longer watched: nothing more is published for them."""
        for ticker in tickers:
            self._pending.discard(ticker)
            self._updated.pop(ticker, None)
            self._published.pop(ticker, None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # ------------------------------------------------------------------------------------------ publishing

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.publish()

    def publish(self) -> int:
        """Emit one ``orderbooks`` event with the oldest ``per_tick`` changed books; returns how many."""
        client = self._client()
        if client is None or not self._pending:
            return 0
        books: list[dict[str, Any]] = []
        take = self._pending.take
        published = self._published
        while len(books) < self.per_tick and (ticker := take()) is not None:
            book = client.books.get(ticker)
            if book is not None:
                top = published[ticker] = self.top(book, client)
                books.append(top)
        if books:
            self._bus.emit(Event("orderbooks", {"session_id": self.session_id, "books": books}))
        return len(books)

    def take_published(self, limit: int) -> list[dict[str, Any]]:
        """At most ``limit`` of the tops published since the heartbeat last took them (for its MarketTop rows),
        oldest first, each market once with its latest; the rest wait for the next heartbeat."""
        published = self._published
        return [published.pop(ticker) for ticker in list(itertools.islice(published, limit))]

    def top(self, book: OrderBook, client: FeedClient) -> dict[str, Any]:
        """One market's top of book and its first DEPTH levels a side, as consoles and MarketTop rows show it.

        The levels are YES prices: ``yes_bids`` best (highest) first, ``yes_asks`` (1 - a NO bid) best (lowest)
        first; the top is the first level of each. Thousands of tops a second at 10,000 markets: the prices
        are sorted as plain ints in C (a book has a few dozen levels at most) and each level is formatted
        once, the top sharing its dict with the first level; consumers forward the levels only to a console
        that watches the market, and market pages leave them out.
        """
        yes, no = book.yes, book.no
        bid_prices = sorted(yes, reverse=True)[:DEPTH]
        no_prices = sorted(no, reverse=True)[:DEPTH]
        bids = [level_dict(price, yes[price]) for price in bid_prices]
        asks = [level_dict(DOLLAR - price, no[price]) for price in no_prices]
        spread = price_text(DOLLAR - no_prices[0] - bid_prices[0]) if bids and asks else None
        ticker = book.market_ticker
        updated_at, ts_ms = self._updated.get(ticker, _NEVER)
        return {
            "market_ticker": ticker,
            "sid": book.sid,
            "seq": book.seq,
            "yes_bid": bids[0] if bids else None,
            "yes_ask": asks[0] if asks else None,
            "spread": spread,
            "stale": ticker in client.stale,
            "updated_at": iso_from_epoch_us(updated_at) if updated_at is not None else None,
            "ts_ms": ts_ms,
            "yes_bids": bids,
            "yes_asks": asks,
        }


_NEVER: tuple[None, None] = (None, None)


def level_dict(price: int, size: int) -> dict[str, str]:
    """One level as consoles show it, {"price": "0.4200", "size": "12.50"}: ``level_text`` without the tuple."""
    return {"price": price_text(price), "size": _SIZE_TEXTS.get(size) or size_text(size)}


def size_text(size: int) -> str:
    """``format_size`` for the sizes of a book (never negative), remembered: the same sizes rest in a book
    tick after tick, and a lookup costs a tenth of formatting one (ten times a top)."""
    whole, hundredths = divmod(size, CONTRACT)
    text = f"{whole}{_HUNDREDTHS[hundredths]}"
    if len(_SIZE_TEXTS) >= _SIZES_KEPT:
        _SIZE_TEXTS.clear()
    _SIZE_TEXTS[size] = text
    return text


_HUNDREDTHS = [f".{n:02d}" for n in range(CONTRACT)]
_SIZE_TEXTS: dict[int, str] = {}
_SIZES_KEPT = 8_192
