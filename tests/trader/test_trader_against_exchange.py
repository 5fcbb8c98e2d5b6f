"""The whole trader (coordinator, client, store, bus, broadcaster) against the built-in exchange."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.signing import Credentials
from apps.trader.config import TraderConfig
from apps.trader.core.eventbus import EventBus
from apps.trader.core.states import State
from apps.trader.models import MarketTop, StateTransition, TradingSession
from apps.trader.runtime import TraderRuntime, load_trader_config
from tests.support import eventually as wait_for
from tests.support import sim_trader_config
from tests.trader.builders import MARKETS, coordinator_for
from tests.trader.conftest import EventLog

pytestmark = pytest.mark.django_db(transaction=True)


def config_from_settings(settings: Any, *, markets: list[str]) -> TraderConfig:
    """The TraderConfig ``runtrader`` builds from these settings (sim, no web app)."""
    return load_trader_config(settings, markets=",".join(markets), web=False)


async def test_it_reaches_ready_writes_rows_broadcasts_and_shuts_down_cleanly(
    exchange: ExchangeSimulator, credentials: Credentials, bus: EventBus
) -> None:
    log = EventLog()
    bus.subscribe("log", log)
    coordinator = coordinator_for(exchange.ws_url, credentials, bus)
    run = asyncio.create_task(coordinator.run())

    await wait_for(lambda: coordinator.machine.state is State.READY)
    await wait_for(lambda: any(b["market_ticker"] == MARKETS[0] for o in log.of("orderbooks") for b in o["books"]))
    await wait_for(
        lambda: coordinator.client is not None and coordinator.client.feed_status().counters.deltas_received > 20
    )
    await wait_for(lambda: bool(log.of("trader_status")) and log.of("trader_status")[-1]["state"] == "ready")
    coordinator.request_shutdown("test is over")
    await run

    session = await TradingSession.objects.aget(pk=coordinator.session_id)
    assert session.status == TradingSession.Status.STOPPED
    assert session.ended_at is not None
    assert session.current_state == "shutdown"
    assert session.deltas_received > 20
    rows = [(t.from_state, t.to_state, t.context) async for t in StateTransition.objects.filter(session=session)]
    assert rows == [
        ("startup", "initializing", f"Initializing 3 market(s): {', '.join(MARKETS)}"),
        ("initializing", "kalshi_connectivity_orderbook_client", "Starting orderbook client for 3 markets"),
        ("kalshi_connectivity_orderbook_client", "ready", "Orderbooks live for 3 markets"),
        ("ready", "shutdown", "test is over"),
    ]
    broadcast = [(t["from_state"], t["to_state"]) for t in log.of("state_transition")]
    assert broadcast == [(r[0], r[1]) for r in rows]

    status = log.of("trader_status")[-1]
    assert status["metrics"]["snapshots_received"] == 3
    assert status["metrics"]["markets_total"] == 3
    assert "markets" not in status and "market_tickers" not in status  # counts only, whatever the market count
    # Every market's top is in its row, written by the heartbeats as the books changed.
    tops = {row.market_ticker: row.top async for row in MarketTop.objects.filter(session=session)}
    assert set(tops) == set(MARKETS)
    for ticker, top in tops.items():
        book = coordinator.client.books[ticker]  # type: ignore[union-attr]
        assert (top["sid"], top["seq"]) == (book.sid, book.seq)
    # Every book the trader shows equals the exchange's at the same seq.
    for ticker, book in coordinator.client.books.items():  # type: ignore[union-attr]
        truth = exchange.book_at(ticker, book.sid, book.seq)  # type: ignore[arg-type]
        assert truth is not None
        assert book.as_wire() == truth.as_wire()


async def test_a_dropped_connection_goes_back_to_connecting_and_recovers(
    exchange: ExchangeSimulator, credentials: Credentials, bus: EventBus
) -> None:
    log = EventLog()
    bus.subscribe("log", log)
    coordinator = coordinator_for(exchange.ws_url, credentials, bus)
    run = asyncio.create_task(coordinator.run())
    await wait_for(lambda: coordinator.machine.state is State.READY)

    exchange.drop_connections()
    await wait_for(
        lambda: any(
            t["to_state"] == "kalshi_connectivity_orderbook_client" and t["from_state"] == "ready"
            for t in log.of("state_transition")
        )
    )
    await wait_for(lambda: [t["to_state"] for t in log.of("state_transition")].count("ready") == 2)
    coordinator.request_shutdown("done")
    await run

    lost = next(t for t in log.of("state_transition") if t["from_state"] == "ready")
    assert "reconnecting, attempt 1 in" in lost["context"]
    assert coordinator.client is not None and coordinator.client.feed_status().counters.reconnects == 1
    assert any("CONNECTION" in line["message"] for line in log.of("console"))


async def test_a_refused_handshake_goes_to_error_and_recovers_by_itself(
    exchange: ExchangeSimulator, credentials: Credentials, bus: EventBus
) -> None:
    from apps.kalshi.backoff import Backoff

    log = EventLog()
    bus.subscribe("log", log)
    exchange.faults.reject_handshake = True
    coordinator = coordinator_for(exchange.ws_url, credentials, bus, error_backoff=Backoff(initial=0.05, cap=0.1))
    run = asyncio.create_task(coordinator.run())

    await wait_for(lambda: any(t["to_state"] == "error" for t in log.of("state_transition")))
    error = next(t for t in log.of("state_transition") if t["to_state"] == "error")
    assert "HTTP 401" in error["context"]
    exchange.faults.reject_handshake = False  # the key is fixed: the error state recovers through startup
    await wait_for(lambda: coordinator.machine.state is State.READY)
    coordinator.request_shutdown("done")
    await run

    path = [t["to_state"] for t in log.of("state_transition")]
    assert path[path.index("error") + 1] == "startup"
    session = await TradingSession.objects.aget(pk=coordinator.session_id)
    assert session.status == TradingSession.Status.STOPPED  # it recovered, so the run did not fail


async def test_a_state_that_outlives_its_timeout_goes_to_error(credentials: Credentials, bus: EventBus) -> None:
    from apps.kalshi.backoff import Backoff
    from apps.trader.core.states import STATE_TIMEOUTS

    log = EventLog()
    bus.subscribe("log", log)
    timeouts = {**STATE_TIMEOUTS, State.CONNECTING: 0.3}
    # Point the client at a port nobody listens on: it keeps retrying, so connecting never finishes.
    coordinator = coordinator_for(
        "ws://127.0.0.1:9/trade-api/ws/v2",
        credentials,
        bus,
        timeouts=timeouts,
        error_backoff=Backoff(initial=5.0, cap=5.0),
    )
    run = asyncio.create_task(coordinator.run())
    await wait_for(lambda: any(t["to_state"] == "error" for t in log.of("state_transition")))
    coordinator.request_shutdown("done")
    await run
    error = next(t for t in log.of("state_transition") if t["to_state"] == "error")
    assert error["from_state"] == "kalshi_connectivity_orderbook_client"
    assert error["context"].startswith("kalshi_connectivity_orderbook_client timed out after")
    assert log.of("state_transition")[-1]["to_state"] == "shutdown"


async def test_the_runtime_starts_the_built_in_exchange_and_broadcasts_to_the_channel_layer(
    key_pair: tuple[bytes, bytes], credentials: Credentials, layer_inbox: object
) -> None:
    config = sim_trader_config(credentials, key_pair[1], markets=MARKETS[:2])
    runtime = TraderRuntime(config)
    run = asyncio.create_task(runtime.run(handle_signals=False))
    seen: set[str] = set()
    receive = layer_inbox  # type: ignore[assignment]
    async with asyncio.timeout(10):
        while not {"trader.state_transition", "trader.trader_status", "trader.orderbooks", "trader.console"} <= seen:
            message = await receive()  # type: ignore[operator]
            seen.add(message["type"])
    runtime.request_shutdown("done")
    await run
    assert runtime.exchange is not None
    session = await TradingSession.objects.aget(pk=runtime.coordinator.session_id)  # type: ignore[union-attr]
    assert session.exchange_url == runtime.exchange.ws_url
    assert session.exchange_url.startswith("ws://127.0.0.1:")


async def test_sim_faults_from_settings_reach_the_built_in_exchange(settings: Any) -> None:
    settings.SIM_FAULTS = "skip_seq_every=10"
    settings.SIM_MESSAGE_RATE = 300.0
    runtime = TraderRuntime(config_from_settings(settings, markets=MARKETS[:2]))
    run = asyncio.create_task(runtime.run(handle_signals=False))
    try:
        await wait_for(lambda: runtime.coordinator is not None and runtime.coordinator.client is not None)
        await wait_for(lambda: runtime.coordinator.client.feed_status().counters.gaps_detected >= 2)
        assert runtime.exchange.faults.skip_seq_every == 10
    finally:
        runtime.request_shutdown("done")
        await run


async def test_markets_added_at_runtime_survive_a_recovery_from_error(
    exchange: ExchangeSimulator, credentials: Credentials, bus: EventBus
) -> None:
    from apps.kalshi.backoff import Backoff

    coordinator = coordinator_for(exchange.ws_url, credentials, bus, error_backoff=Backoff(initial=0.05, cap=0.1))
    run = asyncio.create_task(coordinator.run())
    try:
        await wait_for(lambda: coordinator.machine.state is State.READY)
        await coordinator.add_markets(["KXNBA-26-LAL"])
        first_client = coordinator.client
        exchange.faults.reject_handshake = True  # the next handshake fails: error, then a fresh client
        exchange.drop_connections()
        await wait_for(lambda: coordinator.machine.state is State.ERROR)
        exchange.faults.reject_handshake = False
        await wait_for(lambda: coordinator.machine.state is State.READY and coordinator.client is not first_client)
        assert "KXNBA-26-LAL" in coordinator.client.books
        assert coordinator.client.books["KXNBA-26-LAL"].seq is not None
    finally:
        coordinator.request_shutdown("done")
        await run


async def test_the_book_tick_and_its_bound_come_from_settings(settings: Any) -> None:
    settings.TRADER_ORDERBOOK_INTERVAL = 0.2
    settings.TRADER_ORDERBOOKS_PER_TICK = 1
    runtime = TraderRuntime(config_from_settings(settings, markets=MARKETS[:2]))
    run = asyncio.create_task(runtime.run(handle_signals=False))
    try:
        await wait_for(lambda: runtime.coordinator is not None)
        publisher = runtime.coordinator.publisher  # type: ignore[union-attr]
        assert (publisher.interval, publisher.per_tick) == (0.2, 1)
    finally:
        runtime.request_shutdown("done")
        await run
