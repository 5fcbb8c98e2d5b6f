"""What the feed client tells the rest of the program: its events, counters and market changes.

Plain values and a listener protocol, free of the WebSocket library, so the trader's core can name
them without pulling the client's transport in.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from apps.kalshi.backoff import Backoff
from apps.kalshi.messages import OrderbookDelta, OrderbookSnapshot
from apps.kalshi.orderbook import OrderBook

MarketMessage = OrderbookSnapshot | OrderbookDelta


class ConnectionStatus(StrEnum):
    CONNECTED = "connected"
    CONNECTING = "connecting"
    DISCONNECTED = "disconnected"


class FeedEventKind(StrEnum):
    CONNECTED = "connected"
    SUBSCRIBED = "subscribed"
    """Every channel asked for is subscribed (the private feed: its account is read next)."""
    SYNCED = "synced"
    """Every market has a current snapshot."""
    DISCONNECTED = "disconnected"
    """The connection ended or could not be made; ``attempt`` and ``delay`` say when the next try is."""
    FATAL = "fatal"
    """Retrying cannot help (the handshake was refused); the client stops."""
    GAP = "gap"
    NOTICE = "notice"
    REFUSED = "refused"
    """The exchange refused ``markets`` when subscribing; they were dropped and the rest subscribed again."""


@dataclass(frozen=True)
class FeedEvent:
    kind: FeedEventKind
    reason: str = ""
    attempt: int = 0
    delay: float = 0.0
    level: str = "info"
    sid: int | None = None
    """GAP: the subscription whose seq jumped."""
    expected_seq: int | None = None
    received_seq: int | None = None
    markets: tuple[str, ...] = ()
    """GAP: the markets marked stale; SYNCED: the markets now live."""


class FeedListener(Protocol):
    async def on_feed_event(self, event: FeedEvent) -> None: ...

    def on_market_message(self, message: MarketMessage, book: OrderBook) -> Awaitable[None] | None:
        """Every applied snapshot and delta. Returns None, or what the client must await before it reads the
        next frame (the recording's back-pressure): an ``async def`` serves, and a plain one spares the hot
        path a coroutine per message."""
        ...


class HandshakeRejected(Exception):
    """The exchange refused the signed handshake (HTTP 401/403)."""


@dataclass
class FeedCounters:
    """What one feed client has counted since it was built (every connection it made)."""

    messages_received: int = 0
    bytes_received: int = 0
    snapshots_received: int = 0
    deltas_received: int = 0
    malformed_frames: int = 0
    gaps_detected: int = 0
    resyncs: int = 0
    duplicates_ignored: int = 0
    stale_deltas_dropped: int = 0
    reconnects: int = 0
    resubscribes: int = 0
    unknown_types: Counter[str] = field(default_factory=Counter)
    errors_by_code: Counter[int] = field(default_factory=Counter)


@dataclass(frozen=True)
class FeedStatus:
    """The feed client at one moment, for status reports: a copy, so it never changes under its reader."""

    connection: ConnectionStatus
    stale_markets: int
    """Markets whose book waits for a fresh snapshot."""
    counters: FeedCounters
    last_message_at: float | None
    """Wall-clock time (epoch seconds) of the last message; None before the first."""
    uptime: float | None
    """Seconds the current connection has held; None while not connected."""
    silent_for: float | None
    """Seconds since any bytes arrived on the current connection, pings included; None while not connected."""


@dataclass
class MarketChange:
    """What came of a request to add or remove markets, ticker by ticker."""

    done: list[str] = field(default_factory=list)
    """Added (the exchange accepted them) or removed."""
    refused: dict[str, str] = field(default_factory=dict)
    """Ticker -> why not, in the exchange's words where it answered."""
    pending: list[str] = field(default_factory=list)
    """Sent, but the exchange had not answered within the wait; its answer still applies when it comes."""


async def reconnect_until_closed(
    connect_once: Callable[[], Awaitable[str]],
    *,
    closing: asyncio.Event,
    backoff: Backoff,
    on_feed_event: Callable[[FeedEvent], Awaitable[None]],
    on_reconnect: Callable[[], None],
) -> None:
    """Run ``connect_once`` (one connection, to its end; returns why it ended) again and again with back-off
    until ``closing`` is set. Each loss is told as a DISCONNECTED event with the next attempt and its delay;
    an exception from ``connect_once`` (retrying cannot help) ends the loop."""
    while not closing.is_set():
        reason = await connect_once()
        if closing.is_set():
            break
        delay = backoff.next_delay()
        on_reconnect()
        await on_feed_event(
            FeedEvent(FeedEventKind.DISCONNECTED, reason=reason, attempt=backoff.attempt, delay=delay, level="warning")
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(closing.wait(), timeout=delay)
