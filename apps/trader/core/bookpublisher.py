"""Book publishing: the tops of the books that changed, batched per tick for consoles and per heartbeat for rows.

The feed marks a market as changed (a set lookup and two dict writes per message); the work of formatting a
top is done once per tick, only for changed markets, and at most ``per_tick`` of them: when more changed, the
rest wait for the next tick, oldest first, so a busy market cannot starve a quiet one.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from apps.kalshi.fixedpoint import DOLLAR, format_price, format_size
from apps.kalshi.messages import Level
from apps.kalshi.orderbook import OrderBook
from apps.trader.core.clock import from_epoch_us
from apps.trader.core.eventbus import Event, EventBus
from apps.trader.core.ports import FeedClient


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
        self._pending: OrderedDict[str, None] = OrderedDict()
        """Markets changed since they were last published, oldest change first."""
        self._unreported: OrderedDict[str, None] = OrderedDict()
        """Markets changed since the last heartbeat took their tops, oldest change first."""
        self._updated: dict[str, tuple[int, int | None]] = {}
        """Per market: when its book last changed, and the exchange's ts_ms of that change (None: a snapshot)."""

    # ------------------------------------------------------------------------------------------ marking

    def book_changed(self, ticker: str, received_us: int, ts_ms: int | None) -> None:
        """The feed applied a snapshot (``ts_ms`` None) or a delta to ``ticker``'s book. On the hot path."""
        self._updated[ticker] = (received_us, ts_ms)
        if ticker not in self._pending:
            self._pending[ticker] = None
        if ticker not in self._unreported:
            self._unreported[ticker] = None

    def markets_changed(self, tickers: Iterable[str]) -> None:
        """Something other than the book changed for these markets (they went stale): show them again."""
        for ticker in tickers:
            if ticker not in self._pending:
                self._pending[ticker] = None
            if ticker not in self._unreported:
                self._unreported[ticker] = None

    def forget(self, tickers: Iterable[str]) -> None:
        """Markets no longer watched: nothing more is published for them."""
        for ticker in tickers:
            self._pending.pop(ticker, None)
            self._unreported.pop(ticker, None)
            self._updated.pop(ticker, None)

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
        pending = self._pending
        while pending and len(books) < self.per_tick:
            ticker, _ = pending.popitem(last=False)
            book = client.books.get(ticker)
            if book is not None:
                books.append(self.top(book, client))
        if books:
            self._bus.emit(Event("orderbooks", {"session_id": self.session_id, "books": books}))
        return len(books)

    def take_unreported(self, limit: int) -> list[dict[str, Any]]:
        """The tops of at most ``limit`` markets that changed since they were last taken, oldest change first
        (for the heartbeat's MarketTop rows); the rest wait for the next heartbeat."""
        client = self._client()
        if client is None or not self._unreported:
            return []
        tops: list[dict[str, Any]] = []
        unreported = self._unreported
        while unreported and len(tops) < limit:
            ticker, _ = unreported.popitem(last=False)
            book = client.books.get(ticker)
            if book is not None:
                tops.append(self.top(book, client))
        return tops

    def top(self, book: OrderBook, client: FeedClient) -> dict[str, Any]:
        """One market's top of book as consoles and MarketTop rows show it (no depth: the pages show none)."""
        top = book.top()
        updated_at, ts_ms = self._updated.get(book.market_ticker, (None, None))
        return {
            "market_ticker": book.market_ticker,
            "sid": book.sid,
            "seq": book.seq,
            "yes_bid": _level(top.yes_bid),
            "yes_ask": _level(top.yes_ask),
            "spread": _price_text(top.spread) if top.spread is not None else None,
            "stale": book.market_ticker in client.stale,
            "updated_at": from_epoch_us(updated_at).isoformat() if updated_at is not None else None,
            "ts_ms": ts_ms,
        }


# Tops are formatted thousands of times a second at 10,000 markets, from a few hundred distinct prices and
# sizes: their texts are kept (bounded) instead of formatted again each time.
_price_text = functools.lru_cache(maxsize=DOLLAR + 1)(format_price)
_size_text = functools.lru_cache(maxsize=65_536)(format_size)


def _level(level: Level | None) -> dict[str, str] | None:
    if level is None:
        return None
    return {"price": _price_text(level[0]), "size": _size_text(level[1])}
