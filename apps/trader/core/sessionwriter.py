"""Writes the session's rows behind the trader, so that nothing the trader does waits for the database.

Transitions are broadcast first and written after, in order; then the trading records (orders, fills,
positions), in order and in batches; of the heartbeats only the latest is kept (each one replaces the whole
status). A write that fails stays queued and is tried again every ``retry_interval`` until the database
answers; a write still running after ``slow_after`` marks the database unreachable at once, and the writer
keeps waiting for that call's real answer, so no row is ever written twice. What is still unwritten when the
trader must exit goes to a file (``spill``) that the next start writes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from apps.kalshi.tasks import STOP_TIMEOUT, cancel_and_wait
from apps.trader.core.ports import SessionStore
from apps.trader.core.statemachine import Transition
from apps.trader.core.trading.records import TradingRecord

logger = logging.getLogger(__name__)

TRADING_BATCH = 500
"""Trading records written per store call at most."""

DatabaseChange = Callable[[bool, str], None]
"""Called with (reachable, what happened) each time the database goes away or comes back."""


class SessionWriter:
    def __init__(
        self,
        store: SessionStore,
        *,
        slow_after: float = 2.0,
        retry_interval: float = 1.0,
        on_change: DatabaseChange | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.slow_after = slow_after
        self.retry_interval = retry_interval
        self._on_change = on_change
        self._monotonic = monotonic
        self.session_id: int | None = None
        self._transitions: deque[Transition] = deque()
        self._trading: deque[TradingRecord] = deque()
        self._heartbeat: dict[str, Any] | None = None
        self._end: dict[str, Any] | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.unreachable_since: float | None = None
        self.last_error = ""

    # ------------------------------------------------------------------------------------------ queueing

    def start(self, session_id: int) -> None:
        self.session_id = session_id
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="trader:session-writer")

    def transition(self, transition: Transition) -> None:
        self._transitions.append(transition)
        self._poke()

    def trading(self, record: TradingRecord) -> None:
        """Queue an order, fill or position record, written after the transitions queued before it."""
        self._trading.append(record)
        self._poke()

    def heartbeat(self, **fields: Any) -> None:
        """Queue ``SessionStore.session_heartbeat(**fields)`` (without session_id), replacing an unwritten one.

        A heartbeat carries only what changed since the one before (``tops``, and ``markets`` when the list
        changed), so what an unwritten heartbeat carried is kept in the one that replaces it.
        """
        unwritten = self._heartbeat
        if unwritten is not None:
            tops = {top["market_ticker"]: top for top in unwritten.get("tops", ())}
            tops.update((top["market_ticker"], top) for top in fields.get("tops", ()))
            fields["tops"] = list(tops.values())
            if fields.get("markets") is None:
                fields["markets"] = unwritten.get("markets")
        self._heartbeat = fields
        self._poke()

    def end(self, *, failed: bool, error: str) -> None:
        """Queue the session's closing, written after every transition and heartbeat queued before it."""
        self._end = {"failed": failed, "error": error}
        self._poke()

    @property
    def pending(self) -> int:
        """Writes queued and not yet done."""
        return self._rows_pending() + (self._heartbeat is not None) + (self._end is not None)

    def _rows_pending(self) -> int:
        return len(self._transitions) + len(self._trading)

    def status(self) -> dict[str, Any]:
        """The ``database`` block of the trader's status."""
        if self.unreachable_since is None:
            return {
                "status": "ok",
                "reason": "",
                "unreachable_for": None,
                "pending_writes": self._rows_pending(),
            }
        down_for = round(self._monotonic() - self.unreachable_since, 1)
        return {
            "status": "unreachable",
            "reason": self.unreachable_reason(),
            "unreachable_for": down_for,
            "pending_writes": self.pending,
        }

    def unreachable_reason(self) -> str:
        """'' while the database answers, else a line for health and the console."""
        if self.unreachable_since is None:
            return ""
        down_for = self._monotonic() - self.unreachable_since
        return f"database unreachable for {down_for:.0f} s ({self.last_error})"

    async def flush(self) -> None:
        """Return once everything queued so far is written (however long the database takes)."""
        while self.pending and self._task is not None:
            self._idle.clear()
            self._poke()
            await self._idle.wait()

    async def close(self) -> None:
        if self._task is not None:
            if await cancel_and_wait([self._task]):
                logger.error("the session writer did not stop within %g s; closing without it", STOP_TIMEOUT)
            self._task = None

    def spill(self, directory: Path) -> Path | None:
        """Save what could not be written to a file the next start writes; returns it (None if nothing)."""
        if self.session_id is None or not self.pending:
            return None
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"session-{self.session_id}-{int(time.time())}.json"
        document = {
            "session_id": self.session_id,
            "transitions": [t.as_event() for t in self._transitions],
            "trading": [record.as_dict() for record in self._trading],
            "heartbeat": self._heartbeat,
            "end": self._end,
        }
        path.write_text(json.dumps(document, default=str))
        return path

    # ------------------------------------------------------------------------------------------ the writer

    def _poke(self) -> None:
        self._idle.clear()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            operation = self._next()
            if operation is None:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if await self._attempt(*operation):
                continue
            # A new write does not cut the retry interval short: the database is down, not busy.
            await asyncio.sleep(self.retry_interval)

    def _next(self) -> tuple[str, Callable[[], Awaitable[None]]] | None:
        session_id = self.session_id
        assert session_id is not None
        if self._transitions:
            transition = self._transitions[0]
            return "transition", lambda: self._store.transition_record(session_id=session_id, transition=transition)
        if self._trading:
            batch = list(itertools.islice(self._trading, TRADING_BATCH))
            return "trading", lambda: self._store.trading_records(session_id=session_id, records=batch)
        if self._heartbeat is not None:
            fields = self._heartbeat
            return "heartbeat", lambda: self._store.session_heartbeat(session_id=session_id, **fields)
        if self._end is not None:
            end = self._end
            return "end", lambda: self._store.session_end(session_id=session_id, **end)
        return None

    async def _attempt(self, kind: str, write: Callable[[], Awaitable[None]]) -> bool:
        """Run one write to its real end; True when it was written (and dequeued)."""
        heartbeat, end = self._heartbeat, self._end
        # The batch a trading write takes: records queued while it runs stay for the next one.
        batched = min(len(self._trading), TRADING_BATCH)
        call = asyncio.ensure_future(write())
        try:
            done, _ = await asyncio.wait({call}, timeout=self.slow_after)
            if not done:
                self._down(f"no answer within {self.slow_after:g} s")
                await asyncio.shield(call)
            else:
                call.result()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._down(type(exc).__name__)
            logger.debug("session %s: writing the %s failed: %s", self.session_id, kind, exc)
            return False
        if kind == "transition":
            self._transitions.popleft()
        elif kind == "trading":
            for _ in range(batched):
                self._trading.popleft()
        elif kind == "heartbeat" and self._heartbeat is heartbeat:
            self._heartbeat = None
        elif kind == "heartbeat" and heartbeat is not None and self._heartbeat is not None:
            _drop_written(self._heartbeat, heartbeat)
        elif kind == "end" and self._end is end:
            self._end = None
        self._up(
            len(self._transitions) + (kind == "transition"),
            len(self._trading) + (batched if kind == "trading" else 0),
        )
        return True

    def _down(self, error: str) -> None:
        self.last_error = error
        if self.unreachable_since is None:
            self.unreachable_since = self._monotonic()
            if self._on_change is not None:
                self._on_change(False, f"database unreachable ({error})")

    def _up(self, late: int, late_trading: int) -> None:
        if self.unreachable_since is None:
            return
        down_for = self._monotonic() - self.unreachable_since
        self.unreachable_since = None
        if self._on_change is not None:
            trading = f" and {late_trading} trading record(s)" if late_trading else ""
            self._on_change(
                True, f"database reachable again after {down_for:.1f} s; {late} transition(s){trading} written late"
            )


def _drop_written(replacement: dict[str, Any], written: dict[str, Any]) -> None:
    """A heartbeat queued while ``written`` was being written took over what ``written`` carried (in case
    that write failed); it did not fail, so take back exactly those parts: a top that changed again since is
    a new dict and stays."""
    carried = {id(top) for top in written.get("tops", ())}
    replacement["tops"] = [top for top in replacement.get("tops", ()) if id(top) not in carried]
    if replacement.get("markets") is not None and replacement["markets"] is written.get("markets"):
        replacement["markets"] = None
