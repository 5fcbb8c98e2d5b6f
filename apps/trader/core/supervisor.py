"""Supervision of the trader's background tasks (status, books, cross-check, control listener).

A background task is meant to run for the whole session. One that raises, or returns, is a fault the
operator must see: the supervisor reports it (the coordinator turns the report into ``error`` with the
reason) and starts the task again after a back-off, so no task ever vanishes silently. Cancellation is
the only way a supervised task ends without a report; a task that ends while it is being stopped is not restarted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from apps.kalshi.backoff import Backoff
from apps.kalshi.tasks import STOP_TIMEOUT, cancel_and_wait

logger = logging.getLogger(__name__)

BackgroundTask = Callable[[], Awaitable[None]]
"""Called again for every (re)start; must run until cancelled."""

FailureHook = Callable[[str, str], None]
"""on_failure(task name, reason): called on the event loop each time a task ends on its own."""


class Supervisor:
    def __init__(
        self,
        on_failure: FailureHook,
        *,
        backoff: Callable[[], Backoff] = lambda: Backoff(initial=1.0, cap=30.0),
        stable_after: float = 60.0,
    ) -> None:
        self._on_failure = on_failure
        self._backoff = backoff
        self._stable_after = stable_after
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.failures: Counter[str] = Counter()
        """Failures per task name since start."""

    def start(self, name: str, run: BackgroundTask) -> None:
        if name in self._tasks:
            raise ValueError(f"background task {name!r} is already supervised")
        self._tasks[name] = asyncio.create_task(self._keep(name, run), name=f"trader:{name}")

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:  # noqa: ASYNC109
        """Cancel every task and wait for them to end, for at most ``timeout`` seconds (see cancel_and_wait)."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        stuck = await cancel_and_wait(tasks, timeout=timeout)
        if stuck:
            names = ", ".join(sorted(task.get_name() for task in stuck))
            logger.error("background task(s) %s did not stop within %g s; shutting down without them", names, timeout)

    async def _keep(self, name: str, run: BackgroundTask) -> None:
        backoff = self._backoff()
        while True:
            started = time.monotonic()
            try:
                await run()
                if _stopping():
                    raise asyncio.CancelledError  # it swallowed the cancellation, then returned
                reason = "it stopped by itself"
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if _stopping():
                    raise asyncio.CancelledError from exc  # it failed while being stopped: nothing to restart
                logger.exception("background task %s crashed", name)
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if time.monotonic() - started >= self._stable_after:
                backoff.reset()  # a task that ran for a good while is not in a crash loop
            self.failures[name] += 1
            delay = backoff.next_delay()
            try:
                self._on_failure(name, f"{reason}; restarting it in {delay:.1f} s")
            except Exception:
                logger.exception("reporting the failure of background task %s failed", name)
            await asyncio.sleep(delay)


def _stopping() -> bool:
    """Whether the current task has been asked to stop (its cancellation may have been swallowed below)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
