"""The state loop, run against stand-ins: it moves states, writes a row and broadcasts each move, and never
makes a move wait for the database or the recorder."""

from __future__ import annotations

import asyncio

from apps.kalshi.backoff import Backoff
from apps.kalshi.feed import FeedEventKind
from apps.trader.core.eventbus import EventBus
from apps.trader.core.states import State
from tests.support import eventually
from tests.trader.builders import (
    MARKETS,
    ListRecorder,
    MemoryStore,
    StandInClients,
    build_coordinator,
    delta,
    snapshot,
)
from tests.trader.conftest import EventLog

FED = MARKETS[0]


def moves(log: EventLog) -> list[tuple[str, str]]:
    return [(t["from_state"], t["to_state"]) for t in log.of("state_transition")]


async def test_it_moves_through_the_states_writing_and_broadcasting_each_move(bus: EventBus) -> None:
    log = EventLog()
    bus.subscribe("log", log)
    clients, store = StandInClients(), MemoryStore()
    coordinator = build_coordinator(clients, bus=bus, store=store, markets=[FED])
    run = asyncio.create_task(coordinator.run())
    await eventually(lambda: coordinator.machine.state is State.CONNECTING)
    await clients.last.event(FeedEventKind.SYNCED, markets=(FED,))
    await eventually(lambda: coordinator.machine.state is State.READY)
    await clients.last.event(FeedEventKind.DISCONNECTED, reason="socket closed", attempt=1, delay=0.5)
    await eventually(lambda: moves(log)[-1] == ("ready", "kalshi_connectivity_orderbook_client"))
    await clients.last.event(FeedEventKind.SYNCED, markets=(FED,))
    await eventually(lambda: coordinator.machine.state is State.READY and len(moves(log)) == 5)
    coordinator.request_shutdown("done")
    await run

    expected = [
        ("startup", "initializing"),
        ("initializing", "kalshi_connectivity_orderbook_client"),
        ("kalshi_connectivity_orderbook_client", "ready"),
        ("ready", "kalshi_connectivity_orderbook_client"),
        ("kalshi_connectivity_orderbook_client", "ready"),
        ("ready", "shutdown"),
    ]
    assert moves(log) == expected
    assert [(t.from_state.value, t.to_state.value) for t in store.transitions] == expected
    lost = log.of("state_transition")[3]
    assert lost["context"] == "Connection lost (socket closed); reconnecting, attempt 1 in 0.5 s"
    assert lost["session_id"] == coordinator.session_id
    assert store.ended == {"failed": False, "error": ""}


async def test_a_move_is_broadcast_while_the_recorder_and_the_database_hold_everything(bus: EventBus) -> None:
    log = EventLog()
    bus.subscribe("log", log)
    clients, store, recorder = StandInClients(), MemoryStore(), ListRecorder()
    crashed = asyncio.Event()

    async def crashes_on_demand() -> None:
        await crashed.wait()
        crashed.clear()  # once: the restarted task waits again
        raise RuntimeError("lost its way")

    coordinator = build_coordinator(
        clients,
        bus=bus,
        store=store,
        recorder=recorder,
        markets=[FED],
        background={"crashes": crashes_on_demand},
        error_backoff=Backoff(initial=0.01, cap=0.01),
    )
    run = asyncio.create_task(coordinator.run())
    await eventually(lambda: coordinator.machine.state is State.CONNECTING)
    first = clients.last
    await first.event(FeedEventKind.SYNCED, markets=(FED,))
    await first.feed(snapshot(FED, 1, 1, yes=[("0.4200", "10.00")], no=[("0.5500", "3.00")]))
    await eventually(lambda: coordinator.machine.state is State.READY)

    # The recorder's batch write is stuck and its buffer full; the session store does not answer.
    recorder.writing.clear()
    store.answering.clear()
    feeding = asyncio.create_task(first.feed(delta(FED, 1, 2, "0.4300", "1.00", ts_ms=1_764_561_600_000)))
    crashed.set()  # ready -> error -> startup -> initializing -> connecting, with a new client

    await eventually(
        lambda: ("initializing", "kalshi_connectivity_orderbook_client") in moves(log)[3:] and len(clients.built) == 2
    )
    assert moves(log)[3:6] == [("ready", "error"), ("error", "startup"), ("startup", "initializing")]
    assert not feeding.done()  # the old client is still held by the recorder
    assert [t.to_state for t in store.transitions] == [State.INITIALIZING, State.CONNECTING, State.READY]

    # Once the recorder and the database answer, everything is written, in order.
    recorder.writing.set()
    store.answering.set()
    await feeding
    await clients.last.feed(snapshot(FED, 2, 1, yes=[("0.4100", "1.00")], no=[]))
    coordinator.request_shutdown("done")
    await run
    assert [row[0] for row in recorder.rows] == ["message", "message", "gap", "message", "healed"]
    assert recorder.rows[2] == ("gap", "disconnect", 1, 3, None, (FED,))
    assert [(t.from_state.value, t.to_state.value) for t in store.transitions] == moves(log)


async def test_at_many_markets_lines_and_rows_name_the_first_ones_and_count_the_rest(bus: EventBus) -> None:
    log = EventLog()
    bus.subscribe("log", log)
    markets = [f"KXMANY-26DEC-T{n}" for n in range(10_000)]
    clients, store = StandInClients(), MemoryStore()
    coordinator = build_coordinator(clients, bus=bus, store=store, markets=markets)
    run = asyncio.create_task(coordinator.run())
    await eventually(lambda: coordinator.machine.state is State.CONNECTING)
    coordinator.request_shutdown("done")
    await run

    named = ", ".join(markets[:20])
    assert store.transitions[0].context == f"Initializing 10000 market(s): {named} and 9,980 more"
    assert log.of("console")[0]["context"] == f"markets: {named} and 9,980 more"
