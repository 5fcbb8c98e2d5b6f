"""The async Kalshi WebSocket v2 orderbook client.

It signs the handshake, subscribes to ``orderbook_delta`` for its markets, keeps one exact OrderBook per
market, checks ``seq`` per subscription and heals gaps with fresh snapshots, and reconnects forever with
back-off. It reports to a listener: feed events (connection status, sync, faults) and every applied
market message (the recording path awaits it, which gives the exchange back-pressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from apps.kalshi.backoff import Backoff
from apps.kalshi.messages import (
    CHANNEL_ORDERBOOK,
    ERROR_AUTH_REQUIRED,
    ErrorReply,
    MalformedMessage,
    Ok,
    OrderbookDelta,
    OrderbookSnapshot,
    OtherMessage,
    Subscribed,
    Unsubscribed,
    parse_message,
    subscribe_command,
    unsubscribe_command,
    update_subscription_command,
)
from apps.kalshi.orderbook import BookInconsistent, OrderBook
from apps.kalshi.signing import WS_PATH, Credentials

logger = logging.getLogger(__name__)

MarketMessage = OrderbookSnapshot | OrderbookDelta


class ConnectionStatus(StrEnum):
    CONNECTED = "connected"
    CONNECTING = "connecting"
    DISCONNECTED = "disconnected"


class FeedEventKind(StrEnum):
    CONNECTED = "connected"
    SYNCED = "synced"
    """Every market has a current snapshot."""
    DISCONNECTED = "disconnected"
    """The connection ended or could not be made; ``attempt`` and ``delay`` say when the next try is."""
    FATAL = "fatal"
    """Retrying cannot help (the handshake was refused); the client stops."""
    GAP = "gap"
    NOTICE = "notice"


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

    async def on_market_message(self, message: MarketMessage, book: OrderBook) -> None: ...


class _WatchedConnection(ClientConnection):
    """A client connection that notes when any bytes last arrived, pings included.

    Kalshi pings every 10 s even when a market is quiet, so "no bytes at all for a while" is the signal
    of a dead socket, while "no data messages" is only a quiet market.
    """

    last_received: float = 0.0

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        super().data_received(data)


class HandshakeRejected(Exception):
    """The exchange refused the signed handshake (HTTP 401/403)."""


@dataclass
class ClientMetrics:
    messages_received: int = 0
    bytes_received: int = 0
    snapshots_received: int = 0
    deltas_received: int = 0
    malformed_frames: int = 0
    gaps_detected: int = 0
    resyncs: int = 0
    duplicates_ignored: int = 0
    stale_deltas_dropped: int = 0
    inconsistent_books: int = 0
    reconnects: int = 0
    connect_attempts: int = 0
    other_sid_ignored: int = 0
    resubscribes: int = 0
    unknown_types: Counter[str] = field(default_factory=Counter)
    errors_by_code: Counter[int] = field(default_factory=Counter)


@dataclass
class _Command:
    name: str
    payload: dict[str, Any]


class KalshiWebSocketClient:
    """One authenticated connection carrying one ``orderbook_delta`` subscription for ``markets``."""

    def __init__(
        self,
        *,
        url: str,
        credentials: Credentials,
        markets: list[str],
        listener: FeedListener,
        backoff: Backoff | None = None,
        idle_timeout: float = 30.0,
        open_timeout: float = 10.0,
        stable_after: float = 30.0,
        resync_timeout: float = 5.0,
        wall_clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.url = url
        self.markets: list[str] = list(dict.fromkeys(markets))
        self.books: dict[str, OrderBook] = {ticker: OrderBook(ticker) for ticker in self.markets}
        self.stale: set[str] = set(self.markets)
        self.metrics = ClientMetrics()
        self.status = ConnectionStatus.DISCONNECTED
        self.connected_since: float | None = None
        """Monotonic time the current connection opened."""
        self.last_message_at: float | None = None
        """Wall-clock time (seconds) of the last frame received."""
        self._credentials = credentials
        self._listener = listener
        self._backoff = backoff or Backoff()
        self._idle_timeout = idle_timeout
        self._open_timeout = open_timeout
        self._stable_after = stable_after
        self._resync_timeout = resync_timeout
        self._resync_started: float | None = None
        self._wall_clock_ms = wall_clock_ms
        self._ws: _WatchedConnection | None = None
        self._closing = asyncio.Event()
        self._next_id = 0
        self._commands: dict[int, _Command] = {}
        self._sid: int | None = None
        self._last_seq: dict[int, int] = {}
        self._synced = False
        self._warned_types: set[str] = set()

    # ----------------------------------------------------------------------------------------- running

    async def run(self) -> None:
        """Connect and read until ``close()``; reconnect with back-off after every failure.

        Raises HandshakeRejected when the exchange refuses the credentials, since retrying cannot help.
        """
        while not self._closing.is_set():
            self.status = ConnectionStatus.CONNECTING
            self.metrics.connect_attempts += 1
            reason = await self._connect_and_read()
            self._on_connection_lost()
            if self._closing.is_set():
                break
            delay = self._backoff.next_delay()
            self.metrics.reconnects += 1
            await self._listener.on_feed_event(
                FeedEvent(
                    FeedEventKind.DISCONNECTED,
                    reason=reason,
                    attempt=self._backoff.attempt,
                    delay=delay,
                    level="warning",
                )
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=delay)
        self.status = ConnectionStatus.DISCONNECTED

    async def close(self) -> None:
        self._closing.set()
        if self._ws is not None:
            await self._ws.close()

    async def _connect_and_read(self) -> str:
        """One connection's life. Returns why it ended."""
        headers = self._credentials.headers("GET", WS_PATH, self._wall_clock_ms())
        try:
            async with connect(
                self.url,
                additional_headers=headers,
                create_connection=_WatchedConnection,
                open_timeout=self._open_timeout,
                # Kalshi pings every 10 s and websockets answers with pongs; silence is detected in _read.
                ping_interval=None,
                max_size=2**24,
                max_queue=1024,
                close_timeout=2.0,
            ) as ws:
                assert isinstance(ws, _WatchedConnection)
                ws.last_received = time.monotonic()
                self._ws = ws
                await self._on_connected(ws)
                return await self._read(ws)
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                reason = f"the exchange refused the handshake with HTTP {status}: check the API key id and private key"
                await self._listener.on_feed_event(FeedEvent(FeedEventKind.FATAL, reason=reason, level="error"))
                self._closing.set()
                raise HandshakeRejected(reason) from None
            return f"handshake failed with HTTP {status}"
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            return f"cannot connect: {type(exc).__name__}: {exc}"
        except ConnectionClosed as exc:
            return _close_reason(exc)
        finally:
            self._ws = None

    async def _on_connected(self, ws: ClientConnection) -> None:
        self.status = ConnectionStatus.CONNECTED
        self.connected_since = time.monotonic()
        self._sid = None
        self._last_seq.clear()
        self._commands.clear()
        self._synced = False
        self._resync_started = None
        self.stale = set(self.markets)
        await self._listener.on_feed_event(FeedEvent(FeedEventKind.CONNECTED, reason=f"connected to {self.url}"))
        if self.markets:
            await self._send(ws, "subscribe", subscribe_command(self._command_id(), self.markets))

    def _on_connection_lost(self) -> None:
        if self.connected_since is not None and time.monotonic() - self.connected_since >= self._stable_after:
            self._backoff.reset()  # a connection that held is not part of a failure streak
        self.connected_since = None
        self.status = ConnectionStatus.CONNECTING if not self._closing.is_set() else ConnectionStatus.DISCONNECTED
        self.stale = set(self.markets)
        self._synced = False

    async def _read(self, ws: _WatchedConnection) -> str:
        while True:
            remaining = self._idle_timeout - (time.monotonic() - ws.last_received)
            if remaining <= 0:
                return f"socket silent for {self._idle_timeout:.0f} s (no data and no pings)"
            await self._check_resync_deadline(ws)
            try:
                frame = await asyncio.wait_for(ws.recv(), timeout=min(remaining, 1.0))
            except TimeoutError:
                continue
            self.last_message_at = time.time()
            self.metrics.messages_received += 1
            self.metrics.bytes_received += len(frame)
            try:
                message = parse_message(frame)
            except MalformedMessage as exc:
                self.metrics.malformed_frames += 1
                logger.warning("malformed frame ignored: %s", exc)
                continue
            await self._dispatch(ws, message)

    # ----------------------------------------------------------------------------------------- messages

    async def _dispatch(self, ws: ClientConnection, message: Any) -> None:
        if isinstance(message, OrderbookDelta | OrderbookSnapshot):
            if message.sid != self._sid:
                # A subscription we replaced or lost: its messages must not touch the books.
                self.metrics.other_sid_ignored += 1
                return
            verdict, expected = self._check_seq(message.sid, message.seq)
            if verdict == "old":
                self.metrics.duplicates_ignored += 1
                return
            if isinstance(message, OrderbookSnapshot):
                if verdict == "gap":
                    await self._on_gap(ws, message.sid, expected, message.seq, keep=message.market_ticker)
                await self._on_snapshot(message)
            else:
                if verdict == "gap":
                    await self._on_gap(ws, message.sid, expected, message.seq)
                await self._on_delta(ws, message)
        elif isinstance(message, Subscribed):
            self._commands.pop(message.id or -1, None)
            if message.channel == CHANNEL_ORDERBOOK:
                self._sid = message.sid
                self._last_seq.pop(message.sid, None)
        elif isinstance(message, Ok):
            self._commands.pop(message.id or -1, None)
            await self._sequenced_reply(ws, message.sid, message.seq)
        elif isinstance(message, Unsubscribed):
            self._commands.pop(message.id or -1, None)
        elif isinstance(message, ErrorReply):
            await self._sequenced_reply(ws, message.sid, message.seq)
            await self._on_error(ws, message)
        elif isinstance(message, OtherMessage):
            self.metrics.unknown_types[message.type] += 1
            if message.type not in self._warned_types:
                self._warned_types.add(message.type)
                logger.info("ignoring messages of type %r", message.type)

    async def _sequenced_reply(self, ws: ClientConnection, sid: int | None, seq: int | None) -> None:
        """Replies may carry the subscription's seq too; they count in its sequence like any message."""
        if sid is None or seq is None or sid != self._sid:
            return
        verdict, expected = self._check_seq(sid, seq)
        if verdict == "gap":
            await self._on_gap(ws, sid, expected, seq)

    def _check_seq(self, sid: int, seq: int) -> tuple[str, int]:
        """(verdict, expected seq): 'ok' for the next seq, 'old' for a duplicate or older one, 'gap' when
        some were skipped."""
        last = self._last_seq.get(sid)
        if last is None:
            self._last_seq[sid] = seq
            return "ok", seq
        if seq <= last:
            return "old", last + 1
        self._last_seq[sid] = seq
        return ("ok" if seq == last + 1 else "gap"), last + 1

    async def _on_snapshot(self, snapshot: OrderbookSnapshot) -> None:
        book = self.books.get(snapshot.market_ticker)
        if book is None:
            return  # a market removed while its snapshot was in flight
        book.apply_snapshot(snapshot)
        self.metrics.snapshots_received += 1
        if snapshot.market_ticker in self.stale and snapshot.id is not None:
            self.metrics.resyncs += 1
        self.stale.discard(snapshot.market_ticker)
        await self._listener.on_market_message(snapshot, book)
        if not self.stale:
            self._resync_started = None
            if not self._synced:
                self._synced = True
                await self._listener.on_feed_event(
                    FeedEvent(
                        FeedEventKind.SYNCED,
                        reason=f"orderbooks live for {len(self.markets)} markets",
                        markets=tuple(self.markets),
                    )
                )

    async def _on_delta(self, ws: ClientConnection, delta: OrderbookDelta) -> None:
        book = self.books.get(delta.market_ticker)
        if book is None:
            return
        if delta.market_ticker in self.stale:
            self.metrics.stale_deltas_dropped += 1
            return
        try:
            book.apply_delta(delta)
        except BookInconsistent as exc:
            self.metrics.inconsistent_books += 1
            logger.warning("resyncing: %s", exc)
            await self._resync(ws, [delta.market_ticker])
            return
        self.metrics.deltas_received += 1
        await self._listener.on_market_message(delta, book)

    async def _on_gap(self, ws: ClientConnection, sid: int, expected: int, seq: int, keep: str | None = None) -> None:
        """A seq gap cannot be pinned to one market, so every market of the sid is resynced."""
        self.metrics.gaps_detected += 1
        await self._listener.on_feed_event(
            FeedEvent(
                FeedEventKind.GAP,
                reason=f"seq gap on sid {sid}: expected {expected}, got {seq}; resyncing {len(self.markets)} markets",
                level="warning",
                sid=sid,
                expected_seq=expected,
                received_seq=seq,
                markets=tuple(self.markets),
            )
        )
        await self._resync(ws, [t for t in self.markets if t != keep])

    async def _resync(self, ws: ClientConnection, tickers: list[str]) -> None:
        """Mark ``tickers`` stale and ask for fresh snapshots of those not already on their way."""
        wanted = [t for t in tickers if t not in self.stale]
        self.stale.update(tickers)
        if not wanted or self._sid is None:
            return
        self._synced = False
        self._resync_started = self._resync_started or time.monotonic()
        await self._send(
            ws, "get_snapshot", update_subscription_command(self._command_id(), self._sid, "get_snapshot", wanted)
        )

    async def _resubscribe(self, ws: ClientConnection, reason: str) -> None:
        """Start the subscription again from scratch; every book is stale until its new snapshot."""
        self.metrics.resubscribes += 1
        await self._listener.on_feed_event(FeedEvent(FeedEventKind.NOTICE, reason=reason, level="warning"))
        if self._sid is not None:
            await self._send(ws, "unsubscribe", unsubscribe_command(self._command_id(), [self._sid]))
            self._last_seq.pop(self._sid, None)
        self._sid = None
        self.stale = set(self.markets)
        self._synced = False
        self._resync_started = time.monotonic()
        await self._send(ws, "subscribe", subscribe_command(self._command_id(), self.markets))

    async def _check_resync_deadline(self, ws: ClientConnection) -> None:
        started = self._resync_started
        if started is not None and self.stale and time.monotonic() - started > self._resync_timeout:
            await self._resubscribe(
                ws, f"snapshots for {len(self.stale)} stale market(s) did not arrive in {self._resync_timeout:g} s"
            )

    async def _on_error(self, ws: ClientConnection, error: ErrorReply) -> None:
        self.metrics.errors_by_code[error.code] += 1
        command = self._commands.pop(error.id or -1, None)
        cause = f" after {command.name} {json.dumps(command.payload.get('params', {}))}" if command else ""
        if error.code == ERROR_AUTH_REQUIRED:
            reason = f"the exchange says: {error.msg} (code 9)"
            await self._listener.on_feed_event(FeedEvent(FeedEventKind.FATAL, reason=reason, level="error"))
            self._closing.set()
            await ws.close()
            raise HandshakeRejected(reason)
        logger.warning("exchange error %s: %s%s", error.code, error.msg, cause)
        if error.terminal and error.sid in (None, self._sid):
            # Codes 10 and 25 end the subscription on the exchange's side: subscribe again from scratch.
            self._sid = None
            await self._resubscribe(ws, f"subscription ended by error {error.code} ({error.msg}); resubscribing")
        elif command is not None and command.name == "get_snapshot":
            await self._resubscribe(ws, f"get_snapshot refused with error {error.code}; resubscribing")
        else:
            await self._listener.on_feed_event(
                FeedEvent(
                    FeedEventKind.NOTICE, reason=f"exchange error {error.code}: {error.msg}{cause}", level="warning"
                )
            )

    # ----------------------------------------------------------------------------------------- markets

    async def resync(self, tickers: list[str]) -> None:
        """Ask for fresh snapshots of ``tickers`` (e.g. after a cross-check found a book wrong)."""
        if self._ws is not None:
            await self._resync(self._ws, [t for t in tickers if t in self.books])

    async def add_markets(self, tickers: list[str]) -> list[str]:
        """Add markets to the live subscription (``update_subscription`` add_markets). Returns those added."""
        added = [t for t in dict.fromkeys(tickers) if t not in self.books]
        for ticker in added:
            self.markets.append(ticker)
            self.books[ticker] = OrderBook(ticker)
            self.stale.add(ticker)
        if added and self._ws is not None:
            self._synced = False
            if self._sid is None:
                await self._send(self._ws, "subscribe", subscribe_command(self._command_id(), self.markets))
            else:
                await self._send(
                    self._ws,
                    "add_markets",
                    update_subscription_command(self._command_id(), self._sid, "add_markets", added),
                )
        return added

    async def remove_markets(self, tickers: list[str]) -> list[str]:
        """Remove markets from the live subscription (``update_subscription`` delete_markets)."""
        removed = [t for t in dict.fromkeys(tickers) if t in self.books]
        for ticker in removed:
            self.markets.remove(ticker)
            del self.books[ticker]
            self.stale.discard(ticker)
        if removed and self._ws is not None and self._sid is not None:
            await self._send(
                self._ws,
                "delete_markets",
                update_subscription_command(self._command_id(), self._sid, "delete_markets", removed),
            )
        return removed

    # ----------------------------------------------------------------------------------------- commands

    def _command_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def _send(self, ws: ClientConnection, name: str, payload: dict[str, Any]) -> None:
        self._commands[payload["id"]] = _Command(name=name, payload=payload)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps(payload))

    # ----------------------------------------------------------------------------------------- status

    def silent_for(self) -> float | None:
        """Seconds since any bytes (data or pings) arrived on the current connection."""
        return None if self._ws is None else time.monotonic() - self._ws.last_received

    def uptime(self) -> float | None:
        """Seconds the current connection has been open, or None when not connected."""
        return None if self.connected_since is None else time.monotonic() - self.connected_since


def _close_reason(exc: ConnectionClosed) -> str:
    if exc.rcvd is not None:
        return f"closed by the exchange (code {exc.rcvd.code}{': ' + exc.rcvd.reason if exc.rcvd.reason else ''})"
    return "dropped without a close frame"


__all__ = [
    "ClientMetrics",
    "ConnectionStatus",
    "FeedEvent",
    "FeedEventKind",
    "FeedListener",
    "HandshakeRejected",
    "KalshiWebSocketClient",
    "MarketMessage",
]
