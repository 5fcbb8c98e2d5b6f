"""The observer path: fan events out to subscribers without ever blocking the publisher.

Each subscriber has its own bounded queue and worker task, so a slow or failing subscriber delays no
other. When a queue is full the oldest event is dropped (observers want the newest picture) and counted.
A callback that raises or runs past its timeout is counted; after ``failure_threshold`` failures in a row
the subscriber is switched off for ``cooldown`` seconds, its queue is emptied, and then it is retried.
The recording path does not go through here: it must never drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from apps.kalshi.tasks import STOP_TIMEOUT, cancel_and_wait

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    """One of state_transition, trader_status, orderbooks, console."""
    data: dict[str, Any]


Callback = Callable[[Event], Awaitable[None]]


@dataclass
class SubscriberMetrics:
    delivered: int = 0
    dropped: int = 0
    errors: int = 0
    timeouts: int = 0
    disabled_count: int = 0
    consecutive_failures: int = 0
    disabled_until: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "dropped": self.dropped,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "disabled_count": self.disabled_count,
            "disabled": self.disabled_until is not None,
        }


@dataclass
class _Subscriber:
    name: str
    callback: Callback
    queue: asyncio.Queue[Event]
    kinds: frozenset[str] | None
    metrics: SubscriberMetrics = field(default_factory=SubscriberMetrics)
    task: asyncio.Task[None] | None = None


class EventBus:
    def __init__(
        self,
        *,
        callback_timeout: float = 5.0,
        failure_threshold: int = 5,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._subscribers: dict[str, _Subscriber] = {}
        self._callback_timeout = callback_timeout
        self._failure_threshold = failure_threshold
        self._cooldown = cooldown
        self._clock = clock
        self.emitted = 0

    def subscribe(
        self, name: str, callback: Callback, *, queue_size: int = 1000, kinds: set[str] | None = None
    ) -> None:
        """Register ``callback`` under a unique ``name``; ``kinds`` limits which events it receives."""
        if name in self._subscribers:
            raise ValueError(f"a subscriber named {name!r} already exists")
        subscriber = _Subscriber(name, callback, asyncio.Queue(maxsize=queue_size), frozenset(kinds) if kinds else None)
        subscriber.task = asyncio.get_running_loop().create_task(self._deliver(subscriber), name=f"bus:{name}")
        self._subscribers[name] = subscriber

    def emit(self, event: Event) -> None:
        """Queue ``event`` for every interested subscriber. Never blocks and never raises."""
        self.emitted += 1
        now = self._clock()
        for subscriber in self._subscribers.values():
            if subscriber.kinds is not None and event.kind not in subscriber.kinds:
                continue
            metrics = subscriber.metrics
            if metrics.disabled_until is not None and now < metrics.disabled_until:
                metrics.dropped += 1
                continue
            if subscriber.queue.full():
                subscriber.queue.get_nowait()
                subscriber.queue.task_done()
                metrics.dropped += 1
            subscriber.queue.put_nowait(event)

    async def _deliver(self, subscriber: _Subscriber) -> None:
        while True:
            event = await subscriber.queue.get()
            try:
                await self._deliver_one(subscriber, event)
            finally:
                subscriber.queue.task_done()

    async def _deliver_one(self, subscriber: _Subscriber, event: Event) -> None:
        metrics = subscriber.metrics
        if metrics.disabled_until is not None:
            if self._clock() < metrics.disabled_until:
                metrics.dropped += 1
                return
            metrics.disabled_until = None  # cool-down over: try again
            logger.info("subscriber %s re-enabled after cool-down", subscriber.name)
        try:
            # asyncio.timeout, unlike wait_for on 3.11, never swallows a cancellation from close().
            async with asyncio.timeout(self._callback_timeout):
                await subscriber.callback(event)
        except TimeoutError:
            metrics.timeouts += 1
            self._failed(subscriber, f"timed out after {self._callback_timeout} s")
        except Exception as exc:
            metrics.errors += 1
            self._failed(subscriber, f"{type(exc).__name__}: {exc}")
        else:
            metrics.delivered += 1
            metrics.consecutive_failures = 0

    def _failed(self, subscriber: _Subscriber, reason: str) -> None:
        metrics = subscriber.metrics
        metrics.consecutive_failures += 1
        if metrics.consecutive_failures == 1:
            logger.warning("subscriber %s failed: %s", subscriber.name, reason)
        if metrics.consecutive_failures >= self._failure_threshold:
            metrics.disabled_until = self._clock() + self._cooldown
            metrics.disabled_count += 1
            metrics.consecutive_failures = 0
            dropped = subscriber.queue.qsize()
            while not subscriber.queue.empty():
                subscriber.queue.get_nowait()
                subscriber.queue.task_done()
            metrics.dropped += dropped
            logger.warning(
                "subscriber %s switched off for %.0f s after repeated failures (%s)",
                subscriber.name,
                self._cooldown,
                reason,
            )

    def metrics(self) -> dict[str, Any]:
        return {
            "emitted": self.emitted,
            "dropped": sum(s.metrics.dropped for s in self._subscribers.values()),
            "subscribers": {
                name: {**s.metrics.as_dict(), "queued": s.queue.qsize()} for name, s in self._subscribers.items()
            },
        }

    async def drain(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109
        """Wait until every subscriber has handled what it was given, or ``timeout`` passes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(s.queue.join() for s in self._subscribers.values())), timeout)

    async def close(self, timeout: float = STOP_TIMEOUT) -> None:  # noqa: ASYNC109
        """Stop every subscriber, waiting at most ``timeout`` seconds (a callback may lose its cancellation)."""
        tasks = [s.task for s in self._subscribers.values() if s.task is not None]
        self._subscribers.clear()
        stuck = await cancel_and_wait(tasks, timeout=timeout)
        if stuck:
            names = ", ".join(sorted(task.get_name() for task in stuck))
            logger.error("subscriber(s) %s did not stop within %g s; closing without them", names, timeout)
