"""Background tasks are supervised: a crash takes the trader to ``error`` with the reason, and the task restarts.
Markets the exchange refuses are dropped and reported; the trader goes on with the rest."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.backoff import Backoff
from apps.kalshi.signing import Credentials
from apps.trader.core.eventbus import EventBus
from apps.trader.core.states import State
from apps.trader.core.supervisor import Supervisor
from apps.trader.models import StateTransition, TradingSession
from tests.support import eventually
from tests.trader.builders import MARKETS, coordinator_for
from tests.trader.conftest import EventLog

pytestmark = pytest.mark.django_db(transaction=True)

UNKNOWN = "KXNOPE-26DEC-T1"


async def test_a_crashed_background_task_takes_the_trader_to_error_and_is_restarted(
    exchange: ExchangeSimulator, credentials: Credentials, bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    log = EventLog()
    bus.subscribe("log", log, kinds={"console", "state_transition"})
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
    # Consoles see the failure once, as the transition into error (shown at error level), not again as a line.
    into_error = [t for t in log.of("state_transition") if t["to_state"] == "error"]
    assert [t["context"] for t in into_error] == contexts
    assert not [line for line in log.of("console") if "lost its way" in line["message"]]
    logged = [r for r in caplog.records if "lost its way" in r.getMessage() and "STATE TRANSITION" in r.getMessage()]
    assert [r.levelname for r in logged] == ["ERROR"]


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


async def test_stop_ends_a_task_that_lost_its_cancellation() -> None:
    """On Python 3.11 asyncio.wait_for returns normally when it is cancelled just as what it awaits completes
    (redis-py awaits its socket writes so): the task carries on, and a stop that cancelled it once waited forever."""
    reports: list[tuple[str, str]] = []
    write: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    writing = asyncio.Event()
    ended = asyncio.Event()

    async def listener() -> None:
        try:
            writing.set()
            await asyncio.wait_for(write, timeout=60)
            await asyncio.Event().wait()  # the next receive, which nothing answers
        finally:
            ended.set()

    supervisor = Supervisor(lambda name, reason: reports.append((name, reason)))
    supervisor.start("control", listener)
    await writing.wait()
    write.set_result(None)  # completes in the same loop iteration as the cancellation below
    async with asyncio.timeout(10):  # a failure, not a hung suite
        await supervisor.stop()
    assert ended.is_set()
    assert reports == []


async def test_a_task_that_fails_while_being_stopped_is_not_restarted() -> None:
    reports: list[tuple[str, str]] = []
    runs = 0
    running = asyncio.Event()

    async def fails_on_cancel() -> None:
        nonlocal runs
        runs += 1
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if runs == 1:  # only once, so that a regression fails below instead of hanging the suite
                raise RuntimeError("cleanup failed") from None
            raise

    supervisor = Supervisor(lambda name, reason: reports.append((name, reason)), backoff=lambda: Backoff(initial=0.01))
    supervisor.start("control", fails_on_cancel)
    await running.wait()
    async with asyncio.timeout(10):
        await supervisor.stop()
    assert runs == 1
    assert reports == []


async def test_stop_leaves_behind_a_task_that_never_ends_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    release = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def stubborn() -> None:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    supervisor = Supervisor(lambda name, reason: None)
    supervisor.start("stubborn", stubborn)
    await eventually(lambda: bool(tasks))
    try:
        with caplog.at_level(logging.ERROR, logger="apps.trader.core.supervisor"):
            async with asyncio.timeout(10):
                await supervisor.stop(timeout=0.3)
        assert "background task(s) trader:stubborn did not stop within 0.3 s" in caplog.text
        assert not tasks[0].done()
    finally:
        release.set()
        tasks[0].cancel()
    await eventually(lambda: tasks[0].done())


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
        await eventually(lambda: any(s["metrics"]["markets_total"] == 2 for s in log.of("trader_status")))

        # The session row follows the market list (written when it changes).
        async def row_markets_written() -> bool:
            return bool((await TradingSession.objects.aget(pk=coordinator.session_id)).markets == MARKETS[:2])

        await eventually(row_markets_written, what="the session row's market list")
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
