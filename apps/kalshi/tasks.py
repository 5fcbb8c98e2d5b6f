"""Stopping background tasks within a bound, even when one of them loses its cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

STOP_TIMEOUT = 5.0
"""Seconds a shutdown waits for its background tasks before it leaves them behind."""
RECANCEL_AFTER = 0.5


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]],
    *,
    timeout: float = STOP_TIMEOUT,  # noqa: ASYNC109 (bounds the wait for other tasks, not this call)
    recancel_after: float = RECANCEL_AFTER,
) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait for them to end, for at most ``timeout`` seconds; returns those still running.

    One cancellation is not always enough. On Python 3.11 ``asyncio.wait_for`` returns normally when it is
    cancelled just as the operation it awaits completes, so the cancellation is lost and the task carries on;
    redis-py awaits every socket write that way, so a channel-layer receive or send cancelled at the wrong
    moment keeps running. A task still running after ``recancel_after`` seconds is therefore cancelled again.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        done, pending = await asyncio.wait(pending, timeout=min(recancel_after, remaining))
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: the owner logged it, or it ended while being stopped
    return pending
