"""What the trader core is handed. Django-backed implementations live in apps.trader.services."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from apps.kalshi.feed import FeedListener, FeedStatus, MarketChange, MarketMessage
from apps.kalshi.orderbook import OrderBook
from apps.trader.core.statemachine import Transition
from apps.trader.core.trading.records import TradingRecord


class SessionStore(Protocol):
    """Where sessions, transitions, heartbeats and trading records are written."""

    async def session_start(
        self,
        *,
        environment: str,
        markets: list[str],
        exchange_url: str,
        control_address: str = "",
        replay_of: int | None = None,
    ) -> int:
        """Open the session row; ``control_address`` is where this trader takes control requests, ``replay_of``
        the recorded session its exchange replays (None when live)."""
        ...

    async def transition_record(self, *, session_id: int, transition: Transition) -> None: ...

    async def session_heartbeat(
        self,
        *,
        session_id: int,
        state: str,
        state_entered_at: datetime,
        status: dict[str, Any],
        counters: dict[str, int],
        console: list[dict[str, Any]],
        tops: list[dict[str, Any]],
        markets: list[str] | None,
    ) -> None:
        """Write the session's status; ``tops`` are the markets whose top changed since the last heartbeat
        (their MarketTop rows), ``markets`` the session's market list when it changed (None: unchanged)."""
        ...

    async def trading_records(self, *, session_id: int, records: Sequence[TradingRecord]) -> None:
        """Write a batch of orders, fills and positions in one transaction, in order. Writing the same batch
        again (after a write whose outcome was unknown) adds nothing twice."""
        ...

    async def session_end(self, *, session_id: int, failed: bool, error: str) -> None: ...


class FeedClient(Protocol):
    """The exchange connection: KalshiWebSocketClient, or a stand-in in tests."""

    markets: list[str]
    books: dict[str, OrderBook]
    """The live books, applied in place as messages arrive (the book publisher and cross-check read them)."""
    stale: set[str]
    """Markets whose book waits for a fresh snapshot."""

    async def run(self) -> None: ...

    async def close(self) -> None: ...

    def feed_status(self) -> FeedStatus:
        """The connection's state and counters as of now, as a copy."""
        ...

    async def add_markets(self, tickers: list[str], *, wait: float = ...) -> MarketChange: ...

    async def remove_markets(self, tickers: list[str], *, wait: float = ...) -> MarketChange: ...

    async def resync(self, tickers: list[str]) -> None: ...


class ExchangeRequestFailed(Exception):
    """The exchange's REST side refused or could not answer (closed, an HTTP error, a malformed body).

    The message is the exchange's answer, shown as it is; the core treats it as the exchange's side of
    things rather than a bug, whichever client the port wraps.
    """


class ExchangeRest(Protocol):
    """The exchange's REST side, for market discovery and the optional book cross-check."""

    async def discover(self, count: int) -> list[str]:
        """The ``count`` open markets with the highest 24 h volume; raises ExchangeRequestFailed when the
        exchange is closed, has no open market or does not answer."""
        ...

    async def orderbook(self, ticker: str) -> OrderBook: ...

    def metrics(self) -> dict[str, int]:
        """Counts of the REST side for the status document (requests, 429 retries, errors)."""
        ...


class Recorder(Protocol):
    """The lossless recording path: every applied snapshot and delta, and the gaps between them, in order.

    ``record`` returns at once while the recorder's buffer has room; when it is full it waits until rows
    are written. That wait is the back-pressure: the feed reader stops reading and the exchange sees it.
    """

    async def record(self, session_id: int, message: MarketMessage, received_us: int) -> None:
        """Append an applied message; ``received_us``: when it arrived, in microseconds since the Unix epoch
        (an integer: exact, and far cheaper per message than a datetime)."""

    def take(self, session_id: int, message: MarketMessage, received_us: int) -> Awaitable[None] | None:
        """``record`` on the hot path, without a coroutine per message: None once the message is taken, or an
        awaitable (the buffer is full) that the caller awaits before it hands over the next message."""

    async def record_gap(
        self,
        session_id: int,
        *,
        kind: str,
        sid: int | None,
        expected_seq: int | None,
        received_seq: int | None,
        markets: Sequence[str],
        detected_at: datetime,
    ) -> None:
        """Note a stretch of the feed that never arrived.

        ``kind`` is "seq" (a seq gap), "disconnect" (the feed was lost) or "resubscribe" (the exchange ended
        the subscription and a new one began).
        """

    async def mark_healed(self, session_id: int, *, healed_at: datetime) -> None:
        """Every market has a fresh snapshot again: the gaps recorded so far are healed."""

    async def flush(self) -> None:
        """Return once everything recorded so far is written."""

    def spill(self, directory: Path) -> tuple[int, Path | None]:
        """Stop writing and save every row not yet committed to a file in ``directory`` for the next start.

        Returns how many rows and the file (None when there were none).
        """
        ...

    def metrics(self) -> dict[str, Any]:
        """queued, written, write_latency_ms, retries, oldest_unwritten_age and more, for status."""
        ...


FeedClientFactory = Callable[[FeedListener, list[str]], FeedClient]
"""Builds a fresh feed client for each (re)start, for the markets of that moment (they change at runtime);
the coordinator passes itself as the listener."""


def counter_dict(counter: Counter[Any]) -> dict[str, int]:
    return {str(key): value for key, value in sorted(counter.items())}
