"""Prometheus metrics: the trader's status documents as metric families, read at scrape time.

There is no second set of counters to keep in step and no work on the hot path: a scrape reads the same
per-shard document ``/v3/status`` shows under ``shards`` (session, state, health, heartbeat age, metrics),
either live from the trader's memory (``runtrader --metrics-port``) or from the rows every trader writes
(``/metrics`` on the web app). Every shard's series is labelled with its shard (the session id) and
environment; the console figures of a process have no shard.
Labels and values hold counts, states and error codes only, never a key, a URL or a secret.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from apps.trader.core.states import State

ShardStatus = dict[str, Any]
"""One shard as ``/v3/status`` lists it: ``session`` (``id``, ``environment``, ``counters``), ``state``,
``health``, ``time_in_state``, ``heartbeat_age`` and ``metrics``."""

SHARD_LABELS = ["shard", "environment"]

FEED_COUNTERS = (
    # (metric, session counter, help): session totals, summed over every feed client the session ran.
    ("trader_feed_messages_total", "messages_received", "Messages of every type from the exchange."),
    ("trader_feed_snapshots_total", "snapshots_received", "Orderbook snapshots applied."),
    ("trader_feed_deltas_total", "deltas_received", "Orderbook deltas applied."),
    ("trader_feed_received_bytes_total", "bytes_received", "Bytes of the messages received from the exchange."),
    ("trader_feed_gaps_total", "gaps", "Sequence gaps detected on a subscription."),
    ("trader_feed_resyncs_total", "resyncs", "Markets healed with a fresh snapshot after a gap."),
    ("trader_feed_reconnects_total", "reconnects", "Connections to the exchange made again after one was lost."),
)


TRADING_COUNTERS = (
    # (metric, metrics key, help): counts of this session's trading, from the trading engine.
    ("trader_trading_orders_placed_total", "trading_orders_placed", "Orders sent to the exchange."),
    ("trader_trading_orders_amended_total", "trading_orders_amended", "Order amendments sent to the exchange."),
    ("trader_trading_orders_filled_total", "trading_orders_filled", "Orders filled in full."),
    ("trader_trading_orders_cancelled_total", "trading_orders_cancelled", "Orders cancelled."),
    ("trader_trading_orders_rejected_total", "trading_orders_rejected", "Orders the exchange rejected."),
    ("trader_trading_account_syncs_total", "trading_account_syncs", "Balance, positions and orders read from REST."),
    ("trader_trading_kill_switch_total", "trading_kill_switch", "Kill switches pulled (console, signal)."),
    ("trader_trading_strategy_failures_total", "trading_strategy_failures", "Strategies stopped by an exception."),
)
REFUSED_PREFIX = "trading_refused_"
"""Metrics keys ``trading_refused_<rule>``: orders a risk rule refused before they left the process."""
TRADING_MONEY = ("balance", "exposure", "realized_pnl", "unrealized_pnl", "fees", "total_pnl", "session_pnl")
"""Figures of the status's trading block shown as gauges, in dollars."""


class Coordinated(Protocol):
    """What the live source needs of the coordinator."""

    def status(self) -> dict[str, Any]: ...

    def session_counters(self) -> dict[str, int]: ...


def live_shards(coordinator: Coordinated) -> list[ShardStatus]:
    """The running trader as one shard, shaped like ``/v3/status``'s ``shards`` entries; none before its session
    exists. Call on the trader's event loop: the objects it reads change only there."""
    status = coordinator.status()
    if status.get("session_id") is None:
        return []
    return [
        {
            "session": {
                "id": status["session_id"],
                "environment": status["environment"],
                "counters": coordinator.session_counters(),
            },
            "state": status["state"],
            "health": status["health"],
            "time_in_state": status["time_in_state"],
            "heartbeat_age": None,  # this is the trader itself: no heartbeat to wait for
            "metrics": status["metrics"],
            "trading": status.get("trading", {"enabled": False}),
        }
    ]


@dataclass(frozen=True)
class ConsoleCounts:
    """The console sockets of one process (its web app): open now, and live events they missed."""

    connected: int
    missed_events: int


class TraderCollector:
    """A prometheus_client collector over shard documents read at each scrape."""

    def __init__(
        self,
        shards: Callable[[], list[ShardStatus]],
        *,
        consoles: Callable[[], ConsoleCounts] | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._shards = shards
        self._consoles = consoles
        self._wall_clock = wall_clock

    def collect(self) -> Iterator[Metric]:
        yield from shard_families(self._shards(), now=self._wall_clock())
        if self._consoles is not None:
            counts = self._consoles()
            yield GaugeMetricFamily(
                "trader_consoles_connected", "Console WebSockets open on this process's web app.", counts.connected
            )
            yield CounterMetricFamily(
                "trader_console_missed_events_total",
                "Live events the channel layer dropped on the way to this process's consoles (seen as jumps in "
                "each trader's event numbers).",
                counts.missed_events,
            )


def shard_families(shards: list[ShardStatus], *, now: datetime) -> list[Metric]:
    """Every trader metric family for ``shards`` (one series per shard in each)."""
    feed = [CounterMetricFamily(name, text, labels=SHARD_LABELS) for name, _, text in FEED_COUNTERS]
    errors = CounterMetricFamily(
        "trader_feed_errors_total",
        "Error messages from the exchange, by Kalshi error code.",
        labels=[*SHARD_LABELS, "code"],
    )
    connected = GaugeMetricFamily(
        "trader_feed_connected", "1 while the exchange socket is connected.", labels=SHARD_LABELS
    )
    last_message = GaugeMetricFamily(
        "trader_feed_last_message_age_seconds", "Seconds since the last message from the exchange.", labels=SHARD_LABELS
    )
    markets = GaugeMetricFamily("trader_markets", "Markets the shard watches.", labels=SHARD_LABELS)
    live = GaugeMetricFamily("trader_markets_live", "Markets with a live book.", labels=SHARD_LABELS)
    stale = GaugeMetricFamily(
        "trader_markets_stale", "Books stale after a gap, waiting for a snapshot.", labels=SHARD_LABELS
    )
    queued = GaugeMetricFamily(
        "trader_recorder_queued_rows", "Recorded rows not yet committed to the database.", labels=SHARD_LABELS
    )
    written = CounterMetricFamily("trader_recorder_written_rows_total", "Recorded rows committed.", labels=SHARD_LABELS)
    write_seconds = HistogramMetricFamily(
        "trader_recorder_write_duration_seconds", "Time to commit one batch of recorded rows.", labels=SHARD_LABELS
    )
    retries = CounterMetricFamily(
        "trader_recorder_retries_total", "Batch writes that failed and were retried.", labels=SHARD_LABELS
    )
    oldest = GaugeMetricFamily(
        "trader_recorder_oldest_unwritten_age_seconds",
        "Age of the oldest recorded row not yet committed (0 when all are written).",
        labels=SHARD_LABELS,
    )
    emitted = CounterMetricFamily(
        "trader_event_bus_events_total", "Events published to observers.", labels=SHARD_LABELS
    )
    dropped = CounterMetricFamily(
        "trader_event_bus_dropped_events_total",
        "Events an observer lost (its queue full, or switched off after failures); subscriber channel_layer is "
        "what the channel layer, and so the consoles, never got.",
        labels=[*SHARD_LABELS, "subscriber"],
    )
    layer_failures = CounterMetricFamily(
        "trader_channel_layer_failed_sends_total",
        "Sends to the channel layer that raised or timed out (the event is lost).",
        labels=SHARD_LABELS,
    )
    state = GaugeMetricFamily(
        "trader_state", "1 for the shard's current state, 0 for the others.", labels=[*SHARD_LABELS, "state"]
    )
    in_state = GaugeMetricFamily("trader_state_seconds", "Seconds in the current state.", labels=SHARD_LABELS)
    transitions = CounterMetricFamily(
        "trader_state_transitions_total", "State transitions, by the state entered.", labels=[*SHARD_LABELS, "to_state"]
    )
    health = GaugeMetricFamily(
        "trader_health",
        "1 for the shard's health (healthy, degraded, unhealthy), 0 for the others.",
        labels=[*SHARD_LABELS, "status"],
    )
    heartbeat = GaugeMetricFamily(
        "trader_heartbeat_age_seconds", "Age of the shard's last heartbeat row (web app only).", labels=SHARD_LABELS
    )
    trading = [CounterMetricFamily(name, text, labels=SHARD_LABELS) for name, _, text in TRADING_COUNTERS]
    fills = CounterMetricFamily(
        "trader_trading_fills_total",
        "Fills of this trader's orders, by liquidity (maker: a resting order was hit; taker: it crossed).",
        labels=[*SHARD_LABELS, "liquidity"],
    )
    refused = CounterMetricFamily(
        "trader_trading_refused_orders_total",
        "Orders (and amendments) a risk rule refused before they left the process, by rule.",
        labels=[*SHARD_LABELS, "rule"],
    )
    trading_ready = GaugeMetricFamily(
        "trader_trading_ready", "1 while orders may leave (trading_ready, kill switch not pulled).", labels=SHARD_LABELS
    )
    killed = GaugeMetricFamily(
        "trader_trading_killed", "1 once the kill switch stopped trading for the session.", labels=SHARD_LABELS
    )
    open_orders = GaugeMetricFamily(
        "trader_trading_open_orders", "This trader's working orders on the exchange.", labels=SHARD_LABELS
    )
    money = GaugeMetricFamily(
        "trader_trading_dollars",
        "The trading figures of the status (balance, exposure, P&L, fees), in dollars; absent when unknown.",
        labels=[*SHARD_LABELS, "figure"],
    )
    for shard in shards:
        session = shard.get("session") or {}
        if session.get("id") is None:
            continue
        labels = [str(session["id"]), str(session.get("environment", ""))]
        metrics: dict[str, Any] = shard.get("metrics") or {}
        counters: dict[str, Any] = session.get("counters") or {}
        for family, (_, key, _) in zip(feed, FEED_COUNTERS, strict=True):
            family.add_metric(labels, _number(counters.get(key)))
        for code, count in sorted((metrics.get("errors_by_code") or {}).items()):
            errors.add_metric([*labels, str(code)], _number(count))
        connected.add_metric(labels, 1 if metrics.get("ws_connection_status") == "connected" else 0)
        age = _age(metrics.get("last_message_time"), now)
        if age is not None:
            last_message.add_metric(labels, age)
        markets.add_metric(labels, _number(metrics.get("markets_total")))
        live.add_metric(labels, _number(metrics.get("markets_connected")))
        stale.add_metric(labels, _number(metrics.get("stale_markets")))
        recorder: dict[str, Any] = metrics.get("recorder") or {}
        if recorder:
            queued.add_metric(labels, _number(recorder.get("queued")))
            written.add_metric(labels, _number(recorder.get("written")))
            retries.add_metric(labels, _number(recorder.get("retries")))
            oldest.add_metric(labels, _number(recorder.get("oldest_unwritten_age")))
            histogram = dict(recorder.get("write_seconds") or {})
            if histogram:
                total = histogram.pop("sum", 0.0)
                # By bound, +Inf last: PostgreSQL's jsonb does not keep the keys in the order they were written.
                buckets = sorted(histogram.items(), key=lambda bucket: float(bucket[0]))
                write_seconds.add_metric(labels, [(le, _number(n)) for le, n in buckets], _number(total))
        bus: dict[str, Any] = metrics.get("event_bus") or {}
        if bus:
            emitted.add_metric(labels, _number(bus.get("emitted")))
            for name, subscriber in sorted((bus.get("subscribers") or {}).items()):
                dropped.add_metric([*labels, name], _number(subscriber.get("dropped")))
            layer = (bus.get("subscribers") or {}).get("channel_layer")
            if layer is not None:
                layer_failures.add_metric(labels, _number(layer.get("errors")) + _number(layer.get("timeouts")))
        current = shard.get("state")
        for value in State:
            state.add_metric([*labels, value.value], 1 if value.value == current else 0)
        if shard.get("time_in_state") is not None:
            in_state.add_metric(labels, _number(shard["time_in_state"]))
        for entered, count in sorted((metrics.get("state_entries") or {}).items()):
            transitions.add_metric([*labels, entered], _number(count))
        verdict = (shard.get("health") or {}).get("status")
        for status in ("healthy", "degraded", "unhealthy"):
            health.add_metric([*labels, status], 1 if status == verdict else 0)
        if shard.get("heartbeat_age") is not None:
            heartbeat.add_metric(labels, _number(shard["heartbeat_age"]))
        _trading_metrics(
            labels,
            metrics,
            shard.get("trading"),
            counters=trading,
            fills=fills,
            refused=refused,
            ready=trading_ready,
            killed=killed,
            open_orders=open_orders,
            money=money,
        )
    return [
        *feed,
        errors,
        connected,
        last_message,
        markets,
        live,
        stale,
        queued,
        written,
        write_seconds,
        retries,
        oldest,
        emitted,
        dropped,
        layer_failures,
        state,
        in_state,
        transitions,
        health,
        heartbeat,
        *trading,
        fills,
        refused,
        trading_ready,
        killed,
        open_orders,
        money,
    ]


def _trading_metrics(
    labels: list[str],
    metrics: dict[str, Any],
    block: Any,
    *,
    counters: list[CounterMetricFamily],
    fills: CounterMetricFamily,
    refused: CounterMetricFamily,
    ready: GaugeMetricFamily,
    killed: GaugeMetricFamily,
    open_orders: GaugeMetricFamily,
    money: GaugeMetricFamily,
) -> None:
    """One shard's trading series: only for a trader that trades (its metrics have trading counters)."""
    if not any(key.startswith("trading_") for key in metrics):
        return
    for family, (_, key, _) in zip(counters, TRADING_COUNTERS, strict=True):
        family.add_metric(labels, _number(metrics.get(key)))
    fills.add_metric([*labels, "maker"], _number(metrics.get("trading_maker_fills")))
    fills.add_metric([*labels, "taker"], _number(metrics.get("trading_taker_fills")))
    for key in sorted(metrics):
        if key.startswith(REFUSED_PREFIX):
            refused.add_metric([*labels, key.removeprefix(REFUSED_PREFIX)], _number(metrics[key]))
    if not isinstance(block, dict) or not block.get("enabled"):
        return
    ready.add_metric(labels, 1 if block.get("ready") else 0)
    killed.add_metric(labels, 1 if block.get("killed") else 0)
    open_orders.add_metric(labels, _number(block.get("open_orders_total")))
    for figure in TRADING_MONEY:
        dollars = _dollars(block.get(figure))
        if dollars is not None:
            money.add_metric([*labels, figure], dollars)


def _number(value: Any) -> float:
    """A metric value from a document field: numbers as they are, anything else (None, a string) as 0."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _dollars(value: Any) -> float | None:
    """A dollar string of the status ("12.340000") as a sample value; exact in the document, a float only here
    because Prometheus samples are floats."""
    if not isinstance(value, str):
        return None
    try:
        return float(Decimal(value))
    except InvalidOperation:
        return None


def _age(timestamp: Any, now: datetime) -> float | None:
    if not isinstance(timestamp, str):
        return None
    try:
        return max(0.0, (now - datetime.fromisoformat(timestamp)).total_seconds())
    except ValueError:
        return None


T = TypeVar("T")

SCRAPE_WAIT = 2.0
"""Seconds a scrape waits for the trader's event loop to read its figures."""


def on_loop(loop: asyncio.AbstractEventLoop, read: Callable[[], T], timeout: float = SCRAPE_WAIT) -> T:
    """``read()`` run on ``loop``'s thread, waited for from another: the trader's objects change only on its
    loop, so a scrape thread never reads them half-changed."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        return read()  # already on the loop: waiting for it here would never end
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def call() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(read())
            except BaseException as exc:
                future.set_exception(exc)

    loop.call_soon_threadsafe(call)
    return future.result(timeout)


class MetricsServer:
    """The trader's own metrics port: prometheus_client's HTTP server on a thread, reading through ``on_loop``."""

    def __init__(self, collector: TraderCollector, *, host: str, port: int) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(collector)
        ProcessCollector(registry=self.registry)  # memory, CPU and open files of the trader's process
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.host = host
        self.port: int = self._server.server_port

    async def close(self) -> None:
        # shutdown() waits for the serving thread's next poll (up to 0.5 s): not on the event loop.
        await asyncio.to_thread(self._server.shutdown)
        self._server.server_close()
