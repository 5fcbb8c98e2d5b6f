"""The status reporter: a document of counts whatever the market count, a heartbeat of what changed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from apps.kalshi.feed import FeedEventKind
from apps.trader.core.eventbus import EventBus
from apps.trader.core.states import State
from tests.support import eventually
from tests.trader.builders import MemoryStore, StandInClients, build_coordinator, delta, snapshot
from tests.trader.conftest import EventLog

MANY = [f"KXMANY-26DEC-T{n}" for n in range(10_000)]


def largest_collection(document: Any) -> int:
    """The length of the longest list or dict anywhere in ``document``."""
    if isinstance(document, dict):
        return max([len(document), *(largest_collection(v) for v in document.values())])
    if isinstance(document, list):
        return max([len(document), *(largest_collection(v) for v in document)])
    return 0


async def test_at_10000_markets_status_holds_counts_and_a_heartbeat_only_what_changed(bus: EventBus) -> None:
    log = EventLog()
    bus.subscribe("log", log, kinds={"trader_status"})
    clients, store = StandInClients(), MemoryStore()
    coordinator = build_coordinator(clients, bus=bus, store=store, markets=list(MANY), status_interval=0.05)
    run = asyncio.create_task(coordinator.run())
    try:
        await eventually(lambda: coordinator.machine.state is State.CONNECTING)
        client = clients.last
        for ticker in MANY:
            await client.feed(snapshot(ticker, 1, 1, yes=[("0.4200", "1.00")], no=[("0.5500", "2.00")]))
        await client.event(FeedEventKind.SYNCED, markets=tuple(MANY))
        await eventually(lambda: sum(len(h["tops"]) for h in store.heartbeats) >= len(MANY))
        beats = len(store.heartbeats)
        await client.feed(delta(MANY[17], 1, 2, "0.4300", "1.00", ts_ms=5))
        await client.feed(delta(MANY[9_999], 1, 2, "0.4300", "1.00", ts_ms=6))
        await eventually(lambda: any(h["tops"] for h in store.heartbeats[beats:]))
        await eventually(lambda: bool(log.of("trader_status")) and log.of("trader_status")[-1]["state"] == "ready")
    finally:
        coordinator.request_shutdown("done")
        await run

    status = log.of("trader_status")[-1]
    assert "markets" not in status and "market_tickers" not in status
    assert status["metrics"]["markets_total"] == 10_000
    assert status["metrics"]["markets_connected"] == 10_000
    assert status["metrics"]["stale_markets"] == 0
    assert largest_collection(status) < 100
    assert len(json.dumps(status)) < 8_000
    # Each market's top was handed to the store once after its snapshot, then only the two that moved.
    written = [top["market_ticker"] for h in store.heartbeats for top in h["tops"]]
    assert sorted(written) == sorted([*MANY, MANY[17], MANY[9_999]])
    changed = next(h["tops"] for h in store.heartbeats[beats:] if h["tops"])
    assert sorted((top["market_ticker"], top["seq"], top["ts_ms"]) for top in changed) == [
        (MANY[17], 2, 5),
        (MANY[9_999], 2, 6),
    ]
    assert all(h["markets"] is None for h in store.heartbeats)  # the list never changed after the start
    assert all(largest_collection(h["status"]) < 100 for h in store.heartbeats)


async def test_the_market_list_goes_to_the_store_only_when_it_changes(bus: EventBus) -> None:
    clients, store = StandInClients(), MemoryStore()
    coordinator = build_coordinator(clients, bus=bus, store=store, markets=["A", "B"], status_interval=0.05)
    run = asyncio.create_task(coordinator.run())
    try:
        await eventually(lambda: coordinator.machine.state is State.CONNECTING)
        await clients.last.event(FeedEventKind.SYNCED, markets=("A", "B"))
        await eventually(lambda: len(store.heartbeats) >= 2)
        change = await coordinator.remove_markets(["A"])
        assert change.done == ["A"]
        await eventually(lambda: any(h["markets"] for h in store.heartbeats))
        beats = len(store.heartbeats)
        await eventually(lambda: len(store.heartbeats) >= beats + 2)
    finally:
        coordinator.request_shutdown("done")
        await run
    lists = [h["markets"] for h in store.heartbeats if h["markets"] is not None]
    assert lists == [["B"]]


async def test_the_orderbook_status_line_reads_counters() -> None:
    bus = EventBus()
    clients = StandInClients()
    coordinator = build_coordinator(clients, bus=bus, store=MemoryStore(), markets=["A", "B"])
    assert (
        coordinator.reporter.summary_line() == "ORDERBOOK STATUS: Markets: 0 | Snapshots: 0 | Deltas: 0 | Uptime: 0.0s"
    )
    coordinator.client = client = clients(coordinator, ["A", "B"])
    await client.event(FeedEventKind.SYNCED)
    await client.feed(snapshot("A", 1, 1, yes=[("0.4200", "1.00")], no=[]))
    await client.feed(delta("A", 1, 2, "0.4200", "1.00"))
    assert coordinator.reporter.summary_line() == (
        "ORDERBOOK STATUS: Markets: 1 | Snapshots: 1 | Deltas: 1 | Uptime: 1.0s"  # B has had no snapshot yet
    )
    await bus.close()


async def test_the_status_shows_resubscriptions_and_message_types_the_client_did_not_know() -> None:
    bus = EventBus()
    clients = StandInClients()
    coordinator = build_coordinator(clients, bus=bus, store=MemoryStore(), markets=["A"])
    assert (coordinator.reporter.metrics()["resubscribes"], coordinator.reporter.metrics()["unknown_types"]) == (0, {})
    coordinator.client = client = clients(coordinator, ["A"])
    client.metrics.resubscribes = 2
    client.metrics.unknown_types.update(["market_lifecycle_v2", "market_lifecycle_v2", "trade"])
    metrics = coordinator.reporter.metrics()
    assert metrics["resubscribes"] == 2
    assert metrics["unknown_types"] == {"market_lifecycle_v2": 2, "trade": 1}
    await bus.close()


async def test_status_lines_come_when_live_markets_change_and_a_healed_gap_gets_a_resync_line(bus: EventBus) -> None:
    log = EventLog()
    bus.subscribe("log", log, kinds={"console"})
    clients = StandInClients()
    coordinator = build_coordinator(clients, bus=bus, store=MemoryStore(), markets=["A", "B"], status_interval=0.05)

    def lines(prefix: str) -> list[str]:
        return [line["message"] for line in log.of("console") if line["message"].startswith(prefix)]

    run = asyncio.create_task(coordinator.run())
    try:
        await eventually(lambda: coordinator.machine.state is State.CONNECTING)
        client = clients.last
        for ticker in ("A", "B"):
            await client.feed(snapshot(ticker, 1, 1, yes=[("0.4200", "1.00")], no=[]))
        await client.event(FeedEventKind.SYNCED, markets=("A", "B"))
        await eventually(lambda: len(lines("ORDERBOOK STATUS")) == 1)
        await asyncio.wait_for(_status_beats(bus, 5), timeout=10)  # nothing changes: no further line
        assert lines("ORDERBOOK STATUS") == ["ORDERBOOK STATUS: Markets: 2 | Snapshots: 2 | Deltas: 0 | Uptime: 1.0s"]

        await client.event(FeedEventKind.GAP, reason="seq gap on sid 1", sid=1, markets=("A",), level="warning")
        await eventually(lambda: lines("ORDERBOOK STATUS")[-1].startswith("ORDERBOOK STATUS: Markets: 1 "))
        assert not lines("RESYNC")
        await client.feed(snapshot("A", 1, 3, yes=[("0.4300", "1.00")], no=[]))
        await eventually(lambda: lines("RESYNC") == ["RESYNC: done, every book is live again after 1 gap(s)"])
        await eventually(lambda: lines("ORDERBOOK STATUS")[-1].startswith("ORDERBOOK STATUS: Markets: 2 "))
        assert len(lines("ORDERBOOK STATUS")) == 3
    finally:
        coordinator.request_shutdown("done")
        await run


async def _status_beats(bus: EventBus, count: int) -> None:
    """Return after ``count`` more trader_status events."""
    seen = asyncio.Event()
    beats = 0

    async def counter(event: Any) -> None:
        nonlocal beats
        beats += 1
        if beats >= count:
            seen.set()

    bus.subscribe("beats", counter, kinds={"trader_status"})
    await seen.wait()
