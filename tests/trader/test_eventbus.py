from __future__ import annotations

import asyncio

from apps.trader.core.eventbus import Event, EventBus
from tests.support import eventually


def event(n: int) -> Event:
    return Event("console", {"n": n})


async def test_a_slow_subscriber_delays_no_other_and_never_the_publisher() -> None:
    bus = EventBus(callback_timeout=5.0)
    fast: list[int] = []
    release = asyncio.Event()

    async def slow(e: Event) -> None:
        await release.wait()

    async def quick(e: Event) -> None:
        fast.append(e.data["n"])

    bus.subscribe("slow", slow, queue_size=10)
    bus.subscribe("fast", quick, queue_size=1000)
    for n in range(100):
        bus.emit(event(n))  # a plain call: nothing to await, so it cannot block the publisher
    # Every event was queued (or made way) before any subscriber ran: the publisher never waited for one.
    assert fast == []
    assert bus.metrics()["subscribers"]["slow"]["dropped"] == 90
    await eventually(lambda: len(fast) == 100, seconds=2.0, what="every event to the fast subscriber")
    assert fast == list(range(100))
    metrics = bus.metrics()["subscribers"]
    assert metrics["slow"]["dropped"] == 90  # its queue holds ten; the oldest of the rest made way
    assert metrics["fast"]["dropped"] == 0
    release.set()
    await bus.close()


async def test_errors_and_timeouts_are_counted_per_subscriber() -> None:
    bus = EventBus(callback_timeout=0.05, failure_threshold=100)

    async def broken(e: Event) -> None:
        raise RuntimeError("boom")

    async def stuck(e: Event) -> None:
        await asyncio.Event().wait()  # never answers: only the callback timeout ends it

    bus.subscribe("broken", broken)
    bus.subscribe("stuck", stuck)
    for n in range(3):
        bus.emit(event(n))
    await bus.drain(timeout=2.0)
    subscribers = bus.metrics()["subscribers"]
    assert subscribers["broken"]["errors"] == 3
    assert subscribers["stuck"]["timeouts"] == 3
    await bus.close()


async def test_a_subscriber_that_keeps_failing_is_switched_off_then_retried() -> None:
    now = [0.0]
    bus = EventBus(failure_threshold=3, cooldown=30.0, clock=lambda: now[0])
    calls: list[int] = []
    healthy = False

    async def flaky(e: Event) -> None:
        calls.append(e.data["n"])
        if not healthy:
            raise RuntimeError("down")

    bus.subscribe("flaky", flaky)
    for n in range(3):
        bus.emit(event(n))
    await bus.drain()
    assert bus.metrics()["subscribers"]["flaky"]["disabled"] is True
    bus.emit(event(3))  # during the cool-down: dropped, not delivered
    await bus.drain()
    assert calls == [0, 1, 2]
    healthy = True
    now[0] = 31.0
    bus.emit(event(4))
    await bus.drain()
    flaky_metrics = bus.metrics()["subscribers"]["flaky"]
    assert calls == [0, 1, 2, 4]
    assert flaky_metrics["disabled"] is False
    assert flaky_metrics["disabled_count"] == 1
    assert flaky_metrics["delivered"] == 1
    await bus.close()


async def test_subscribers_can_choose_event_kinds() -> None:
    bus = EventBus()
    seen: list[str] = []

    async def only_status(e: Event) -> None:
        seen.append(e.kind)

    bus.subscribe("status", only_status, kinds={"trader_status"})
    bus.emit(Event("console", {}))
    bus.emit(Event("trader_status", {}))
    await bus.drain()
    assert seen == ["trader_status"]
    await bus.close()


async def test_close_ends_a_subscriber_that_lost_its_cancellation() -> None:
    """The broadcaster's group_send is a redis-py write: cancelled just as it completes, asyncio.wait_for on
    Python 3.11 returns instead of raising, and a close that cancelled once waited for the subscriber forever."""
    bus = EventBus(callback_timeout=60.0)  # longer than the test waits: only close() may end the callback
    write: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    sending = asyncio.Event()
    ended = asyncio.Event()

    async def broadcaster(event: Event) -> None:
        try:
            sending.set()
            await asyncio.wait_for(write, timeout=60)
            await asyncio.Event().wait()  # the next send, which never completes
        finally:
            ended.set()

    bus.subscribe("layer", broadcaster)
    bus.emit(event(1))
    await sending.wait()
    write.set_result(None)  # completes in the same loop iteration as the cancellation in close()
    closing = asyncio.create_task(bus.close())
    done, _ = await asyncio.wait({closing}, timeout=10)  # a failure, not a hung suite
    try:
        assert closing in done
        assert ended.is_set()
    finally:
        closing.cancel()
