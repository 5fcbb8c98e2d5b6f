"""The async Kalshi WebSocket v2 orderbook client.

It signs the handshake, subscribes to ``orderbook_delta`` for its markets, keeps one exact OrderBook per
market, checks ``seq`` per subscription and heals gaps with fresh snapshots, and reconnects forever with
back-off. It reports to a listener: feed events (connection status, sync, faults) and every applied
market message (the recording path awaits it, which gives the exchange back-pressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from apps.kalshi.backoff import Backoff
from apps.kalshi.feed import (
    ConnectionStatus,
    FeedCounters,
    FeedEvent,
    FeedEventKind,
    FeedListener,
    FeedStatus,
    HandshakeRejected,
    MarketChange,
    MarketMessage,
    reconnect_until_closed,
)
from apps.kalshi.feedconnection import FeedConnection
from apps.kalshi.messages import (
    CHANNEL_ORDERBOOK,
    ERROR_AUTH_REQUIRED,
    ERROR_UNKNOWN_SID,
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
from apps.kalshi.wsattempt import connection_attempt

logger = logging.getLogger(__name__)


@dataclass
class _Command:
    name: str
    payload: dict[str, Any]
    tickers: list[str] = field(default_factory=list)
    """add_markets / delete_markets: the tickers the command carries."""
    reply: asyncio.Future[Ok | ErrorReply] | None = None


class KalshiWebSocketClient:
    """One authenticated connection carrying one ``orderbook_delta`` subscription for ``markets``.

    After a lost connection it reconnects with ``backoff``; the delays grow only across a streak of
    connections that failed: one that held ``stable_after`` seconds, or kept every book live for
    ``live_after`` seconds, ends the streak.
    """

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
        live_after: float = 5.0,
        resync_timeout: float = 5.0,
        wall_clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.url = url
        self.markets: list[str] = list(dict.fromkeys(markets))
        self.books: dict[str, OrderBook] = {ticker: OrderBook(ticker) for ticker in self.markets}
        self.stale: set[str] = set(self.markets)
        self.metrics = FeedCounters()
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
        self._live_after = live_after
        self._live_since: float | None = None
        """Monotonic time every book of the current connection first went live (None: not yet)."""
        self._resync_timeout = resync_timeout
        self._resync_started: float | None = None
        self._wall_clock_ms = wall_clock_ms
        self._ws: FeedConnection | None = None
        self._closing = asyncio.Event()
        self._next_id = 0
        self._commands: dict[int, _Command] = {}
        self._sid: int | None = None
        self._last_seq: dict[int, int] = {}
        self._synced = False
        self._warned_types: set[str] = set()
        self._silence: str | None = None
        """Set by the watchdog when it drops a silent connection: the reason the reader returns."""
        self._checks_due = False
        """The watchdog found the reader busy: the reader runs the timed checks before its next receive."""
        self._waiting_for_frame = False
        self._watchdog_busy: asyncio.Event | None = None
        """Set while the watchdog acts on the connection; cleared (set) when it is done."""
        # Markets join ``markets`` only once the exchange accepts them, so a ticker it refuses can never
        # be part of a (re)subscribe. Until then each has a future: None when accepted, else the reason.
        self._adding: dict[str, asyncio.Future[str | None]] = {}
        self._unsent: dict[str, None] = {}
        """Tickers of ``_adding`` waiting for a live subscription to be sent on, in order (a dict: adding
        or settling 10,000 markets must not search a list per ticker)."""

    # ----------------------------------------------------------------------------------------- running

    async def run(self) -> None:
        """Connect and read until ``close()``; reconnect with back-off after every failure.

        Raises HandshakeRejected when the exchange refuses the credentials, since retrying cannot help.
        """
        await reconnect_until_closed(
            self._connect_once,
            closing=self._closing,
            backoff=self._backoff,
            on_feed_event=self._listener.on_feed_event,
            on_reconnect=self._count_reconnect,
        )
        self.status = ConnectionStatus.DISCONNECTED
        for ticker in list(self._adding):
            self._settle_add(ticker, "the feed client stopped before the exchange answered")
        self._unsent.clear()

    async def _connect_once(self) -> str:
        self.status = ConnectionStatus.CONNECTING
        reason = await self._connect_and_read()
        self._on_connection_lost()
        return reason

    def _count_reconnect(self) -> None:
        self.metrics.reconnects += 1

    async def close(self) -> None:
        self._closing.set()
        if self._ws is not None:
            await self._ws.close()

    async def _connect_and_read(self) -> str:
        """One connection's life. Returns why it ended."""
        try:
            return await connection_attempt(
                self._open_and_read, on_feed_event=self._listener.on_feed_event, closing=self._closing
            )
        finally:
            self._ws = None

    async def _open_and_read(self) -> str:
        headers = self._credentials.headers("GET", WS_PATH, self._wall_clock_ms())
        async with connect(
            self.url,
            additional_headers=headers,
            create_connection=FeedConnection,
            open_timeout=self._open_timeout,
            # Kalshi pings every 10 s and websockets answers with pongs; silence is detected by _watch.
            ping_interval=None,
            # No permessage-deflate: inflating every small book frame costs the reader more than the bytes
            # it saves, and only uncompressed frames take the connection's lean path.
            compression=None,
            max_size=2**24,
            max_queue=1024,
            close_timeout=2.0,
        ) as ws:
            assert isinstance(ws, FeedConnection)
            ws.last_received = time.monotonic()
            self._ws = ws
            await self._on_connected(ws)
            return await self._read(ws)

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
        # A connection that held, or that had every book live for a while, is not part of a failure streak:
        # the next loss starts from the first delay again rather than creeping towards the cap.
        now = time.monotonic()
        held = self.connected_since is not None and now - self.connected_since >= self._stable_after
        served = self._live_since is not None and now - self._live_since >= self._live_after
        if held or served:
            self._backoff.reset()
        self.connected_since = None
        self._live_since = None
        self.status = ConnectionStatus.CONNECTING if not self._closing.is_set() else ConnectionStatus.DISCONNECTED
        self.stale = set(self.markets)
        self._synced = False
        # The exchange forgets a connection's subscription with it: unanswered adds go again on the next one.
        for command in self._commands.values():
            if command.name == "add_markets":
                self._requeue(command)
            if command.reply is not None and not command.reply.done():
                command.reply.cancel()
        self._commands.clear()

    async def _read(self, ws: FeedConnection) -> str:
        """Read frames until the connection ends; returns why it ended, or raises ConnectionClosed.

        Frames already queued by the connection are taken without an await, and only the wait for the next
        one is awaited otherwise: the timed checks (a silent socket, the resync deadline) run from a watchdog
        task about once a second instead of a timeout wrapped around every receive.
        """
        self._silence = None
        self._checks_due = False
        self._waiting_for_frame = False
        watchdog = asyncio.get_running_loop().create_task(self._watch(ws), name="kalshi:watchdog")
        try:
            return await self._read_frames(ws)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _read_frames(self, ws: FeedConnection) -> str:
        frames = ws.frames
        take = frames.popleft
        metrics = self.metrics
        wall_clock = time.time
        while True:
            if self._checks_due:
                reason = await self._timed_checks(ws)
                if reason is not None:
                    return reason
            # Frames already received are taken without an await; bytes, not str (the parser reads UTF-8,
            # and len() counts bytes).
            if frames:
                frame = take()
            else:
                self._waiting_for_frame = True
                try:
                    frame = await ws.next_frame()
                except ConnectionClosed:
                    if self._silence is not None:
                        return self._silence
                    raise
                self._waiting_for_frame = False
            if self._watchdog_busy is not None:
                # The watchdog is acting on the connection (a resubscribe): frames wait until it is done.
                await self._watchdog_busy.wait()
            self.last_message_at = wall_clock()
            metrics.messages_received += 1
            metrics.bytes_received += len(frame)
            try:
                message = parse_message(frame)
            except MalformedMessage as exc:
                metrics.malformed_frames += 1
                logger.warning("malformed frame ignored: %s", exc)
                continue
            # Nearly every frame is the next delta of the live subscription: it skips _dispatch's checks
            # (a coroutine less per message); anything else (a gap, a duplicate, a reply) goes through them.
            if type(message) is OrderbookDelta and message.sid == self._sid:
                last_seq = self._last_seq
                if last_seq.get(message.sid) == message.seq - 1:
                    last_seq[message.sid] = message.seq
                    pending = self._on_delta(ws, message)
                    if pending is not None:
                        await pending
                    continue
            await self._dispatch(ws, message)

    async def _timed_checks(self, ws: FeedConnection) -> str | None:
        """The socket's silence and the resync deadline; returns why to drop the connection, if it must."""
        self._checks_due = False
        if time.monotonic() - ws.last_received >= self._idle_timeout:
            return f"socket silent for {self._idle_timeout:.0f} s (no data and no pings)"
        await self._check_resync_deadline(ws)
        return None

    async def _watch(self, ws: FeedConnection) -> None:
        """Run the timed checks while the reader waits for a frame; while it is busy with one, leave them
        to the reader, which runs them before its next receive (so they never interleave with a message)."""
        while True:
            remaining = self._idle_timeout - (time.monotonic() - ws.last_received)
            await asyncio.sleep(min(max(remaining, 0.01), 1.0))
            if not self._waiting_for_frame:
                self._checks_due = True
                continue
            busy = self._watchdog_busy = asyncio.Event()
            try:
                reason = await self._timed_checks(ws)
            finally:
                self._watchdog_busy = None
                busy.set()
            if reason is not None:
                # The reader is waiting for a frame: ending the connection wakes it with this reason.
                self._silence = reason
                ws.transport.abort()
                return

    # ----------------------------------------------------------------------------------------- messages

    async def _dispatch(self, ws: ClientConnection, message: Any) -> None:
        if isinstance(message, (OrderbookDelta, OrderbookSnapshot)):
            if message.sid != self._sid:
                # A subscription we replaced or lost: its messages must not touch the books.
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
                pending = self._on_delta(ws, message)
                if pending is not None:
                    await pending
        elif isinstance(message, Subscribed):
            self._commands.pop(message.id or -1, None)
            if message.channel == CHANNEL_ORDERBOOK:
                self._sid = message.sid
                self._last_seq.pop(message.sid, None)
                await self._send_adds(ws)
        elif isinstance(message, Ok):
            command = self._commands.pop(message.id or -1, None)
            await self._sequenced_reply(ws, message.sid, message.seq)
            if command is not None:
                if command.name == "add_markets":
                    await self._on_markets_added(ws, command, message)
                _resolve(command, message)
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
        snapshot.market_ticker = book.market_ticker  # one string per market, not one per message
        book.apply_snapshot(snapshot)
        self.metrics.snapshots_received += 1
        if snapshot.market_ticker in self.stale and snapshot.id is not None:
            self.metrics.resyncs += 1
        self.stale.discard(snapshot.market_ticker)
        pending = self._listener.on_market_message(snapshot, book)
        if pending is not None:
            await pending
        if not self.stale:
            self._resync_started = None
            if not self._synced:
                self._synced = True
                if self._live_since is None:
                    self._live_since = time.monotonic()
                await self._listener.on_feed_event(
                    FeedEvent(
                        FeedEventKind.SYNCED,
                        reason=f"orderbooks live for {len(self.markets)} markets",
                        markets=tuple(self.markets),
                    )
                )

    def _on_delta(self, ws: ClientConnection, delta: OrderbookDelta) -> Awaitable[None] | None:
        """Apply a delta to its book. Not a coroutine of its own (one less per message on the hot path):
        returns what the caller must await next, the listener's handling or a resync, or None."""
        book = self.books.get(delta.market_ticker)
        if book is None:
            return None
        # The book's own string from here on: the recorder's buffer then holds one per market rather than
        # one per row, and every later lookup finds its hash already computed.
        delta.market_ticker = book.market_ticker
        if delta.market_ticker in self.stale:
            self.metrics.stale_deltas_dropped += 1
            return None
        try:
            book.apply_delta(delta)
        except BookInconsistent as exc:
            logger.warning("resyncing: %s", exc)
            return self._resync(ws, [delta.market_ticker])
        self.metrics.deltas_received += 1
        return self._listener.on_market_message(delta, book)

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
        if command is not None:
            _resolve(command, error)
        if command is not None and command.name == "add_markets" and error.terminal:
            self._requeue(command)  # sent again on the subscription that replaces the ended one
        if command is not None and command.name == "add_markets" and not error.terminal:
            await self._on_add_refused(ws, command, error)
        elif command is not None and command.name == "subscribe" and self._refused_markets(error):
            await self._on_subscribe_refused(ws, error)
        elif error.terminal and error.sid in (None, self._sid):
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

    async def add_markets(self, tickers: list[str], *, wait: float = 5.0) -> MarketChange:
        """Add markets to the live subscription (``update_subscription`` add_markets).

        A ticker joins ``markets`` only when the exchange accepts it; one it refuses is reported with the
        exchange's reason and never sent again. Waits up to ``wait`` seconds for the answers: a ticker that
        could not even be sent by then (no live subscription) is withdrawn; one already sent stays pending.
        """
        change = MarketChange()
        waiting: dict[str, asyncio.Future[str | None]] = {}
        for ticker in dict.fromkeys(tickers):
            if ticker in self.books:
                change.refused[ticker] = "already subscribed"
                continue
            future = self._adding.get(ticker)
            if future is None:
                future = self._adding[ticker] = asyncio.get_running_loop().create_future()
                self._unsent[ticker] = None
            waiting[ticker] = future
        if self._ws is not None:
            await self._send_adds(self._ws)
        if waiting:
            await asyncio.wait(waiting.values(), timeout=wait)
        for ticker, future in waiting.items():
            if not future.done() and ticker in self._unsent:
                self._settle_add(ticker, f"not sent: no live subscription to the exchange within {wait:g} s")
            if not future.done():
                change.pending.append(ticker)
            elif future.cancelled():
                change.refused[ticker] = "withdrawn before the exchange answered"
            elif (reason := future.result()) is None:
                change.done.append(ticker)
            else:
                change.refused[ticker] = reason
        return change

    async def remove_markets(self, tickers: list[str], *, wait: float = 5.0) -> MarketChange:
        """Remove markets from the live subscription (``update_subscription`` delete_markets).

        They leave ``markets`` and ``books`` at once; the exchange's refusal, if any, is reported.
        """
        change = MarketChange()
        for ticker in dict.fromkeys(tickers):
            if ticker in self._adding:
                # Not accepted yet: withdraw it. If the exchange accepts it later it is deleted there too.
                self._settle_add(ticker, "removed before the exchange answered")
                change.done.append(ticker)
            elif ticker not in self.books:
                change.refused[ticker] = "not subscribed"
        removed = [t for t in dict.fromkeys(tickers) if t in self.books]
        self._drop_markets(removed)
        change.done.extend(removed)
        if removed and self._ws is not None and self._sid is not None:
            reply = await self._request(
                self._ws,
                "delete_markets",
                update_subscription_command(self._command_id(), self._sid, "delete_markets", removed),
                removed,
                wait,
            )
            if isinstance(reply, ErrorReply):
                for ticker in removed:
                    change.refused[ticker] = f"exchange error {reply.code}: {reply.msg} (no longer watched here)"
                change.done = [t for t in change.done if t not in change.refused]
        return change

    def _drop_markets(self, tickers: list[str]) -> None:
        """Stop watching ``tickers`` (all in ``books``): one pass over the market list, not one per ticker."""
        if not tickers:
            return
        gone = set(tickers)
        self.markets[:] = [t for t in self.markets if t not in gone]
        for ticker in tickers:
            del self.books[ticker]
            self.stale.discard(ticker)

    def _settle_add(self, ticker: str, reason: str | None) -> None:
        """Answer a pending add: None means accepted."""
        future = self._adding.pop(ticker, None)
        self._unsent.pop(ticker, None)
        if future is not None and not future.done():
            future.set_result(reason)

    async def _send_adds(self, ws: ClientConnection) -> None:
        """Send the adds waiting for a live subscription, as one add_markets command."""
        if not self._unsent or self._sid is None:
            return
        tickers, self._unsent = list(self._unsent), {}
        await self._send(
            ws,
            "add_markets",
            update_subscription_command(self._command_id(), self._sid, "add_markets", tickers),
            tickers,
        )

    async def _on_markets_added(self, ws: ClientConnection, command: _Command, ok: Ok) -> None:
        """The exchange accepted add_markets; its ``ok`` lists the full set after the update (when it lists)."""
        listed = None if ok.market_tickers is None else set(ok.market_tickers)
        withdrawn: list[str] = []
        for ticker in command.tickers:
            if ticker not in self._adding:
                withdrawn.append(ticker)
            elif listed is not None and ticker not in listed:
                self._settle_add(ticker, "the exchange's reply does not list it")
            elif ticker not in self.books:
                self.markets.append(ticker)
                self.books[ticker] = OrderBook(ticker)
                self.stale.add(ticker)
                self._synced = False
                # Its snapshot follows; if it does not, the resync deadline heals the book.
                self._resync_started = self._resync_started or time.monotonic()
                self._settle_add(ticker, None)
        if withdrawn and self._sid is not None:
            await self._send(
                ws,
                "delete_markets",
                update_subscription_command(self._command_id(), self._sid, "delete_markets", withdrawn),
                withdrawn,
            )

    async def _on_add_refused(self, ws: ClientConnection, command: _Command, error: ErrorReply) -> None:
        """The exchange refused the whole add_markets command. When it names the tickers at fault, only
        those are refused and the others are sent again; after an unknown sid (a subscription that just
        ended) they all go again on the next one."""
        if error.code == ERROR_UNKNOWN_SID:
            self._requeue(command)  # waits for the next ``subscribed``; sending on the same sid would loop
            return
        sent = set(command.tickers)
        named = [t for t in error.market_tickers if t in sent]
        reason = f"exchange error {error.code}: {error.msg}"
        for ticker in named or command.tickers:
            self._settle_add(ticker, reason)
        if named:
            self._requeue(command)
            await self._send_adds(ws)

    def _requeue(self, command: _Command) -> None:
        """Send a command's tickers still waiting for an answer again, on the next live subscription."""
        self._unsent.update((t, None) for t in command.tickers if t in self._adding)

    def _refused_markets(self, error: ErrorReply) -> list[str]:
        return [t for t in error.market_tickers if t in self.books]

    async def _on_subscribe_refused(self, ws: ClientConnection, error: ErrorReply) -> None:
        """The exchange refused the subscribe because of some of its markets: drop those, report them and
        subscribe again with the rest, so one bad ticker never keeps the others from their data."""
        refused = self._refused_markets(error)
        self._drop_markets(refused)
        await self._listener.on_feed_event(
            FeedEvent(
                FeedEventKind.REFUSED,
                reason=f"exchange error {error.code}: {error.msg}",
                level="error",
                markets=tuple(refused),
            )
        )
        if self.markets and self._sid is None:
            await self._send(ws, "subscribe", subscribe_command(self._command_id(), self.markets))

    # ----------------------------------------------------------------------------------------- commands

    def _command_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def _send(
        self,
        ws: ClientConnection,
        name: str,
        payload: dict[str, Any],
        tickers: list[str] | None = None,
        reply: asyncio.Future[Ok | ErrorReply] | None = None,
    ) -> None:
        self._commands[payload["id"]] = _Command(name=name, payload=payload, tickers=list(tickers or []), reply=reply)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps(payload))

    async def _request(
        self, ws: ClientConnection, name: str, payload: dict[str, Any], tickers: list[str], wait: float
    ) -> Ok | ErrorReply | None:
        """Send a command and wait up to ``wait`` seconds for its reply; None when none came."""
        reply: asyncio.Future[Ok | ErrorReply] = asyncio.get_running_loop().create_future()
        await self._send(ws, name, payload, tickers, reply)
        done, _ = await asyncio.wait({reply}, timeout=wait)
        return reply.result() if reply in done and not reply.cancelled() else None

    # ----------------------------------------------------------------------------------------- status

    def feed_status(self) -> FeedStatus:
        """A copy of the connection's state and counters as of now."""
        return FeedStatus(
            connection=self.status,
            stale_markets=len(self.stale),
            counters=copy.deepcopy(self.metrics),
            last_message_at=self.last_message_at,
            uptime=self.uptime(),
            silent_for=self.silent_for(),
        )

    def silent_for(self) -> float | None:
        """Seconds since any bytes (data or pings) arrived on the current connection."""
        return None if self._ws is None else time.monotonic() - self._ws.last_received

    def uptime(self) -> float | None:
        """Seconds the current connection has been open, or None when not connected."""
        return None if self.connected_since is None else time.monotonic() - self.connected_since


def _resolve(command: _Command, reply: Ok | ErrorReply) -> None:
    if command.reply is not None and not command.reply.done():
        command.reply.set_result(reply)


__all__ = [
    "ConnectionStatus",
    "FeedCounters",
    "FeedEvent",
    "FeedEventKind",
    "FeedListener",
    "HandshakeRejected",
    "KalshiWebSocketClient",
    "MarketChange",
    "MarketMessage",
]
