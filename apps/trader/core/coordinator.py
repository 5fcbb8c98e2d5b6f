"""The trader loop: drives the state machine, runs the feed client, and publishes what it sees.

Each state has a handler that returns the next state and a human-readable context; the loop enforces the
state's timeout, turns any failure into ``error``, and lets a shutdown request win over everything.
The coordinator is plain asyncio: it is handed its ports (feed client factory, session store, event bus),
so tests run it against the simulator or stand-ins without Django or a network.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apps.kalshi.backoff import Backoff
from apps.kalshi.client import (
    ClientMetrics,
    FeedEvent,
    FeedEventKind,
    HandshakeRejected,
    MarketChange,
    MarketMessage,
)
from apps.kalshi.crosscheck import BookCrossChecker
from apps.kalshi.discovery import DiscoveryError
from apps.kalshi.messages import OrderbookSnapshot
from apps.kalshi.orderbook import OrderBook
from apps.kalshi.rest import KalshiRestError
from apps.trader.core.eventbus import Event, EventBus
from apps.trader.core.health import evaluate_health
from apps.trader.core.ports import ExchangeRest, FeedClient, FeedClientFactory, Recorder, SessionStore, counter_dict
from apps.trader.core.sessionwriter import SessionWriter
from apps.trader.core.statemachine import StateMachine, Transition
from apps.trader.core.states import STATE_TIMEOUTS, State
from apps.trader.core.supervisor import BackgroundTask, Supervisor
from apps.trader.core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

# Failures that come from the exchange's side (refused key, closed exchange, REST errors) rather than a bug.
EXPECTED_FAILURES = (HandshakeRejected, DiscoveryError, KalshiRestError)


@dataclass
class CoordinatorOptions:
    environment: str
    markets: list[str]
    exchange_url: str
    status_interval: float = 1.0
    orderbook_interval: float = 0.25
    """Book updates are coalesced per market and published at most this often."""
    summary_interval: float = 5.0
    """How often an ORDERBOOK STATUS line goes to the console while ready."""
    timeouts: dict[State, float | None] = field(default_factory=lambda: dict(STATE_TIMEOUTS))
    error_backoff: Backoff = field(default_factory=lambda: Backoff(initial=1.0, cap=60.0))
    heartbeat_stale_after: float = 10.0
    feed_idle_timeout: float = 30.0
    console_history: int = 200
    discover: int = 0
    """Pick this many markets by 24 h volume through REST in ``initializing`` (0: use ``markets``)."""
    crosscheck_interval: float | None = None
    """Seconds between comparisons of every live book with the exchange's REST book; None: off."""
    database_slow_after: float = 2.0
    """A session write still unanswered after this many seconds marks the database unreachable."""
    spill_dir: Path | None = None
    """Where rows that could not be written before the shutdown deadline are saved (None: only logged)."""
    control_wait: float = 5.0
    """How long adding or removing markets waits for the exchange's answer."""
    control_address: str = ""
    """The channel this trader takes control requests on, recorded on its session row."""
    task_restart_backoff: Callable[[], Backoff] = lambda: Backoff(initial=1.0, cap=30.0)
    """Back-off between restarts of a crashed background task."""


class Coordinator:
    def __init__(
        self,
        *,
        options: CoordinatorOptions,
        client_factory: FeedClientFactory,
        store: SessionStore,
        bus: EventBus,
        recorder: Recorder | None = None,
        rest: ExchangeRest | None = None,
        background: dict[str, BackgroundTask] | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.options = options
        self._client_factory = client_factory
        self._store = store
        self._writer = SessionWriter(store, slow_after=options.database_slow_after, on_change=self._database_changed)
        self._bus = bus
        self._recorder = recorder
        self._rest = rest
        self._crosscheck: BookCrossChecker | None = None
        self._crosscheck_resyncs = 0
        self._last_recorded: tuple[int, int] | None = None
        """(sid, seq) of the last recorded message since the feed was last lost, for a disconnect gap."""
        self._awaiting_snapshot: set[str] = set()
        """Markets a recorded gap made stale that have had no snapshot since; the gap heals when it empties."""
        self._finished_clients: dict[str, int] = {}
        self._wall_clock = wall_clock
        self.machine = StateMachine(
            on_transition=self._on_transition, metrics=self._transition_metrics, wall_clock=wall_clock
        )
        self.session_id: int | None = None
        self.client: FeedClient | None = None
        self._client_task: asyncio.Task[None] | None = None
        self._feed_events: asyncio.Queue[FeedEvent] = asyncio.Queue()
        self._shutdown = asyncio.Event()
        self._shutdown_reason = ""
        self._background = dict(background or {})
        """Tasks the runtime adds (the control listener), supervised like the coordinator's own."""
        self.supervisor = Supervisor(self._background_failed, backoff=options.task_restart_backoff)
        self._task_failed = asyncio.Event()
        self._task_failure = ""
        self._dirty_books: set[str] = set()
        self._book_updated: dict[str, datetime] = {}
        self._console: deque[dict[str, Any]] = deque(maxlen=options.console_history)
        self._last_error = ""
        self._failed = False
        self._rate_base: tuple[float, int, int] = (time.monotonic(), 0, 0)
        self._rates = {"messages_per_second": 0.0, "deltas_per_second": 0.0}
        self._handlers: dict[State, Callable[[], Awaitable[tuple[State, str]]]] = {
            State.STARTUP: self._startup,
            State.INITIALIZING: self._initializing,
            State.CONNECTING: self._connecting,
            State.READY: self._ready,
            State.ERROR: self._error,
        }

    # ------------------------------------------------------------------------------------------ the loop

    async def run(self) -> int:
        """Run until shutdown; returns the process exit code (0 for a requested shutdown)."""
        self.session_id = await self._store.session_start(
            environment=self.options.environment,
            markets=self.options.markets,
            exchange_url=self.options.exchange_url,
            control_address=self.options.control_address,
        )
        self._writer.start(self.session_id)
        self.console(
            "info",
            f"Session {self.session_id} started in {self.options.environment}",
            f"markets: {', '.join(self.options.markets) or 'none'}",
        )
        background: dict[str, BackgroundTask] = {"status": self._status_loop, "orderbooks": self._orderbook_loop}
        interval = self.options.crosscheck_interval
        if interval and self._rest is not None:
            background["crosscheck"] = lambda: self._crosscheck_loop(interval)
        for name, run in (background | self._background).items():
            self.supervisor.start(name, run)
        try:
            while self.machine.state is not State.SHUTDOWN:
                next_state, context = await self._step()
                if self._shutdown.is_set():
                    next_state, context = State.SHUTDOWN, self._shutdown_reason
                await self.machine.transition(next_state, context)
        finally:
            await self.supervisor.stop()
            limit = self.options.timeouts.get(State.SHUTDOWN) or 15.0
            try:
                await asyncio.wait_for(self._close(time.monotonic() + limit), timeout=limit + 1.0)
            except TimeoutError:
                logger.error("shutdown took longer than %s s; session %s may not be closed", limit, self.session_id)
            await self._writer.close()
        return 0

    async def _close(self, deadline: float) -> None:
        """Stop the feed, write what can be written before ``deadline`` (monotonic) and close the session.

        The session row says what could not be written and where it was saved; when even that row cannot
        be written, the closing is saved with it and the next start writes both.
        """
        assert self.session_id is not None
        await self._stop_client()
        notes = [self._last_error] if self._last_error else []
        # Budgets end well before the deadline: the process still has to stop threads and exit.
        if self._recorder is not None and not await _within(self._recorder.flush(), deadline - time.monotonic() - 8.0):
            notes.append(self._spill_recording())
        await self._publish_status()
        await _within(self._bus.drain(), deadline - time.monotonic() - 7.0)
        self._writer.end(failed=self._failed, error="; ".join(notes))
        if await _within(self._writer.flush(), deadline - time.monotonic() - 4.0):
            return
        spill_dir = self.options.spill_dir
        path = self._writer.spill(spill_dir) if spill_dir is not None else None
        logger.error(
            "shutdown: the database did not answer; session %s's closing (%d write(s) in all) %s",
            self.session_id,
            self._writer.pending,
            f"saved to {path}, written at the next start" if path else "could not be written",
        )

    def _spill_recording(self) -> str:
        """Save the rows the recorder could not write in time; returns the line for the session row."""
        assert self._recorder is not None
        spill_dir = self.options.spill_dir
        count, path = (
            self._recorder.spill(spill_dir) if spill_dir is not None else (self._recorder.metrics()["queued"], None)
        )
        where = f"saved to {path}, written at the next start" if path else "lost"
        line = f"{count} recorded row(s) could not be written before the shutdown deadline; {where}"
        logger.error("shutdown: %s", line)
        return line

    async def _step(self) -> tuple[State, str]:
        """Run the current state's handler under its timeout, racing a shutdown request."""
        state = self.machine.state
        timeout = self.options.timeouts.get(state)
        remaining = None if timeout is None else max(0.0, timeout - self.machine.time_in_state())
        handler = asyncio.ensure_future(self._handlers[state]())
        stop = asyncio.ensure_future(self._shutdown.wait())
        crashed = asyncio.ensure_future(self._task_failed.wait())
        try:
            done, _ = await asyncio.wait(
                {handler, stop, crashed}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop.cancel()
            crashed.cancel()
        if handler not in done:
            if await cancel_and_wait([handler]):
                logger.error("the %s handler did not stop when cancelled; going on without it", state.value)
            if self._shutdown.is_set():
                return State.SHUTDOWN, self._shutdown_reason
            if self._task_failed.is_set():
                self._task_failed.clear()
                return self._fail(self._task_failure)
            return self._fail(f"{state.value} timed out after {timeout:g} s")
        try:
            return handler.result()
        except EXPECTED_FAILURES as exc:
            return self._fail(str(exc))  # the exchange's answer says it all: no traceback
        except Exception as exc:
            logger.exception("trader failed in %s", state.value)
            return self._fail(f"{type(exc).__name__} in {state.value}: {exc}")

    def _fail(self, reason: str) -> tuple[State, str]:
        self._last_error = reason
        self.console("error", f"ERROR: {reason}")
        return State.ERROR, reason

    def _background_failed(self, name: str, reason: str) -> None:
        """Supervisor hook: a background task crashed. The trader goes to ``error`` with the reason (in
        ``error`` already, the console says so); the supervisor restarts the task."""
        message = f"background task {name} failed: {reason}"
        if self.machine.state in (State.ERROR, State.SHUTDOWN):
            self.console("error", f"ERROR: {message}")
            return
        self._task_failure = message
        self._task_failed.set()

    def request_shutdown(self, reason: str) -> None:
        """Ask the loop to go to ``shutdown``; safe to call from a signal handler, more than once."""
        if not self._shutdown.is_set():
            self._shutdown_reason = reason
            self._shutdown.set()

    # ------------------------------------------------------------------------------------------ states

    async def _startup(self) -> tuple[State, str]:
        await self._stop_client()
        markets = self.options.markets
        if self.options.discover:
            return State.INITIALIZING, f"Initializing: finding the top {self.options.discover} markets by 24 h volume"
        return State.INITIALIZING, f"Initializing {len(markets)} market(s): {', '.join(markets) or 'none'}"

    async def _initializing(self) -> tuple[State, str]:
        if self.options.discover:
            await self._discover()
        if not self.options.markets:
            raise ValueError("no markets to subscribe to; pass --markets or set TRADER_MARKETS")
        self._drain_feed_events()
        await self._record_feed_lost()
        if self.client is not None:
            for name, value in _client_counters(self.client.metrics).items():
                self._finished_clients[name] = self._finished_clients.get(name, 0) + value
        self.client = self._client_factory(self, list(self.options.markets))
        self._client_task = asyncio.create_task(self._run_client(self.client), name="trader:feed")
        return State.CONNECTING, f"Starting orderbook client for {len(self.options.markets)} markets"

    async def _connecting(self) -> tuple[State, str]:
        while True:
            event = await self._feed_events.get()
            if event.kind is FeedEventKind.SYNCED:
                self.options.error_backoff.reset()
                return State.READY, f"Orderbooks live for {len(self.options.markets)} markets"
            if event.kind is FeedEventKind.DISCONNECTED:
                return State.CONNECTING, _reconnect_context(event)
            if event.kind is FeedEventKind.FATAL:
                raise HandshakeRejected(event.reason)

    async def _ready(self) -> tuple[State, str]:
        while True:
            event = await self._feed_events.get()
            if event.kind is FeedEventKind.DISCONNECTED:
                return State.CONNECTING, f"Connection lost ({event.reason}); {_reconnect_context(event)}"
            if event.kind is FeedEventKind.FATAL:
                raise HandshakeRejected(event.reason)

    async def _discover(self) -> None:
        if self._rest is None:
            raise ValueError("market discovery needs the exchange's REST API (KALSHI_API_URL)")
        count = self.options.discover
        self.console("info", f"DISCOVERY: asking the exchange for the {count} open markets with the most 24 h volume")
        markets = await self._rest.discover(count)
        self.options.markets[:] = markets
        self.console("info", f"DISCOVERY: picked {len(markets)} markets", ", ".join(markets))

    async def _crosscheck_loop(self, interval: float) -> None:
        """Compare live books with the exchange's REST books; a mismatch that persists is resynced."""
        assert self._rest is not None
        checked_client: FeedClient | None = None
        while True:
            await asyncio.sleep(interval)
            client = self.client
            if client is None or self.machine.state is not State.READY:
                continue
            if client is not checked_client or self._crosscheck is None:
                checked_client = client

                def is_stale(ticker: str, watched: FeedClient = client) -> bool:
                    return ticker in watched.stale  # read each time: the client replaces its stale set

                self._crosscheck = BookCrossChecker(self._rest.orderbook, client.books, skip=is_stale)
            try:
                results = await self._crosscheck.check_all(list(client.markets))
            except Exception:
                logger.exception("book cross-check failed")
                continue
            wrong = [r for r in results if r.persistent]
            if wrong:
                self._crosscheck_resyncs += len(wrong)
                details = "; ".join(f"{r.ticker}: {', '.join(r.differences[:3])}" for r in wrong)
                self.console(
                    "warning", f"CROSS-CHECK: {len(wrong)} book(s) differ from the exchange; resyncing", details
                )
                await client.resync([r.ticker for r in wrong])

    async def _error(self) -> tuple[State, str]:
        await self._stop_client()
        delay = self.options.error_backoff.next_delay()
        attempt = self.options.error_backoff.attempt
        self.console("warning", f"Recovering in {delay:.1f} s (attempt {attempt})")
        await asyncio.sleep(delay)
        return State.STARTUP, f"Recovering after error (attempt {attempt}, waited {delay:.1f} s)"

    # ------------------------------------------------------------------------------------------ the feed

    async def _run_client(self, client: FeedClient) -> None:
        try:
            await client.run()
        except HandshakeRejected:
            pass  # already reported as a FATAL feed event
        except Exception as exc:
            logger.exception("feed client crashed")
            self._feed_events.put_nowait(FeedEvent(FeedEventKind.FATAL, reason=f"feed client crashed: {exc}"))

    async def _stop_client(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self._client_task is not None:
            try:
                await asyncio.wait_for(self._client_task, timeout=5.0)
            except TimeoutError:
                self._client_task.cancel()
            self._client_task = None

    def _drain_feed_events(self) -> None:
        while not self._feed_events.empty():
            self._feed_events.get_nowait()

    async def on_feed_event(self, event: FeedEvent) -> None:
        """FeedListener: connection status and faults from the client."""
        if event.kind in (FeedEventKind.SYNCED, FeedEventKind.DISCONNECTED, FeedEventKind.FATAL):
            self._feed_events.put_nowait(event)
        if self._recorder is not None and self.session_id is not None:
            await self._record_feed_event(self._recorder, self.session_id, event)
        if event.kind is FeedEventKind.DISCONNECTED:
            self.console(
                event.level,
                f"CONNECTION: {event.reason}",
                f"reconnecting, attempt {event.attempt} in {event.delay:.1f} s",
            )
        elif event.kind is FeedEventKind.REFUSED:
            self._on_markets_refused(event)
        elif event.kind is not FeedEventKind.SYNCED:
            self.console(event.level, f"{event.kind.value.upper()}: {event.reason}")

    def _on_markets_refused(self, event: FeedEvent) -> None:
        """The exchange refused markets of the subscription: they are dropped, the rest carry on."""
        refused = [t for t in event.markets if t in self.options.markets]
        for ticker in refused:
            self.options.markets.remove(ticker)
        left = len(self.options.markets)
        self.console(
            "error",
            f"MARKETS: the exchange refused {', '.join(event.markets)}: {event.reason}",
            f"dropped; continuing with {left} market(s)",
        )
        if not left:
            reason = f"the exchange refused every market ({event.reason})"
            self._feed_events.put_nowait(FeedEvent(FeedEventKind.FATAL, reason=reason, level="error"))

    async def on_market_message(self, message: MarketMessage, book: OrderBook) -> None:
        """FeedListener: every applied snapshot and delta. Kept cheap: it is on the hot path.

        Awaiting the recorder is the back-pressure path: it returns at once unless the recorder is full.
        """
        received_at = self._wall_clock()
        self._dirty_books.add(message.market_ticker)
        self._book_updated[message.market_ticker] = received_at
        if self._recorder is not None and self.session_id is not None:
            last = self._last_recorded
            if last is not None and last[0] != message.sid and not self._awaiting_snapshot:
                # A new subscription (after error 10 or 25) with no gap recorded: whatever the old one
                # did not deliver is lost, and the recording says so.
                await self._record_feed_lost("resubscribe")
            self._last_recorded = (message.sid, message.seq)
            await self._recorder.record(self.session_id, message, time.time_ns() // 1_000)
            if self._awaiting_snapshot and isinstance(message, OrderbookSnapshot):
                self._awaiting_snapshot.discard(message.market_ticker)
                if not self._awaiting_snapshot:
                    await self._recorder.mark_healed(self.session_id, healed_at=received_at)

    async def _record_feed_event(self, recorder: Recorder, session_id: int, event: FeedEvent) -> None:
        """Gaps, lost connections and heals go into the recording, in order with the messages."""
        if event.kind is FeedEventKind.GAP:
            self._awaiting_snapshot.update(event.markets)
            await recorder.record_gap(
                session_id,
                kind="seq",
                sid=event.sid,
                expected_seq=event.expected_seq,
                received_seq=event.received_seq,
                markets=event.markets,
                detected_at=self._wall_clock(),
            )
        elif event.kind in (FeedEventKind.DISCONNECTED, FeedEventKind.FATAL):
            await self._record_feed_lost()
        elif event.kind is FeedEventKind.SYNCED and self._awaiting_snapshot:
            # Every market is live (a market removed meanwhile will send no snapshot): heal what is open.
            self._awaiting_snapshot.clear()
            await recorder.mark_healed(session_id, healed_at=self._wall_clock())

    async def _record_feed_lost(self, kind: str = "disconnect") -> None:
        """The feed stopped after live data: a lost connection, a client replaced after an error, or
        ("resubscribe") a subscription the exchange ended.

        Only the first loss after live data is recorded: attempts that never got data lost nothing new.
        """
        if self._recorder is None or self.session_id is None or self._last_recorded is None:
            return
        sid, seq = self._last_recorded
        self._last_recorded = None
        self._awaiting_snapshot.update(self.options.markets)
        await self._recorder.record_gap(
            self.session_id,
            kind=kind,
            sid=sid,
            expected_seq=seq + 1,
            received_seq=None,
            markets=self.options.markets,
            detected_at=self._wall_clock(),
        )

    # ------------------------------------------------------------------------------------------ publishing

    async def _on_transition(self, transition: Transition) -> None:
        # Announce first, write after: the console sees every move even while the database is away.
        self._bus.emit(Event("state_transition", {**transition.as_event(), "session_id": self.session_id}))
        if self.session_id is not None:
            self._writer.transition(transition)
        logger.info(
            "STATE TRANSITION: %s → %s | %s",
            transition.from_state.value,
            transition.to_state.value,
            transition.context,
        )
        if transition.to_state is State.ERROR:
            self._failed = True
        elif transition.to_state is State.READY:
            self._failed = False

    def _database_changed(self, reachable: bool, what: str) -> None:
        if reachable:
            self.console("info", f"DATABASE: {what}")
        else:
            self.console(
                "error",
                f"DATABASE: {what}",
                "the feed and the books stay live; transitions, heartbeats and recorded rows wait in memory",
            )

    def console(self, level: str, message: str, context: str = "") -> None:
        line = {
            "level": level,
            "message": message,
            "context": context,
            "timestamp": self._now_iso(),
            "session_id": self.session_id,
        }
        self._console.append(line)
        self._bus.emit(Event("console", line))
        log_level = {"warning": logging.WARNING, "error": logging.ERROR}.get(level, logging.INFO)
        logger.log(log_level, "%s%s", message, f" | {context}" if context else "")

    async def _status_loop(self) -> None:
        last_summary = time.monotonic()
        while True:
            await asyncio.sleep(self.options.status_interval)
            try:
                await self._publish_status()
            except Exception:
                logger.exception("status update failed")  # a bug: database failures go through the session writer
            if self.machine.state is State.READY and time.monotonic() - last_summary >= self.options.summary_interval:
                last_summary = time.monotonic()
                self.console("info", self.orderbook_summary_line())

    async def _publish_status(self) -> None:
        self._sync_markets()  # an add the exchange accepted after its requester stopped waiting
        self._update_rates()
        status = self.status()
        self._bus.emit(Event("trader_status", status))
        if self.session_id is not None:
            self._writer.heartbeat(
                state=self.machine.state.value,
                state_entered_at=self.machine.entered_at_wall,
                status=status,
                counters=self.session_counters(),
                console=list(self._console),
            )

    def session_counters(self) -> dict[str, int]:
        """The session's feed totals, summed over every client it has run (one per start after an error)."""
        totals = dict(self._finished_clients)
        metrics = self.client.metrics if self.client else None
        if metrics is not None:
            for name, value in _client_counters(metrics).items():
                totals[name] = totals.get(name, 0) + value
        return totals

    async def _orderbook_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.orderbook_interval)
            self.publish_dirty_books()

    def publish_dirty_books(self) -> None:
        """Publish one ``orderbook`` event per market that changed since the last call."""
        if self.client is None or not self._dirty_books:
            return
        dirty, self._dirty_books = self._dirty_books, set()
        for ticker in sorted(dirty):
            book = self.client.books.get(ticker)
            if book is not None:
                self._bus.emit(Event("orderbook", self._book_event(book)))

    def _book_event(self, book: OrderBook, depth: int = 5) -> dict[str, Any]:
        data = book.summary(depth)
        data["stale"] = self.client is not None and book.market_ticker in self.client.stale
        updated = self._book_updated.get(book.market_ticker)
        data["updated_at"] = updated.isoformat() if updated else None
        return data

    # ------------------------------------------------------------------------------------------ status

    def _update_rates(self) -> None:
        metrics = self.client.metrics if self.client else None
        now = time.monotonic()
        messages = metrics.messages_received if metrics else 0
        deltas = metrics.deltas_received if metrics else 0
        since, base_messages, base_deltas = self._rate_base
        elapsed = now - since
        if elapsed > 0 and messages >= base_messages and deltas >= base_deltas:
            self._rates = {
                "messages_per_second": round((messages - base_messages) / elapsed, 1),
                "deltas_per_second": round((deltas - base_deltas) / elapsed, 1),
            }
        self._rate_base = (now, messages, deltas)

    def metrics(self) -> dict[str, Any]:
        """The metrics of the moment: feed counters, connection, books and the event bus."""
        client = self.client
        m = client.metrics if client else None
        last = client.last_message_at if client else None
        uptime = client.uptime() if client else None
        silent = client.silent_for() if client else None
        stale = len(client.stale) if client else len(self.options.markets)
        bus = self._bus.metrics()
        return {
            "markets_connected": len(self.options.markets) - stale if client and uptime is not None else 0,
            "markets_total": len(self.options.markets),
            "stale_markets": stale if client and uptime is not None else 0,
            "snapshots_received": m.snapshots_received if m else 0,
            "deltas_received": m.deltas_received if m else 0,
            "messages_received": m.messages_received if m else 0,
            "bytes_received": m.bytes_received if m else 0,
            "connection_uptime": round(uptime, 1) if uptime is not None else None,
            "ws_connection_status": client.status.value if client else "disconnected",
            "last_message_time": datetime.fromtimestamp(last, UTC).isoformat() if last else None,
            "socket_silent_seconds": round(silent, 1) if silent is not None else None,
            **self._rates,
            "gaps_detected": m.gaps_detected if m else 0,
            "resyncs": m.resyncs if m else 0,
            "reconnects": m.reconnects if m else 0,
            "duplicates_ignored": m.duplicates_ignored if m else 0,
            "malformed_frames": m.malformed_frames if m else 0,
            "stale_deltas_dropped": m.stale_deltas_dropped if m else 0,
            "errors_by_code": counter_dict(m.errors_by_code) if m else {},
            "dropped_events": bus["dropped"],
            **self._crosscheck_metrics(),
            "event_bus": bus,
            **self._recorder_metrics(),
            "database": self._writer.status(),
        }

    def _recorder_metrics(self) -> dict[str, Any]:
        if self._recorder is None:
            return {}
        recorder = self._recorder.metrics()
        return {
            "recorder": recorder,
            "recorder_queued": recorder.get("queued", 0),
            "recorder_written": recorder.get("written", 0),
            "recorder_write_latency_ms": recorder.get("write_latency_ms", 0.0),
            "recorder_retries": recorder.get("retries", 0),
            "recorder_oldest_unwritten_age": recorder.get("oldest_unwritten_age"),
        }

    def _crosscheck_metrics(self) -> dict[str, Any]:
        if self._crosscheck is None:
            return {}
        return {f"crosscheck_{name}": value for name, value in self._crosscheck.counters().items()} | {
            "crosscheck_resyncs": self._crosscheck_resyncs
        }

    def _transition_metrics(self) -> dict[str, Any]:
        metrics = self.metrics()
        metrics.pop("event_bus", None)
        metrics.pop("recorder", None)
        return metrics

    def status(self) -> dict[str, Any]:
        """The ``trader_status`` payload: state, health, metrics and every market's top of book."""
        metrics = self.metrics()
        health = evaluate_health(
            state=self.machine.state.value,
            heartbeat_age=0.0,
            metrics=metrics,
            heartbeat_stale_after=self.options.heartbeat_stale_after,
            feed_idle_timeout=self.options.feed_idle_timeout,
            database_error=self._writer.unreachable_reason(),
        )
        markets = []
        if self.client is not None:
            for ticker in self.client.markets:
                book = self.client.books.get(ticker)
                if book is not None:
                    event = self._book_event(book, depth=0)
                    event.pop("yes_levels")
                    event.pop("no_levels")
                    markets.append(event)
        return {
            "state": self.machine.state.value,
            "health": health.as_dict(),
            "timestamp": self._now_iso(),
            "environment": self.options.environment,
            "session_id": self.session_id,
            "market_tickers": list(self.options.markets),
            "state_entered_at": self.machine.entered_at_wall.isoformat(),
            "time_in_state": round(self.machine.time_in_state(), 1),
            "markets": markets,
            "metrics": metrics,
        }

    async def add_markets(self, tickers: list[str]) -> MarketChange:
        """Subscribe to more markets on the live connection, as far as the exchange accepts them.

        Tickers must already be normalised (apps.kalshi.tickers). Each is added only once the exchange
        accepts it; a refusal comes back with the exchange's reason and leaves the subscription as it was.
        """
        client, state = self.client, self.machine.state
        if client is None or state not in (State.CONNECTING, State.READY):
            reason = f"the trader has no exchange connection (state {state.value}); try again when it is ready"
            return MarketChange(refused=dict.fromkeys(dict.fromkeys(tickers), reason))
        change = await client.add_markets(tickers, wait=self.options.control_wait)
        self._sync_markets()
        if change.done:
            self.console("info", f"MARKETS: added {', '.join(change.done)}", f"now {len(self.options.markets)} markets")
        self._console_change("add", change)
        return change

    async def remove_markets(self, tickers: list[str]) -> MarketChange:
        """Drop markets from the live subscription and from status."""
        if self.client is not None:
            change = await self.client.remove_markets(tickers, wait=self.options.control_wait)
        else:
            change = MarketChange()
            for ticker in dict.fromkeys(tickers):
                if ticker in self.options.markets:
                    change.done.append(ticker)
                else:
                    change.refused[ticker] = "not subscribed"
        for ticker in change.done:
            if ticker in self.options.markets:
                self.options.markets.remove(ticker)
            self._book_updated.pop(ticker, None)
            self._dirty_books.discard(ticker)
        self._sync_markets()
        if change.done:
            self.console(
                "info", f"MARKETS: removed {', '.join(change.done)}", f"now {len(self.options.markets)} markets"
            )
        self._console_change("remove", change)
        return change

    def _console_change(self, verb: str, change: MarketChange) -> None:
        for ticker, reason in change.refused.items():
            self.console("warning", f"MARKETS: could not {verb} {ticker}: {reason}")
        if change.pending:
            self.console(
                "warning",
                f"MARKETS: the exchange has not answered yet for {', '.join(change.pending)}",
                f"its answer still applies when it comes ({verb})",
            )

    def _sync_markets(self) -> None:
        """The live client's markets are the truth (the exchange accepted them); a new client starts from them."""
        if self.client is not None and self.client.markets != self.options.markets:
            self.options.markets[:] = self.client.markets

    def orderbook_summary_line(self) -> str:
        m = self.metrics()
        uptime = m["connection_uptime"] or 0.0
        return (
            f"ORDERBOOK STATUS: Markets: {m['markets_connected']} | Snapshots: {m['snapshots_received']} | "
            f"Deltas: {m['deltas_received']} | Uptime: {uptime:.1f}s"
        )

    def _now_iso(self) -> str:
        return self._wall_clock().isoformat()


async def _within(work: Awaitable[None], seconds: float) -> bool:
    """Await ``work`` for at most ``seconds``; False (and ``work`` cancelled) when it took longer."""
    try:
        await asyncio.wait_for(work, timeout=max(0.0, seconds))
    except TimeoutError:
        return False
    return True


def _client_counters(metrics: ClientMetrics) -> dict[str, int]:
    """The session counters (TradingSession fields) one feed client contributes."""
    return {
        "messages_received": metrics.messages_received,
        "snapshots_received": metrics.snapshots_received,
        "deltas_received": metrics.deltas_received,
        "reconnects": metrics.reconnects,
        "gaps": metrics.gaps_detected,
        "resyncs": metrics.resyncs,
        "bytes_received": metrics.bytes_received,
    }


def _reconnect_context(event: FeedEvent) -> str:
    return f"reconnecting, attempt {event.attempt} in {event.delay:.1f} s"
