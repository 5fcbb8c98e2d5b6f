"""Background tasks are supervised: a crash takes the trader to ``error`` with the reason, and the task restarts.
Markets the exchange refuses are dropped and reported; the trader goes on with the rest."""

from __future__ import annotations

import asyncio

import pytest

from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.backoff import Backoff
from apps.kalshi.signing import Credentials
from apps.trader.core.eventbus import EventBus
from apps.trader.core.states import State
from apps.trader.core.supervisor import Supervisor
from apps.trader.models import StateTransition, TradingSession
from tests.support import eventually
from tests.trader.conftest import EventLog
from tests.trader.test_trader_against_exchange import MARKETS, coordinator_for

pytestmark = pytest.mark.django_db(transaction=True)

UNKNOWN = "KXNOPE-26DEC-T1"


async def test_a_crashed_background_task_takes_the_trader_to_error_and_is_restarted(
    exchange: ExchangeSimulator, credentials: Credentials, bus: EventBus
) -> None:
    starts: list[int] = []
    ready = asyncio.Event()

    async def flaky() -> None:
        starts.append(len(starts) + 1)
        if len(starts) == 1:
            await ready.wait()
            raise RuntimeError("lost its way")
        await asyncio.Event().wait()  # the restarted task runs until cancelled

    coordinator = coordinator_for(
        exchange.ws_url,
        credentials,
        bus,
        background={"flaky": flaky},
        error_backoff=Backoff(initial=0.05, cap=0.1),
        task_restart_backoff=lambda: Backoff(initial=0.05),
    )
    run = asyncio.create_task(coordinator.run())
    try:
        await eventually(lambda: coordinator.machine.state is State.READY)
        ready.set()
        await eventually(lambda: coordinator.machine.state is State.ERROR)
        await eventually(lambda: len(starts) == 2 and coordinator.machine.state is State.READY)
    finally:
        coordinator.request_shutdown("done")
        await run
    contexts = [
        t.context async for t in StateTransition.objects.filter(session_id=coordinator.session_id, to_state="error")
    ]
    assert len(contexts) == 1
    assert contexts[0].startswith("background task flaky failed: RuntimeError: lost its way; restarting it in ")
    assert coordinator.supervisor.failures == {"flaky": 1}


async def test_a_background_task_that_returns_is_a_failure_too() -> None:
    reports: list[tuple[str, str]] = []
    runs = 0

    async def quits() -> None:
        nonlocal runs
        runs += 1

    supervisor = Supervisor(lambda name, reason: reports.append((name, reason)), backoff=lambda: Backoff(initial=0.01))
    supervisor.start("quitter", quits)
    await eventually(lambda: runs >= 3)
    await supervisor.stop()
    assert reports[0][0] == "quitter"
    assert reports[0][1].startswith("it stopped by itself; restarting it in ")


async def test_an_unknown_market_is_dropped_and_the_trader_is_ready_on_the_rest(
    exchange: ExchangeSimulator, credentials: Credentials, bus: EventBus
) -> None:
    log = EventLog()
    bus.subscribe("log", log)
    coordinator = coordinator_for(exchange.ws_url, credentials, bus)
    coordinator.options.markets = [MARKETS[0], UNKNOWN, MARKETS[1]]
    run = asyncio.create_task(coordinator.run())
    try:
        await eventually(lambda: coordinator.machine.state is State.READY)
        assert coordinator.options.markets == [MARKETS[0], MARKETS[1]]
        await eventually(lambda: any(s["market_tickers"] == MARKETS[:2] for s in log.of("trader_status")))
        lines = [c["message"] for c in log.of("console")]
        assert f"MARKETS: the exchange refused {UNKNOWN}: exchange error 11: Invalid parameter" in lines

        change = await coordinator.add_markets([UNKNOWN])
        assert change.refused == {UNKNOWN: "exchange error 11: Invalid parameter"}
        change = await coordinator.add_markets([MARKETS[2]])
        assert change.done == [MARKETS[2]]
        change = await coordinator.remove_markets([MARKETS[0]])
        assert change.done == [MARKETS[0]]
        assert coordinator.options.markets == [MARKETS[1], MARKETS[2]]
        assert coordinator.machine.state is State.READY
    finally:
        coordinator.request_shutdown("done")
        await run
    session = await TradingSession.objects.aget(pk=coordinator.session_id)
    assert session.markets == [MARKETS[1], MARKETS[2]]
    assert session.status == TradingSession.Status.STOPPED


async def test_when_the_exchange_refuses_every_market_the_trader_says_so_in_error(
    exchange: ExchangeSimulator, credentials: Credentials, bus: EventBus
) -> None:
    coordinator = coordinator_for(exchange.ws_url, credentials, bus, error_backoff=Backoff(initial=5.0))
    coordinator.options.markets = [UNKNOWN]
    run = asyncio.create_task(coordinator.run())
    try:
        await eventually(lambda: coordinator.machine.state is State.ERROR)
    finally:
        coordinator.request_shutdown("done")
        await run
    error = await StateTransition.objects.aget(session_id=coordinator.session_id, to_state="error")
    assert error.context == "the exchange refused every market (exchange error 11: Invalid parameter)"
