"""The status reporter: metrics and rates, the ``trader_status`` document, the heartbeat and the book counters line.

Its per-second work does not grow with the number of markets: the document holds counts and aggregates, the
heartbeat writes only the tops of the markets that changed since the last one, and the session's market list
only when it changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apps.kalshi.feed import FeedCounters, FeedStatus
from apps.trader.core.bookpublisher import BookPublisher
from apps.trader.core.consolelog import ConsoleLog
from apps.trader.core.eventbus import Event, EventBus
from apps.trader.core.health import evaluate_health
from apps.trader.core.options import CoordinatorOptions
from apps.trader.core.ports import FeedClient, Recorder, counter_dict
from apps.trader.core.sessionwriter import SessionWriter
from apps.trader.core.statemachine import StateMachine
from apps.trader.core.states import BOOKS_LIVE

logger = logging.getLogger(__name__)


class StatusReporter:
    def __init__(
        self,
        *,
        options: CoordinatorOptions,
        machine: Callable[[], StateMachine],
        client: Callable[[], FeedClient | None],
        bus: EventBus,
        writer: SessionWriter,
        console: ConsoleLog,
        publisher: BookPublisher,
        recorder: Recorder | None = None,
        extra_metrics: Callable[[], dict[str, Any]] = dict,
        extra_status: Callable[[], dict[str, Any]] = dict,
        before_report: Callable[[], None] = lambda: None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.options = options
        self._machine = machine
        self._client = client
        self._bus = bus
        self._writer = writer
        self._console = console
        self._publisher = publisher
        self._recorder = recorder
        self._extra_metrics = extra_metrics
        self._extra_status = extra_status
        self._before_report = before_report
        self._wall_clock = wall_clock
        self.session_id: int | None = None
        self._markets_written: list[str] = list(options.markets)
        """The market list the session row holds (written at the session's start, then when it changes)."""
        self._finished_clients: dict[str, int] = {}
        self._gaps_closed = 0
        """Gaps of the current client that a RESYNC line has closed."""
        self._rate_base: tuple[float, int, int] = (time.monotonic(), 0, 0)
        self._rates = {"messages_per_second": 0.0, "deltas_per_second": 0.0}

    def started(self, session_id: int) -> None:
        self.session_id = session_id
        self._markets_written = list(self.options.markets)

    # ------------------------------------------------------------------------------------------ the loop

    async def run(self) -> None:
        summary = _SummaryPacing(self.options.summary_interval)
        while True:
            await asyncio.sleep(self.options.status_interval)
            try:
                self.report()
            except Exception:
                logger.exception("status update failed")  # a bug: database failures go through the session writer
            feed = self._feed()
            self._announce_resync_done(feed)
            if self._machine().state in BOOKS_LIVE and summary.due(self._markets_connected(feed)):
                self._console("info", self.summary_line())

    def _announce_resync_done(self, feed: FeedStatus | None) -> None:
        """Close reported gaps with a console line once no book is stale.

        Counted, not sampled: a gap that healed between two looks still gets its line."""
        if feed is None or feed.stale_markets:
            return
        gaps = feed.counters.gaps_detected
        if gaps > self._gaps_closed:
            healed = gaps - self._gaps_closed
            self._console("info", f"RESYNC: done, every book is live again after {healed} gap(s)")
            self._gaps_closed = gaps

    def report(self) -> None:
        """Broadcast ``trader_status`` and queue the heartbeat."""
        self._before_report()
        self._update_rates()
        status = self.status()
        self._bus.emit(Event("trader_status", status))
        if self.session_id is None:
            return
        machine = self._machine()
        markets: list[str] | None = None
        if self.options.markets != self._markets_written:
            markets = self._markets_written = list(self.options.markets)
        self._writer.heartbeat(
            state=machine.state.value,
            state_entered_at=machine.entered_at_wall,
            status=status,
            counters=self.session_counters(),
            console=self._console.recent(),
            tops=self._publisher.take_published(self.options.heartbeat_tops),
            markets=markets,
        )

    def summary_line(self) -> str:
        """The ORDERBOOK STATUS console line, from counters only."""
        feed = self._feed()
        m = feed.counters if feed else FeedCounters()
        connected = self._markets_connected(feed)
        uptime = (feed.uptime if feed else None) or 0.0
        return (
            f"ORDERBOOK STATUS: Markets: {connected} | Snapshots: {m.snapshots_received} | "
            f"Deltas: {m.deltas_received} | Uptime: {uptime:.1f}s"
        )

    # ------------------------------------------------------------------------------------------ counters

    def client_finished(self, client: FeedClient) -> None:
        """A client is being replaced: its totals stay in the session's counters."""
        self._gaps_closed = 0
        for name, value in _client_counters(client.feed_status().counters).items():
            self._finished_clients[name] = self._finished_clients.get(name, 0) + value

    def session_counters(self) -> dict[str, int]:
        """The session's feed totals, summed over every client it has run (one per start after an error)."""
        totals = dict(self._finished_clients)
        feed = self._feed()
        if feed is not None:
            for name, value in _client_counters(feed.counters).items():
                totals[name] = totals.get(name, 0) + value
        return totals

    def _feed(self) -> FeedStatus | None:
        """The current feed client's state and counters as of now; None before the first client."""
        client = self._client()
        return client.feed_status() if client is not None else None

    def _update_rates(self) -> None:
        feed = self._feed()
        metrics = feed.counters if feed else None
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

    def _markets_connected(self, feed: FeedStatus | None) -> int:
        if feed is None or feed.uptime is None:
            return 0
        return len(self.options.markets) - feed.stale_markets

    # ------------------------------------------------------------------------------------------ documents

    def metrics(self) -> dict[str, Any]:
        """The metrics of the moment: feed counters, connection, market counts, the event bus and the recorder."""
        feed = self._feed()
        m = feed.counters if feed else None
        last = feed.last_message_at if feed else None
        uptime = feed.uptime if feed else None
        silent = feed.silent_for if feed else None
        bus = self._bus.metrics()
        return {
            "markets_connected": self._markets_connected(feed),
            "markets_total": len(self.options.markets),
            "stale_markets": feed.stale_markets if feed and uptime is not None else 0,
            "snapshots_received": m.snapshots_received if m else 0,
            "deltas_received": m.deltas_received if m else 0,
            "messages_received": m.messages_received if m else 0,
            "bytes_received": m.bytes_received if m else 0,
            "connection_uptime": round(uptime, 1) if uptime is not None else None,
            "ws_connection_status": feed.connection.value if feed else "disconnected",
            "last_message_time": datetime.fromtimestamp(last, UTC).isoformat() if last else None,
            "socket_silent_seconds": round(silent, 1) if silent is not None else None,
            **self._rates,
            "gaps_detected": m.gaps_detected if m else 0,
            "resyncs": m.resyncs if m else 0,
            "reconnects": m.reconnects if m else 0,
            "duplicates_ignored": m.duplicates_ignored if m else 0,
            "malformed_frames": m.malformed_frames if m else 0,
            "stale_deltas_dropped": m.stale_deltas_dropped if m else 0,
            "resubscribes": m.resubscribes if m else 0,
            "errors_by_code": counter_dict(m.errors_by_code) if m else {},
            "unknown_types": counter_dict(m.unknown_types) if m else {},
            "dropped_events": bus["dropped"],
            "state_entries": dict(self._machine().entries),
            "orderbooks_pending": self._publisher.pending,
            **self._extra_metrics(),
            "event_bus": bus,
            **self._recorder_metrics(),
            "database": self._writer.status(),
        }

    def transition_metrics(self) -> dict[str, Any]:
        """The metrics a transition row keeps (without the nested bus and recorder blocks)."""
        metrics = self.metrics()
        metrics.pop("event_bus", None)
        metrics.pop("recorder", None)
        return metrics

    def status(self) -> dict[str, Any]:
        """The ``trader_status`` payload: state, health and metrics; markets only as counts."""
        machine = self._machine()
        metrics = self.metrics()
        health = evaluate_health(
            state=machine.state.value,
            heartbeat_age=0.0,
            metrics=metrics,
            heartbeat_stale_after=self.options.heartbeat_stale_after,
            feed_idle_timeout=self.options.feed_idle_timeout,
            database_error=self._writer.unreachable_reason(),
        )
        return {
            "state": machine.state.value,
            "health": health.as_dict(),
            "timestamp": self._wall_clock().isoformat(),
            "environment": self.options.environment,
            "session_id": self.session_id,
            "state_entered_at": machine.entered_at_wall.isoformat(),
            "time_in_state": round(machine.time_in_state(), 1),
            "metrics": metrics,
            **self._extra_status(),
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


def _client_counters(metrics: FeedCounters) -> dict[str, int]:
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


class _SummaryPacing:
    """When the ORDERBOOK STATUS line is worth a console line: when the number of live markets changed, and
    otherwise once per ``interval`` seconds, so it never fills the log."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last_at = float("-inf")
        self._last_live: int | None = None

    def due(self, live: int) -> bool:
        now = time.monotonic()
        if live == self._last_live and now - self._last_at < self._interval:
            return False
        self._last_at, self._last_live = now, live
        return True
