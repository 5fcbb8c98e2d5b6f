"""The trader loop: drives the state machine and the feed client, and wires the components that watch them.

Each state has a handler that returns the next state and a human-readable context; the loop enforces the
state's timeout, turns any failure into ``error``, and lets a shutdown request win over everything.
What the trader does with what it sees lives in components with one job each, wired here: the recording
tap (rows for the recorder), the book publisher (tops for consoles and rows), the status reporter (status
document, heartbeat), the cross-check loop, market control and the console log.
The coordinator is plain asyncio: it is handed its ports (feed client factory, session store, event bus),
so tests run it against the simulator or stand-ins without Django or a network.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from apps.kalshi.clock import epoch_us, now_us
from apps.kalshi.feed import FeedEvent, FeedEventKind, HandshakeRejected, MarketChange, MarketMessage
from apps.kalshi.messages import OrderbookDelta
from apps.kalshi.orderbook import OrderBook
from apps.kalshi.tasks import cancel_and_wait
from apps.trader.core.bookpublisher import BookPublisher
from apps.trader.core.consolelog import ConsoleLog
from apps.trader.core.crosscheckloop import CrossCheckLoop
from apps.trader.core.eventbus import Event, EventBus
from apps.trader.core.marketcontrol import MarketControl
from apps.trader.core.options import CoordinatorOptions
from apps.trader.core.ports import (
    ExchangeRequestFailed,
    ExchangeRest,
    FeedClient,
    FeedClientFactory,
    Recorder,
    SessionStore,
)
from apps.trader.core.recordingtap import RecordingTap
from apps.trader.core.sessionwriter import SessionWriter
from apps.trader.core.statemachine import StateMachine, Transition
from apps.trader.core.states import BOOKS_LIVE, State
from apps.trader.core.statusreporter import StatusReporter
from apps.trader.core.supervisor import BackgroundTask, Supervisor
from apps.trader.core.trading.engine import TradingEngine, TradingNews, TradingNewsKind, TradingSetup

__all__ = ["EXPECTED_FAILURES", "Coordinator", "CoordinatorOptions"]

logger = logging.getLogger(__name__)


class TradingFailed(Exception):
    """The trading side cannot go on (refused credentials, a trading rule): the message says why."""


# Failures that come from the exchange's side (refused key, closed exchange, REST errors) rather than a bug.
EXPECTED_FAILURES = (HandshakeRejected, ExchangeRequestFailed, TradingFailed)


def _utc_now() -> datetime:
    return datetime.now(UTC)


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
        trading: TradingSetup | None = None,
        wall_clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.options = options
        self._client_factory = client_factory
        self._store = store
        self._bus = bus
        self._recorder = recorder
        self._rest = rest
        self._wall_clock = wall_clock
        # The hot path takes integer microseconds: a datetime per message costs more than parsing it.
        self._clock_us: Callable[[], int] = now_us if wall_clock is _utc_now else lambda: epoch_us(wall_clock())
        self.session_id: int | None = None
        self.client: FeedClient | None = None
        self._client_task: asyncio.Task[None] | None = None
        self._feed_events: asyncio.Queue[FeedEvent | TradingNews] = asyncio.Queue()
        """Connection news of the market feed and of the trading engine, in the order they happened."""
        self._shutdown = asyncio.Event()
        self._shutdown_reason = ""
        self._task_failed = asyncio.Event()
        self._task_failure = ""
        self._last_error = ""
        self._failed = False

        def current_client() -> FeedClient | None:
            return self.client

        self.console = ConsoleLog(bus, history=options.console_history, wall_clock=wall_clock, log=logger)
        self._writer = SessionWriter(store, slow_after=options.database_slow_after, on_change=self._database_changed)
        self.publisher = BookPublisher(
            bus, current_client, interval=options.orderbook_interval, per_tick=options.orderbooks_per_tick
        )
        self.tap = RecordingTap(recorder, lambda: self.options.markets, wall_clock)
        self.market_control = MarketControl(
            options, current_client, lambda: self.machine.state, self.console, self.publisher
        )
        self.crosscheck: CrossCheckLoop | None = None
        if options.crosscheck_interval and rest is not None:
            self.crosscheck = CrossCheckLoop(
                rest,
                current_client,
                lambda: self.machine.state in BOOKS_LIVE,
                self.console,
                interval=options.crosscheck_interval,
            )
        self.reporter = StatusReporter(
            options=options,
            machine=lambda: self.machine,
            client=current_client,
            bus=bus,
            writer=self._writer,
            console=self.console,
            publisher=self.publisher,
            recorder=recorder,
            extra_metrics=self._extra_metrics,
            extra_status=self._trading_status,
            # An add the exchange accepted after its requester stopped waiting shows in the next report.
            before_report=self.market_control.sync,
            wall_clock=wall_clock,
        )
        self.trading: TradingEngine | None = None
        if trading is not None:
            self.trading = TradingEngine(
                options=trading.options,
                client=trading.client,
                feed_factory=trading.feed_factory,
                book=self._live_book,
                markets=lambda: list(self.options.markets),
                console=self.console,
                record=self._writer.trading,
                on_news=self._feed_events.put_nowait,
                clock_us=self._clock_us,
            )
        self.machine = StateMachine(
            on_transition=self._on_transition, metrics=self.reporter.transition_metrics, wall_clock=wall_clock
        )
        self._background = dict(background or {})
        """Tasks the runtime adds (the control listener), supervised like the coordinator's own."""
        self.supervisor = Supervisor(self._background_failed, backoff=options.task_restart_backoff)
        self._handlers: dict[State, Callable[[], Awaitable[tuple[State, str]]]] = {
            State.STARTUP: self._startup,
            State.INITIALIZING: self._initializing,
            State.CONNECTING: self._connecting,
            State.READY: self._ready,
            State.TRADING_CONNECT: self._trading_connect,
            State.DATA_SYNC: self._data_sync,
            State.TRADING_READY: self._trading_ready,
            State.ERROR: self._error,
        }

    # ------------------------------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Run the state loop until shutdown, then close the session (or save what could not be written)."""
        self.session_id = await self._store.session_start(
            environment=self.options.environment,
            markets=self.options.markets,
            exchange_url=self.options.exchange_url,
            control_address=self.options.control_address,
            replay_of=self.options.replay_of,
        )
        for component in (self.console, self.publisher, self.tap):
            component.session_id = self.session_id
        self.reporter.started(self.session_id)
        self._writer.start(self.session_id)
        self.console(
            "info",
            f"Session {self.session_id} started in {self.options.environment}"
            + (f", replaying session {self.options.replay_of}" if self.options.replay_of else ""),
            f"markets: {_listed(self.options.markets)}",
        )
        background: dict[str, BackgroundTask] = {"status": self.reporter.run, "orderbooks": self.publisher.run}
        if self.crosscheck is not None:
            background["crosscheck"] = self.crosscheck.run
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

    async def _close(self, deadline: float) -> None:
        """Stop the feed, write what can be written before ``deadline`` (monotonic) and close the session.

        The session row says what could not be written and where it was saved; when even that row cannot
        be written, the closing is saved with it and the next start writes both.
        """
        assert self.session_id is not None
        # Cancels first, while both connections are still up; then the positions are snapshotted.
        if self.trading is not None and not await _within(
            self.trading.close(self._shutdown_reason or "shutdown"), deadline - time.monotonic() - 10.0
        ):
            self.console("error", "SHUTDOWN: the trading side did not finish in time; see the orders")
        await self._stop_client()
        notes = [self._last_error] if self._last_error else []
        # Budgets end well before the deadline: the process still has to stop threads and exit.
        if self._recorder is not None and not await _within(self._flush_recording(), deadline - time.monotonic() - 8.0):
            notes.append(self._spill_recording())
        # The books' last changes, not yet ticked out, reach consoles and the last heartbeat's rows.
        while self.publisher.publish():
            pass
        self.reporter.report()
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

    async def _flush_recording(self) -> None:
        assert self._recorder is not None
        await self.tap.settle()
        await self._recorder.flush()

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
        # The reason travels as the context of the transition into error, which consoles show at error
        # level: a console line of its own would show it twice.
        self._last_error = reason
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
        return State.INITIALIZING, f"Initializing {len(markets)} market(s): {_listed(markets)}"

    async def _initializing(self) -> tuple[State, str]:
        if self.options.discover:
            await self._discover()
        if not self.options.markets:
            raise ValueError("no markets to subscribe to; pass --markets or set TRADER_MARKETS")
        self._drain_feed_events()
        self.tap.feed_replaced()
        if self.client is not None:
            self.reporter.client_finished(self.client)
        self.client = self._client_factory(self, list(self.options.markets))
        self._client_task = asyncio.create_task(self._run_client(self.client), name="trader:feed")
        return State.CONNECTING, f"Starting orderbook client for {len(self.options.markets)} markets"

    async def _connecting(self) -> tuple[State, str]:
        while True:
            event = await self._feed_events.get()
            if isinstance(event, TradingNews):
                continue  # from a trading connection closed since
            if event.kind is FeedEventKind.SYNCED:
                self.options.error_backoff.reset()
                return State.READY, f"Orderbooks live for {len(self.options.markets)} markets"
            if event.kind is FeedEventKind.DISCONNECTED:
                return State.CONNECTING, _reconnect_context(event)
            if event.kind is FeedEventKind.FATAL:
                raise HandshakeRejected(event.reason)

    async def _ready(self) -> tuple[State, str]:
        if self.trading is not None:
            self.trading.connect()
            return State.TRADING_CONNECT, "Books live; connecting the trading client (fills, orders, positions)"
        while True:
            event = await self._feed_events.get()
            lost = self._market_feed_lost(event)
            if lost is not None:
                return lost

    def _market_feed_lost(self, event: FeedEvent | TradingNews) -> tuple[State, str] | None:
        """Where the market feed's news takes the trader from a state with live books (None: nowhere)."""
        if isinstance(event, FeedEvent):
            if event.kind is FeedEventKind.DISCONNECTED:
                return State.CONNECTING, f"Connection lost ({event.reason}); {_reconnect_context(event)}"
            if event.kind is FeedEventKind.FATAL:
                raise HandshakeRejected(event.reason)
        elif event.kind is TradingNewsKind.FATAL:
            raise TradingFailed(event.reason)
        return None

    async def _trading_event(self, wanted: TradingNewsKind) -> tuple[State, str] | None:
        """Wait for the trading engine's ``wanted`` news (None), or return where other news takes the trader."""
        assert self.trading is not None
        while True:
            event = await self._feed_events.get()
            lost = self._market_feed_lost(event)
            if lost is not None:
                await self.trading.disconnect()
                return lost
            if not isinstance(event, TradingNews):
                continue
            if event.kind is wanted:
                return None
            if event.kind is TradingNewsKind.DISCONNECTED:
                return State.TRADING_CONNECT, f"Trading connection lost ({event.reason}); reconnecting"

    async def _trading_connect(self) -> tuple[State, str]:
        moved = await self._trading_event(TradingNewsKind.SUBSCRIBED)
        return moved or (State.DATA_SYNC, "Private channels subscribed; loading balance, positions and resting orders")

    async def _data_sync(self) -> tuple[State, str]:
        moved = await self._trading_event(TradingNewsKind.SYNCED)
        return moved or (State.TRADING_READY, "Account loaded; trading")

    async def _trading_ready(self) -> tuple[State, str]:
        assert self.trading is not None
        self.trading.resume()
        while True:
            moved = await self._trading_event(TradingNewsKind.FATAL)
            if moved is not None:
                if moved[0] is State.TRADING_CONNECT:
                    self.trading.pause(moved[1])
                return moved

    async def _discover(self) -> None:
        if self._rest is None:
            raise ValueError("market discovery needs the exchange's REST API (KALSHI_API_URL)")
        count = self.options.discover
        self.console("info", f"DISCOVERY: asking the exchange for the {count} open markets with the most 24 h volume")
        markets = await self._rest.discover(count)
        self.options.markets[:] = markets
        self.console("info", f"DISCOVERY: picked {len(markets)} markets", _listed(markets))

    async def _error(self) -> tuple[State, str]:
        if self.trading is not None:
            await self.trading.kill("the trader entered error", sticky=False)
            await self.trading.disconnect()
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
        if event.kind is FeedEventKind.GAP:
            self.publisher.markets_changed(event.markets)  # stale now: consoles and rows show it
        elif event.kind is FeedEventKind.DISCONNECTED:
            self.publisher.markets_changed(self.options.markets)
        await self.tap.on_feed_event(event)
        if event.kind is FeedEventKind.DISCONNECTED:
            self.console(
                event.level,
                f"CONNECTION: {event.reason}",
                f"reconnecting, attempt {event.attempt} in {event.delay:.1f} s",
            )
        elif event.kind is FeedEventKind.REFUSED:
            if not self.market_control.refused(event):
                reason = f"the exchange refused every market ({event.reason})"
                self._feed_events.put_nowait(FeedEvent(FeedEventKind.FATAL, reason=reason, level="error"))
        elif event.kind is not FeedEventKind.SYNCED:
            self.console(event.level, f"{event.kind.value.upper()}: {event.reason}")

    def on_market_message(self, message: MarketMessage, book: OrderBook) -> Awaitable[None] | None:
        """FeedListener: every applied snapshot and delta. On the hot path, so no coroutine of its own: returns
        what the recording needs awaited (its buffer full, or a loss or heal being recorded), or None. Trading
        hears of the change at once: the book is applied, and the recording keeps its order either way."""
        received_us = self._clock_us()
        self.publisher.book_changed(
            message.market_ticker, received_us, message.ts_ms if isinstance(message, OrderbookDelta) else None
        )
        recording = self.tap.take(message, received_us)
        if self.trading is not None:
            self.trading.book_changed(message.market_ticker)
        return recording

    def _live_book(self, ticker: str) -> OrderBook | None:
        """``ticker``'s book while it is live (not waiting for a fresh snapshot), for trading."""
        client = self.client
        if client is None or ticker in client.stale or self.machine.state not in BOOKS_LIVE:
            return None
        return client.books.get(ticker)

    # ------------------------------------------------------------------------------------------ publishing

    async def _on_transition(self, transition: Transition) -> None:
        # Announce first, write after: the console sees every move even while the database is away.
        self._bus.emit(Event("state_transition", {**transition.as_event(), "session_id": self.session_id}))
        if self.session_id is not None:
            self._writer.transition(transition)
        logger.log(
            logging.ERROR if transition.to_state is State.ERROR else logging.INFO,
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

    # ------------------------------------------------------------------------------------------ the public face

    def status(self) -> dict[str, Any]:
        """The ``trader_status`` payload: state, health and metrics (markets as counts)."""
        return self.reporter.status()

    def metrics(self) -> dict[str, Any]:
        return self.reporter.metrics()

    def _extra_metrics(self) -> dict[str, Any]:
        """The cross-check's metrics and the REST side's counts (``rest_requests``, ``rest_retries_429``,
        ``rest_errors``), when there is a REST side."""
        extra = self.crosscheck.metrics() if self.crosscheck is not None else {}
        if self._rest is not None:
            extra |= {f"rest_{name}": value for name, value in self._rest.metrics().items()}
        if self.trading is not None:
            extra |= self.trading.metrics()
        return extra

    def _trading_status(self) -> dict[str, Any]:
        return {"trading": self.trading.status() if self.trading is not None else {"enabled": False}}

    async def kill_switch(self, reason: str) -> int:
        """Cancel this trader's working orders and stop its strategy for the rest of the session."""
        if self.trading is None:
            raise ValueError("this trader does not trade")
        return await self.trading.kill(reason)

    async def cancel_order(self, order_id: str, reason: str) -> dict[str, Any]:
        """Cancel one of this trader's orders by client or exchange order id; the order as it ended."""
        if self.trading is None:
            raise ValueError("this trader does not trade")
        order = await self.trading.cancel(order_id, reason=reason)
        if order is None:
            raise ValueError(f"order {order_id} is not one of this trader's orders")
        return order.as_dict()

    def session_counters(self) -> dict[str, int]:
        return self.reporter.session_counters()

    async def add_markets(self, tickers: list[str]) -> MarketChange:
        return await self.market_control.add_markets(tickers)

    async def remove_markets(self, tickers: list[str]) -> MarketChange:
        return await self.market_control.remove_markets(tickers)


async def _within(work: Awaitable[None], seconds: float) -> bool:
    """Await ``work`` for at most ``seconds``; False (and ``work`` cancelled) when it took longer."""
    try:
        await asyncio.wait_for(work, timeout=max(0.0, seconds))
    except TimeoutError:
        return False
    return True


MARKETS_LISTED = 20
"""Lines and transition rows name this many markets at most: at 10,000 markets a full list is 200 KB."""


def _listed(markets: list[str]) -> str:
    if not markets:
        return "none"
    if len(markets) <= MARKETS_LISTED:
        return ", ".join(markets)
    return f"{', '.join(markets[:MARKETS_LISTED])} and {len(markets) - MARKETS_LISTED:,} more"


def _reconnect_context(event: FeedEvent) -> str:
    return f"reconnecting, attempt {event.attempt} in {event.delay:.1f} s"
