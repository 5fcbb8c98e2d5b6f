"""The strategy host: one callback at a time on the strategy's own task, coalesced books, sticky failure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from apps.kalshi.fixedpoint import CONTRACT
from apps.kalshi.orderbook import TopOfBook
from apps.trader.core.trading.records import FillRecord, OrderRecord
from apps.trader.core.trading.strategy import Strategy, StrategyContext
from apps.trader.core.trading.strategyhost import StrategyHost
from tests.support import eventually
from tests.trading.context import MemoryContext, cents

M = "KXTEST-A"
N = "KXTEST-B"


class Recorder(Strategy):
    """Notes every callback; a callback named in ``hold`` waits for its event, one named ``fail_in`` raises."""

    name = "recorder"
    timer_interval: float | None = None

    def __init__(self) -> None:
        super().__init__({"spread": "0.02"})
        self.calls: list[tuple[Any, ...]] = []
        self.hold: dict[str, asyncio.Event] = {}
        self.fail_in = ""

    async def _note(self, *call: Any) -> None:
        self.calls.append(call)
        if call[0] == self.fail_in:
            raise ValueError(f"boom in {call[0]}\nsecond line")
        if call[0] in self.hold:
            try:
                await self.hold[call[0]].wait()
            except asyncio.CancelledError:
                self.calls.append(("cancelled", call[0]))
                raise

    def kinds(self) -> list[str]:
        return [call[0] for call in self.calls]

    async def on_start(self, ctx: StrategyContext) -> None:
        await self._note("start")

    async def on_book(self, ctx: StrategyContext, ticker: str, top: TopOfBook) -> None:
        await self._note("book", ticker, top)

    async def on_order(self, ctx: StrategyContext, order: OrderRecord) -> None:
        await self._note("order", order.client_order_id)

    async def on_fill(self, ctx: StrategyContext, fill: FillRecord) -> None:
        await self._note("fill", fill.trade_id)

    async def on_timer(self, ctx: StrategyContext) -> None:
        await self._note("timer")

    async def on_stop(self, ctx: StrategyContext) -> None:
        await self._note("stop")


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(
        self,
        strategy: Recorder,
        *,
        stop_timeout: float = 5.0,
        clock: Clock | None = None,
        on_failed: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.strategy = strategy
        self.ctx = MemoryContext([M, N])
        self.ctx.set_book(M, bids={cents(40): CONTRACT}, asks={cents(50): CONTRACT})
        self.ctx.set_book(N, bids={cents(10): CONTRACT}, asks={cents(20): CONTRACT})
        self.lines: list[tuple[str, str, str]] = []
        self.failures: list[str] = []
        self.host = StrategyHost(
            strategy,
            self.ctx,
            on_failed=on_failed or self.on_failed,
            console=lambda level, message, detail: self.lines.append((level, message, detail)),
            stop_timeout=stop_timeout,
            monotonic=clock or time.monotonic,
        )

    async def on_failed(self, traceback_text: str) -> None:
        self.failures.append(traceback_text)

    def top(self, ticker: str) -> TopOfBook:
        top = self.ctx.top(ticker)
        assert top is not None
        return top

    def lines_at(self, level: str) -> list[str]:
        return [message for line_level, message, _ in self.lines if line_level == level]


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    harness = Harness(Recorder())
    yield harness
    for event in harness.strategy.hold.values():
        event.set()
    await harness.host.stop("test over")


def order(client_order_id: str) -> OrderRecord:
    return OrderRecord(
        client_order_id,
        "",
        M,
        "bid",
        cents(40),
        CONTRACT,
        0,
        CONTRACT,
        "good_till_canceled",
        "submitted",
        0,
        "",
        "t",
        0,
    )


def fill(trade_id: str) -> FillRecord:
    return FillRecord(trade_id, "o1", "c1", M, "bid", cents(40), CONTRACT, 0, False, CONTRACT, 0, 0)


async def test_it_calls_on_start_first_then_the_changes_that_came_before(harness: Harness) -> None:
    harness.host.book_changed(M)
    harness.host.order_changed(order("c1"))

    harness.host.start()

    await eventually(lambda: len(harness.strategy.calls) == 3, what="three callbacks")
    assert harness.strategy.calls == [("start",), ("order", "c1"), ("book", M, harness.top(M))]
    assert harness.host.state == "running"


async def test_a_slow_on_book_sees_only_the_newest_top_of_each_market(harness: Harness) -> None:
    strategy, host = harness.strategy, harness.host
    strategy.hold["book"] = asyncio.Event()
    host.start()
    host.book_changed(M)
    await eventually(lambda: strategy.kinds() == ["start", "book"], what="on_book to be busy")
    first = strategy.calls[-1]

    for cent in range(1, 40):
        harness.ctx.set_book(M, bids={cents(cent): CONTRACT}, asks={cents(60): CONTRACT})
        host.book_changed(M)
        host.book_changed(N)
    newest = harness.top(M)
    strategy.hold["book"].set()

    await eventually(lambda: len(strategy.calls) == 4, what="the coalesced books")
    assert strategy.calls[1] == first
    assert sorted(strategy.calls[2:], key=lambda call: call[1]) == [("book", M, newest), ("book", N, harness.top(N))]


async def test_a_market_is_called_back_once_per_round_however_often_it_changed_meanwhile(harness: Harness) -> None:
    strategy, host = harness.strategy, harness.host
    first = strategy.hold["book"] = asyncio.Event()
    host.start()
    host.book_changed(M)
    await eventually(lambda: strategy.kinds() == ["start", "book"], what="on_book of M to be busy")
    host.book_changed(N)
    host.book_changed(M)

    # The next round calls M, then N; N changes again while M's call runs.
    second = strategy.hold["book"] = asyncio.Event()
    first.set()
    await eventually(lambda: strategy.kinds() == ["start", "book", "book"], what="on_book of M again")
    host.book_changed(N)
    second.set()

    await eventually(lambda: len(strategy.calls) == 4, what="on_book of N")
    assert [call[1] for call in strategy.calls[1:]] == [M, M, N]
    host.order_changed(order("c1"))
    await eventually(lambda: len(strategy.calls) == 5, what="a later order change")
    assert strategy.calls[-1] == ("order", "c1")


async def test_order_changes_and_fills_go_in_order_before_books(harness: Harness) -> None:
    strategy, host = harness.strategy, harness.host
    strategy.hold["book"] = asyncio.Event()
    host.start()
    host.book_changed(M)
    await eventually(lambda: strategy.kinds() == ["start", "book"], what="on_book to be busy")

    host.book_changed(N)
    host.order_changed(order("c1"))
    host.filled(fill("t1"))
    host.order_changed(order("c2"))
    host.order_changed(order("c1"))
    strategy.hold["book"].set()

    await eventually(lambda: len(strategy.calls) == 7, what="every callback")
    assert strategy.calls[2:] == [
        ("order", "c1"),
        ("fill", "t1"),
        ("order", "c2"),
        ("order", "c1"),
        ("book", N, harness.top(N)),
    ]


async def test_a_market_without_a_live_book_is_not_called_back(harness: Harness) -> None:
    harness.host.start()
    harness.host.book_changed("KXTEST-NOBOOK")
    harness.host.book_changed(M)

    await eventually(lambda: len(harness.strategy.calls) == 2, what="on_start and one book")
    assert harness.strategy.calls == [("start",), ("book", M, harness.top(M))]


async def test_on_timer_runs_every_timer_interval() -> None:
    strategy = Recorder()
    strategy.timer_interval = 0.01
    harness = Harness(strategy)
    harness.host.start()
    try:
        await eventually(lambda: strategy.kinds().count("timer") >= 3, what="three timers")
    finally:
        await harness.host.stop("test over")


async def test_on_timer_waits_for_its_interval_on_the_hosts_clock() -> None:
    strategy = Recorder()
    strategy.timer_interval = 0.02
    clock = Clock()
    harness = Harness(strategy, clock=clock)
    host = harness.host
    host.start()
    try:
        host.order_changed(order("c1"))
        await eventually(lambda: strategy.kinds() == ["start", "order"], what="the order change")
        host.order_changed(order("c2"))
        await eventually(lambda: strategy.kinds() == ["start", "order", "order"], what="a second order change")

        clock.now += 0.02
        await eventually(lambda: "timer" in strategy.kinds(), what="the timer")
        host.order_changed(order("c3"))
        await eventually(lambda: strategy.kinds()[-1] == "order", what="a third order change")
        assert strategy.kinds() == ["start", "order", "order", "timer", "order"]
    finally:
        await host.stop("test over")


@pytest.mark.parametrize("callback", ["start", "book", "order", "timer"])
async def test_an_exception_fails_the_strategy_for_good_and_reports_it(callback: str) -> None:
    strategy = Recorder()
    strategy.timer_interval = 0.01
    strategy.fail_in = callback
    harness = Harness(strategy)
    host = harness.host
    host.start()
    host.book_changed(M)
    host.order_changed(order("c1"))

    await eventually(lambda: harness.failures != [], what="on_failed")
    assert host.state == "failed"
    assert host.error == f"ValueError: boom in {callback} second line"
    assert host.describe()["error"] == host.error
    [(message, detail)] = [(m, d) for level, m, d in harness.lines if level == "error"]
    assert message.startswith(f"strategy recorder failed in on_{callback}: ValueError: boom in {callback}")
    assert detail.startswith("Traceback (most recent call last)")
    assert f"ValueError: boom in {callback}" in detail
    assert harness.failures == [detail]
    calls = list(strategy.calls)
    assert calls[-1][0] == callback

    # Sticky: no restart, no more callbacks, not even on_stop.
    host.start()
    host.book_changed(M)
    host.order_changed(order("c2"))
    host.filled(fill("t1"))
    assert host.state == "failed"
    await host.stop("shutdown")
    assert host.state == "failed"
    assert strategy.calls == calls
    assert len(harness.failures) == 1


async def test_an_exception_in_on_stop_fails_the_strategy() -> None:
    strategy = Recorder()
    strategy.fail_in = "stop"
    harness = Harness(strategy)
    harness.host.start()
    await eventually(lambda: strategy.kinds() == ["start"], what="on_start")

    await harness.host.stop("shutdown")

    assert harness.host.state == "failed"
    assert harness.host.error.startswith("ValueError: boom in stop")
    assert len(harness.failures) == 1


async def test_a_failing_on_failed_is_reported_and_the_strategy_stays_failed() -> None:
    strategy = Recorder()
    strategy.fail_in = "start"
    failures: list[str] = []

    async def cancels_fail(traceback_text: str) -> None:
        failures.append(traceback_text)
        raise RuntimeError("exchange away")

    harness = Harness(strategy, on_failed=cancels_fail)
    harness.host.start()

    await eventually(lambda: len(harness.lines_at("error")) == 2, what="two error lines")
    assert "RuntimeError: exchange away" in harness.lines_at("error")[1]
    assert harness.host.state == "failed"
    assert len(failures) == 1
    await harness.host.stop("shutdown")


async def test_a_pause_calls_on_stop_and_holds_every_callback_until_start(harness: Harness) -> None:
    strategy, host = harness.strategy, harness.host
    host.start()
    await eventually(lambda: strategy.kinds() == ["start"], what="on_start")

    host.pause()
    assert host.state == "paused"
    await eventually(lambda: strategy.kinds() == ["start", "stop"], what="on_stop")
    host.book_changed(M)
    host.order_changed(order("c1"))
    host.filled(fill("t1"))

    host.start()
    assert host.describe()["state"] == "running"
    await eventually(lambda: len(strategy.calls) == 6, what="the resumed callbacks")
    assert strategy.calls == [
        ("start",),
        ("stop",),
        ("start",),
        ("order", "c1"),
        ("fill", "t1"),
        ("book", M, harness.top(M)),
    ]


async def test_a_pause_the_task_has_not_seen_yet_still_restarts_the_strategy(harness: Harness) -> None:
    strategy, host = harness.strategy, harness.host
    host.start()
    await eventually(lambda: strategy.kinds() == ["start"], what="on_start")

    host.pause()
    host.start()

    await eventually(lambda: strategy.kinds() == ["start", "stop", "start"], what="on_stop and on_start again")


async def test_stop_calls_on_stop_once_and_is_idempotent(harness: Harness) -> None:
    strategy, host = harness.strategy, harness.host
    host.start()
    await eventually(lambda: strategy.kinds() == ["start"], what="on_start")

    await asyncio.gather(host.stop("kill switch"), host.stop("shutdown"))
    await host.stop("again")

    assert strategy.kinds() == ["start", "stop"]
    assert host.state == "stopped"
    assert [m for m in harness.lines_at("info") if "stopped" in m] == ["strategy recorder stopped: kill switch"]
    host.start()
    host.book_changed(M)
    assert host.state == "stopped"


async def test_stop_before_start_calls_nothing(harness: Harness) -> None:
    await harness.host.stop("shutdown")

    assert harness.host.state == "stopped"
    harness.host.start()
    assert harness.host.state == "stopped"
    assert harness.strategy.calls == []


async def test_stop_after_a_pause_does_not_call_on_stop_twice(harness: Harness) -> None:
    strategy, host = harness.strategy, harness.host
    host.start()
    await eventually(lambda: strategy.kinds() == ["start"], what="on_start")
    host.pause()
    await eventually(lambda: strategy.kinds() == ["start", "stop"], what="on_stop")

    await host.stop("shutdown")

    assert strategy.kinds() == ["start", "stop"]
    assert host.state == "stopped"


@pytest.mark.parametrize("hangs_in", ["stop", "book"])
async def test_stop_returns_after_its_timeout_when_the_strategy_hangs(hangs_in: str) -> None:
    strategy = Recorder()
    strategy.hold[hangs_in] = asyncio.Event()  # never set
    harness = Harness(strategy, stop_timeout=0.2)
    host = harness.host
    host.start()
    host.book_changed(M)
    await eventually(lambda: len(strategy.calls) == 2, what="on_start and on_book")

    loop = asyncio.get_running_loop()
    began = loop.time()
    async with asyncio.timeout(5):
        await host.stop("shutdown")

    assert loop.time() - began >= 0.2
    assert host.state == "stopped"
    assert strategy.calls[-1] == ("cancelled", hangs_in)
    assert any("did not stop within 0.2 s" in message for message in harness.lines_at("warning"))


async def test_describe_gives_name_parameters_state_and_error(harness: Harness) -> None:
    assert harness.host.describe() == {
        "name": "recorder",
        "params": {"spread": "0.02"},
        "state": "not started",
        "error": "",
    }
    harness.host.start()
    assert harness.host.describe()["state"] == "running"
