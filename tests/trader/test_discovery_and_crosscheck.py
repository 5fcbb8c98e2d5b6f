"""Discovery and the book cross-check, through the trader, against the built-in exchange's REST API."""

from __future__ import annotations

import asyncio

import pytest

from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.rest import KalshiRestClient
from apps.kalshi.signing import Credentials
from apps.trader.core.states import State
from apps.trader.models import StateTransition, TradingSession
from apps.trader.runtime import TraderRuntime
from tests.support import eventually as wait_for
from tests.support import sim_trader_config
from tests.trader.conftest import EventLog

pytestmark = pytest.mark.django_db(transaction=True)


async def top_by_volume(sim: ExchangeSimulator, credentials: Credentials, count: int) -> list[str]:
    async with KalshiRestClient(sim.api_url, credentials) as rest:
        markets = [m async for m in rest.markets()]
    markets.sort(key=lambda m: (-m.volume_24h, m.ticker))
    return [m.ticker for m in markets[:count]]


async def test_discovery_subscribes_to_the_busiest_open_markets(
    key_pair: tuple[bytes, bytes], credentials: Credentials
) -> None:
    runtime = TraderRuntime(sim_trader_config(credentials, key_pair[1], discover=2))
    log = EventLog()
    runtime.bus.subscribe("log", log, kinds={"trader_status"})
    run = asyncio.create_task(runtime.run(handle_signals=False))
    try:
        await wait_for(lambda: runtime.coordinator is not None and runtime.coordinator.machine.state is State.READY)
        expected = await top_by_volume(runtime.exchange, credentials, 2)  # type: ignore[arg-type]
        assert runtime.coordinator.options.markets == expected
        assert sorted(runtime.coordinator.client.books) == sorted(expected)
        # One status report once ready queues a heartbeat; the session is closed only after it is written.
        reports_when_ready = len(log.events)
        await wait_for(lambda: len(log.events) > reports_when_ready, what="a status report (and heartbeat)")
        # The status counts the trader's REST requests (discovery's), which the exchange served.
        metrics = log.of("trader_status")[-1]["metrics"]
        assert 0 < metrics["rest_requests"] <= runtime.exchange.stats["rest_requests"]  # type: ignore[union-attr]
        assert (metrics["rest_retries_429"], metrics["rest_errors"]) == (0, 0)
    finally:
        runtime.request_shutdown("done")
        await run
    session = await TradingSession.objects.aget(pk=runtime.coordinator.session_id)
    assert session.markets == expected


async def test_a_closed_exchange_is_waited_for_not_a_crash(
    key_pair: tuple[bytes, bytes], credentials: Credentials, exchange: ExchangeSimulator
) -> None:
    exchange.set_exchange_status(False)
    runtime = TraderRuntime(
        sim_trader_config(
            credentials, key_pair[1], discover=1, start_exchange=False, ws_url=exchange.ws_url, api_url=exchange.api_url
        )
    )
    run = asyncio.create_task(runtime.run(handle_signals=False))
    try:
        await wait_for(lambda: runtime.coordinator is not None and runtime.coordinator.machine.state is State.ERROR)
        exchange.set_exchange_status(True)
        await wait_for(lambda: runtime.coordinator.machine.state is State.READY, 15)
    finally:
        runtime.request_shutdown("done")
        await run
    rows = [r async for r in StateTransition.objects.filter(session_id=runtime.coordinator.session_id)]
    closed = next(r for r in rows if r.to_state == "error")
    assert closed.from_state == "initializing"
    assert "the exchange is closed" in closed.context
    assert [r.to_state for r in rows][-2:] == ["ready", "shutdown"]


async def test_rate_limited_discovery_retries_and_the_status_counts_the_retries(
    key_pair: tuple[bytes, bytes], credentials: Credentials, exchange: ExchangeSimulator
) -> None:
    exchange.config.faults.rest_429 = 2
    runtime = TraderRuntime(
        sim_trader_config(
            credentials, key_pair[1], discover=1, start_exchange=False, ws_url=exchange.ws_url, api_url=exchange.api_url
        )
    )
    log = EventLog()
    runtime.bus.subscribe("log", log, kinds={"trader_status"})
    run = asyncio.create_task(runtime.run(handle_signals=False))
    try:
        await wait_for(lambda: runtime.coordinator is not None and runtime.coordinator.machine.state is State.READY)
        await wait_for(lambda: bool(log.of("trader_status")), what="a status report")
        metrics = log.of("trader_status")[-1]["metrics"]
        assert metrics["rest_retries_429"] == 2
        assert metrics["rest_requests"] >= 3  # the two refused requests and the one answered
        assert metrics["rest_errors"] == 0
    finally:
        runtime.request_shutdown("done")
        await run


async def test_a_book_that_drifts_from_the_exchange_is_found_and_resynced(
    key_pair: tuple[bytes, bytes], credentials: Credentials
) -> None:
    runtime = TraderRuntime(
        sim_trader_config(
            credentials, key_pair[1], markets=["KXFED-26DEC-T4.25", "KXCPI-26DEC-T0.3"], crosscheck_interval=0.2
        )
    )
    run = asyncio.create_task(runtime.run(handle_signals=False))
    try:
        await wait_for(lambda: runtime.coordinator is not None and runtime.coordinator.machine.state is State.READY)
        sim = runtime.exchange
        sim.faults.stall = True  # a still book: REST and the live feed agree exactly
        coordinator = runtime.coordinator
        await wait_for(lambda: coordinator.metrics().get("crosscheck_checks", 0) >= 4)
        assert coordinator.metrics()["crosscheck_persistent_mismatches"] == 0

        book = coordinator.client.books["KXFED-26DEC-T4.25"]
        best = max(book.yes)
        book.yes[best] += 100  # the live book is now wrong by one contract at the best bid
        await wait_for(lambda: coordinator.metrics().get("crosscheck_resyncs", 0) >= 1)
        await wait_for(lambda: not coordinator.client.stale)
        truth = sim.true_book("KXFED-26DEC-T4.25")
        assert coordinator.client.books["KXFED-26DEC-T4.25"].as_wire() == truth.as_wire()
        assert coordinator.client.feed_status().counters.resyncs >= 1
    finally:
        runtime.request_shutdown("done")
        await run
