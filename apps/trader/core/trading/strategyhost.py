"""Runs one strategy on a task of its own, so nothing it does can block the feed or the recording.

The feed, the order engine and the account tell the host what changed; the host calls the strategy back, one
callback at a time, in this order of priority: order changes and fills (every one, in order), ``on_timer``
when it is due, then ``on_book`` for the markets whose books changed. Book changes are coalesced: a market
is marked as changed (a set add), and its callback reads the top of the book at call time, so a strategy
slower than the feed sees the newest book and is called at most once per market per round.

``on_start`` and ``on_stop`` come in pairs: ``start()`` calls ``on_start`` (again after a pause), and a
pause or stop calls ``on_stop``, bounded by ``stop_timeout``. An exception in any callback fails the
strategy for good: a console line with the traceback, ``on_failed`` (the trader cancels its orders), and no
more callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from apps.trader.core.trading.records import FillRecord, OrderRecord
from apps.trader.core.trading.strategy import Strategy, StrategyContext

StrategyRunState = Literal["not started", "running", "paused", "stopped", "failed"]

STOP_TIMEOUT = 5.0
"""Seconds a pause or stop waits for the strategy's current callback and its ``on_stop``."""

MAX_PENDING_UPDATES = 10_000
"""Order changes and fills waiting for a strategy that does not keep up; past it the oldest are dropped."""


class StrategyHost:
    def __init__(
        self,
        strategy: Strategy,
        context: StrategyContext,
        *,
        on_failed: Callable[[str], Awaitable[None]],
        console: Callable[[str, str, str], None],
        monotonic: Callable[[], float] = time.monotonic,
        stop_timeout: float = STOP_TIMEOUT,
        max_pending: int = MAX_PENDING_UPDATES,
    ) -> None:
        self.strategy = strategy
        self.context = context
        self.name = strategy.display_name()
        self.state: StrategyRunState = "not started"
        self.error = ""
        """The last failure as "ExcType: message" ('' if none)."""
        self.dropped_updates = 0
        """Order changes and fills dropped because more than ``max_pending`` waited."""
        self.stop_timeout = stop_timeout
        self._on_failed = on_failed
        self._console = console
        self._monotonic = monotonic
        self._changed: set[str] = set()
        self._round: list[str] = []
        """Markets taken from ``_changed`` and not yet called back, so each gets its turn."""
        self._updates: deque[OrderRecord | FillRecord] = deque(maxlen=max_pending)
        self._wake = asyncio.Event()
        self._restart = False
        """A pause happened: the task owes the strategy an ``on_stop`` (if started) and a fresh ``on_start``."""
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    # -- what the trader calls -------------------------------------------------------------------------------

    def start(self) -> None:
        """Run the strategy: ``on_start``, then callbacks. After a pause this resumes it (``on_start`` again)."""
        if self.state == "running" or self.state in ("stopped", "failed") or self._stopping:
            return
        self.state = "running"
        self._console("info", f"strategy {self.name} running", _params_text(self.strategy))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"strategy {self.name}")
        self._wake.set()

    def pause(self) -> None:
        """Trading is not ready (reconnecting): ``on_stop``, then no callbacks until ``start()``."""
        if self.state != "running":
            return
        self.state = "paused"
        self._restart = True
        self._console("info", f"strategy {self.name} paused until trading is ready again", "")
        self._wake.set()

    async def stop(self, reason: str) -> None:
        """Stop for good: ``on_stop`` (if it had started; bounded by ``stop_timeout``), then the task ends.

        Idempotent; a second caller waits for the first one's stop. A failed strategy stays ``failed``.
        """
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self._wake.set()
        try:
            task = self._task
            if task is not None and not task.done():
                _, pending = await asyncio.wait({task}, timeout=self.stop_timeout)
                if pending:
                    self._console(
                        "warning",
                        f"strategy {self.name} did not stop within {self.stop_timeout:g} s; abandoned",
                        "",
                    )
                    task.cancel()
                    # A callback that swallows the cancellation must not hold the stop up either.
                    await asyncio.wait({task}, timeout=1.0)
            if self.state != "failed":
                self.state = "stopped"
                self._console("info", f"strategy {self.name} stopped: {reason}", "")
        finally:
            self._stopped.set()

    def book_changed(self, ticker: str) -> None:
        """The feed applied a message to ``ticker``'s book. On the feed's hot path: a set add and an event set."""
        self._changed.add(ticker)
        self._wake.set()

    def order_changed(self, order: OrderRecord) -> None:
        """One of the strategy's orders changed; each change is delivered, in order."""
        self._enqueue(order)

    def filled(self, fill: FillRecord) -> None:
        """One of the strategy's orders traded."""
        self._enqueue(fill)

    def describe(self) -> dict[str, Any]:
        """The strategy as status and the console show it."""
        return {"name": self.name, "params": self.strategy.describe(), "state": self.state, "error": self.error}

    # -- the strategy's task ---------------------------------------------------------------------------------

    def _enqueue(self, update: OrderRecord | FillRecord) -> None:
        if self.state in ("stopped", "failed") or self._stopping:
            return
        if len(self._updates) == self._updates.maxlen:
            self.dropped_updates += 1
            if self.dropped_updates == 1:
                self._console(
                    "warning",
                    f"strategy {self.name} is {self._updates.maxlen} order updates behind; dropping the oldest",
                    "",
                )
        self._updates.append(update)
        self._wake.set()

    async def _run(self) -> None:
        strategy, ctx = self.strategy, self.context
        interval = strategy.timer_interval
        started = False
        next_timer: float | None = None
        while True:
            if self._stopping or self._restart:
                self._restart = False
                if started:
                    started = False
                    if not await self._call_stop():
                        return
                if self._stopping:
                    return
            if self.state != "running":
                self._wake.clear()
                await self._wake.wait()
                continue
            if not started:
                started = True
                if not await self._call("on_start", strategy.on_start, ctx):
                    return
                next_timer = None if interval is None else self._monotonic() + interval
                continue
            if self._updates:
                update = self._updates.popleft()
                if isinstance(update, OrderRecord):
                    delivered = await self._call("on_order", strategy.on_order, ctx, update)
                else:
                    delivered = await self._call("on_fill", strategy.on_fill, ctx, update)
                if not delivered:
                    return
                continue
            now = self._monotonic()
            if next_timer is not None and interval is not None and now >= next_timer:
                if not await self._call("on_timer", strategy.on_timer, ctx):
                    return
                # A timer that fell behind (a slow callback) fires once, not once per missed interval.
                next_timer = max(next_timer + interval, self._monotonic())
                continue
            if not self._round and self._changed:
                self._round = sorted(self._changed, reverse=True)
                self._changed.clear()
            if self._round:
                ticker = self._round.pop()
                # The call reads the book now, which covers every change marked until now.
                self._changed.discard(ticker)
                top = ctx.top(ticker)
                if top is not None and not await self._call("on_book", strategy.on_book, ctx, ticker, top):
                    return
                continue
            self._wake.clear()
            if next_timer is None:
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, next_timer - now)):
                        await self._wake.wait()

    async def _call(self, callback: str, method: Callable[..., Any], *args: Any) -> bool:
        """Run one callback; False when it raised (the strategy has failed and the task must end)."""
        try:
            result = method(*args)
            # A callback written without ``async`` is called all the same.
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            await self._fail(callback, exc)
            return False
        return True

    async def _call_stop(self) -> bool:
        """``on_stop`` bounded by ``stop_timeout``; False when it raised."""
        # Within stop() its own wait is the bound (it cancels this task); a pause has no one waiting.
        bound = None if self._stopping else self.stop_timeout
        try:
            async with asyncio.timeout(bound):
                result = self.strategy.on_stop(self.context)
                if inspect.isawaitable(result):
                    await result
        except TimeoutError:
            self._console("warning", f"strategy {self.name}: on_stop took over {self.stop_timeout:g} s; abandoned", "")
        except Exception as exc:
            await self._fail("on_stop", exc)
            return False
        return True

    async def _fail(self, callback: str, exc: Exception) -> None:
        text = "".join(traceback.format_exception(exc))
        self.state = "failed"
        self.error = " ".join(f"{type(exc).__name__}: {exc}".split())
        self._updates.clear()
        self._changed.clear()
        self._round.clear()
        self._console("error", f"strategy {self.name} failed in {callback}: {self.error}; stopped", text)
        try:
            await self._on_failed(text)
        except Exception as problem:
            self._console(
                "error",
                f"strategy {self.name}: handling its failure failed: {type(problem).__name__}: {problem}",
                "".join(traceback.format_exception(problem)),
            )


def _params_text(strategy: Strategy) -> str:
    return ", ".join(f"{key}={value}" for key, value in strategy.describe().items())
