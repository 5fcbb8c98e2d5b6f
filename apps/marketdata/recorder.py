"""The recording buffer: takes applied messages on the event loop and hands them to a batch writer, losing none.

``DatabaseRecorder`` implements the trader core's ``Recorder`` port. ``record`` turns a message into a
typed row (``DeltaRow``, ``SnapshotRow``, ``GapRow``, ``HealRow``: the one definition of the layout) and
appends it to a buffer; a writer task takes batches off the buffer and writes each in one transaction off
the event loop (one crossing of the async boundary per batch): on PostgreSQL on a dedicated thread with
its own connection, on SQLite on Django's shared sync thread. Nothing is ever dropped:

- the buffer holds at most ``capacity`` rows (plus the one a caller is handing over): when it is full,
  ``record`` waits until a batch is written, so the feed reader stops reading (back-pressure);
- a failed batch (a database outage) stays in memory and is retried with back-off until it is written;
- ``flush`` returns only when every row recorded so far is in the database;
- at a shutdown deadline, ``spill`` saves the rows not yet written to a file under ``DATA_DIR`` that
  ``spill_load`` (``apps.marketdata.spill``) writes at the next start.

Times travel as integer microseconds since the Unix epoch (UTC): exact, and cheap to take on the hot path.
The rows are defined in ``apps.marketdata.rows``; the database side is ``apps.marketdata.dbwriter``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections

from apps.kalshi.backoff import Backoff
from apps.kalshi.clock import epoch_us
from apps.kalshi.feed import MarketMessage
from apps.kalshi.messages import OrderbookDelta
from apps.kalshi.tasks import STOP_TIMEOUT, cancel_and_wait
from apps.marketdata.dbwriter import DjangoBatchWriter
from apps.marketdata.rows import BatchWriter, DeltaRow, GapRow, HealRow, RecordedRow, SnapshotRow, levels_json, new_row
from apps.marketdata.spill import spill_save

logger = logging.getLogger(__name__)


WRITE_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds (seconds) of the batch write duration histogram: a batch takes milliseconds on a healthy
database and seconds when it struggles."""


@dataclass
class RecorderMetrics:
    written: int = 0
    """Rows (snapshots, deltas, gaps) committed."""
    batches: int = 0
    retries: int = 0
    """Failed batch writes that were retried."""
    write_latency_ms: float = 0.0
    """The last successful batch write."""
    max_write_latency_ms: float = 0.0
    backpressure_waits: int = 0
    """How often ``record`` had to wait for room."""
    backpressure_seconds: float = 0.0
    peak_queued: int = 0
    last_error: str = ""
    written_by_kind: dict[str, int] = field(default_factory=lambda: {"snapshots": 0, "deltas": 0, "gaps": 0})
    write_seconds: list[int] = field(default_factory=lambda: [0] * (len(WRITE_SECONDS_BUCKETS) + 1))
    """Successful batch writes by duration: one count per bucket of WRITE_SECONDS_BUCKETS, then the slower ones."""
    write_seconds_sum: float = 0.0

    def observe_write(self, seconds: float) -> None:
        """Count one successful batch write: a few comparisons per batch of up to 10,000 rows."""
        self.write_latency_ms = seconds * 1000
        self.max_write_latency_ms = max(self.max_write_latency_ms, self.write_latency_ms)
        self.write_seconds[bisect.bisect_left(WRITE_SECONDS_BUCKETS, seconds)] += 1
        self.write_seconds_sum += seconds

    def write_seconds_histogram(self) -> dict[str, float]:
        """Cumulative counts by upper bound as Prometheus names them (``"0.01"``, ..., ``"+Inf"``), and ``sum``."""
        histogram: dict[str, float] = {}
        total = 0
        for bound, count in zip([*map(str, WRITE_SECONDS_BUCKETS), "+Inf"], self.write_seconds, strict=True):
            total += count
            histogram[bound] = total
        histogram["sum"] = round(self.write_seconds_sum, 6)
        return histogram


class DatabaseRecorder:
    """The Recorder port on the database. Use from one event loop; ``close()`` it when done."""

    def __init__(
        self,
        *,
        capacity: int = 100_000,
        batch_size: int = 10_000,
        flush_interval: float = 0.25,
        quiet_interval: float = 0.05,
        writer: BatchWriter | None = None,
        using: str = "default",
        own_thread: bool | None = None,
        backoff: Backoff | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """A batch is written when it holds ``batch_size`` rows, when no row has come for ``quiet_interval``
        seconds (the end of a burst is committed at once, not an interval later), or ``flush_interval`` after
        the writer began to wait for it, whichever comes first.

        ``own_thread``: write on a dedicated thread with its own connection (default on PostgreSQL), or on
        Django's shared sync thread (default elsewhere: SQLite takes one writer at a time, so the batches
        queue up with the trader's other writes instead of contending with them for the lock)."""
        if capacity < 1 or batch_size < 1:
            raise ValueError("capacity and batch_size must be at least 1")
        self.capacity = capacity
        self.batch_size = min(batch_size, capacity)
        self.flush_interval = flush_interval
        self.quiet_interval = min(quiet_interval, flush_interval)
        self._writer: BatchWriter = writer if writer is not None else DjangoBatchWriter(using)
        # A short cap: the first write after the database is back comes within 2 s of its return.
        self._backoff = backoff or Backoff(initial=0.2, cap=2.0)
        self._wall_clock = wall_clock
        self._buffer: list[RecordedRow] = []
        """Rows not yet taken by the writer, oldest first (a list: a batch leaves it in one slice)."""
        self._inflight: list[RecordedRow] = []
        self._positions: dict[int, int] = {}
        self._rows_waiting = asyncio.Event()
        """Set when the writer should look at the buffer (rows arrived, or a flush is asked for)."""
        self._room = asyncio.Event()
        self._room.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self._flushing = 0
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._own_thread = connections[using].vendor == "postgresql" if own_thread is None else own_thread
        self._closed = False
        self._stopped = False
        self.stats = RecorderMetrics()

    # ------------------------------------------------------------------------------------------ the port

    async def record(self, session_id: int, message: MarketMessage, received_us: int) -> None:
        """Append one applied message received at ``received_us`` (Unix microseconds); waits only while the
        buffer is full (back-pressure)."""
        room = self.take(session_id, message, received_us)
        if room is not None:
            await room

    def take(self, session_id: int, message: MarketMessage, received_us: int) -> Awaitable[None] | None:
        """``record`` without a coroutine of its own (the hot path): None, or while the buffer is full an
        awaitable that returns once there is room, which the caller awaits before handing over the next."""
        position = self._positions.get(session_id, 0) + 1
        self._positions[session_id] = position
        # tuple.__new__ builds the row without the NamedTuple constructor's argument handling (3x cheaper).
        if isinstance(message, OrderbookDelta):
            row: RecordedRow = new_row(
                DeltaRow,
                (
                    session_id,
                    position,
                    message.market_ticker,
                    message.sid,
                    message.seq,
                    message.side,
                    message.price,
                    message.delta,
                    message.ts_ms,
                    received_us,
                ),
            )
        else:
            row = SnapshotRow(
                session_id,
                position,
                message.market_ticker,
                message.sid,
                message.seq,
                message.id,
                levels_json(message.yes),
                levels_json(message.no),
                received_us,
            )
        return self._wait_for_room() if self._put(row) else None

    async def record_gap(
        self,
        session_id: int,
        *,
        kind: str,
        sid: int | None,
        expected_seq: int | None,
        received_seq: int | None,
        markets: Sequence[str],
        detected_at: datetime,
    ) -> None:
        position = self._next_position(session_id)
        row = GapRow(session_id, position, kind, sid, expected_seq, received_seq, tuple(markets), epoch_us(detected_at))
        await self._append(row)

    async def mark_healed(self, session_id: int, *, healed_at: datetime) -> None:
        # A heal takes no position of its own: it applies to the gaps recorded before the next row.
        position = self._positions.get(session_id, 0) + 1
        await self._append(HealRow(session_id, position, epoch_us(healed_at)))

    async def flush(self) -> None:
        """Return once every row recorded so far is committed (retrying through outages until then)."""
        if not self.queued:
            return
        self._ensure_started()
        self._flushing += 1
        try:
            self._rows_waiting.set()
            while self.queued:
                await self._drained.wait()
        finally:
            self._flushing -= 1

    def metrics(self) -> dict[str, Any]:
        s = self.stats
        return {
            "queued": self.queued,
            "capacity": self.capacity,
            "written": s.written,
            "written_snapshots": s.written_by_kind["snapshots"],
            "written_deltas": s.written_by_kind["deltas"],
            "written_gaps": s.written_by_kind["gaps"],
            "batches": s.batches,
            "write_latency_ms": round(s.write_latency_ms, 1),
            "max_write_latency_ms": round(s.max_write_latency_ms, 1),
            "write_seconds": s.write_seconds_histogram(),
            "retries": s.retries,
            "oldest_unwritten_age": self.oldest_unwritten_age(),
            "backpressure_waits": s.backpressure_waits,
            "backpressure_seconds": round(s.backpressure_seconds, 3),
            "peak_queued": max(s.peak_queued, self.queued),
            "last_error": s.last_error,
        }

    # ------------------------------------------------------------------------------------------ lifecycle

    async def close(self, *, give_up_after: float | None = None, spill_dir: Path | None = None) -> None:
        """Flush, stop the writer task and release the writer thread and its database connection.

        With ``give_up_after`` (s), rows still unwritten by then are spilled to ``spill_dir`` (or, without
        one, reported as lost) instead of waiting for the database any longer.
        """
        if self._stopped:
            return
        try:
            if not self._closed:
                try:
                    await asyncio.wait_for(self.flush(), timeout=give_up_after)
                except TimeoutError:
                    if spill_dir is not None:
                        count, path = self.spill(spill_dir)
                        logger.error("recording: %d row(s) not written in time; saved to %s", count, path)
                    else:
                        logger.error("recording: %d row(s) could not be written and are lost", self.queued)
        finally:
            self._closed = self._stopped = True
            if self._task is not None:
                if await cancel_and_wait([self._task]):
                    logger.error("recording: the writer task did not stop within %g s", STOP_TIMEOUT)
                self._task = None
            if self._executor is not None:
                loop = asyncio.get_running_loop()
                # The writer thread may still be stuck on a dead database: do not wait for it long.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(loop.run_in_executor(self._executor, self._writer.close), timeout=2.0)
                self._executor.shutdown(wait=False)
                self._executor = None

    def spill(self, directory: Path) -> tuple[int, Path | None]:
        """Stop writing and save every row not yet committed to a JSON-lines file in ``directory``.

        The batch being written is saved too: if its write still commits, ``spill_load`` skips its rows.
        Returns how many rows and the file (None when there were none).
        """
        rows = [*self._inflight, *self._buffer]
        self._note_peak()
        self._closed = True
        self._inflight = []
        self._buffer.clear()
        if self._task is not None:
            self._task.cancel()
        self._room.set()
        self._drained.set()
        if not rows:
            return 0, None
        return len(rows), spill_save(rows, directory)

    @property
    def queued(self) -> int:
        """Rows recorded but not yet committed: buffered plus the batch being written."""
        return len(self._buffer) + len(self._inflight)

    def oldest_unwritten_age(self) -> float | None:
        """Seconds since the oldest row not yet committed was received (None when all are written)."""
        oldest = self._inflight[0] if self._inflight else (self._buffer[0] if self._buffer else None)
        if oldest is None:
            return None
        # Every row kind ends with its time (Unix microseconds).
        return round(max(0, epoch_us(self._wall_clock()) - oldest[-1]) / 1_000_000, 3)

    # ------------------------------------------------------------------------------------------ internals

    def _next_position(self, session_id: int) -> int:
        position = self._positions.get(session_id, 0) + 1
        self._positions[session_id] = position
        return position

    async def _append(self, row: RecordedRow) -> None:
        if self._put(row):
            await self._wait_for_room()

    def _put(self, row: RecordedRow) -> bool:
        """Take ``row`` into the buffer; True when the buffer is full and the caller must wait for room.

        Plain code rather than a coroutine: ``record`` runs it once per message and awaits only when full.
        """
        if self._closed:
            raise RuntimeError("the recorder is closed")
        # The row is taken before any waiting, so a caller cancelled while it waits loses nothing.
        buffer = self._buffer
        buffer.append(row)
        waiting = len(buffer)
        if waiting == 1 or waiting >= self.batch_size:
            # The first row since the writer last took a batch (or a full batch): wake the writer.
            self._drained.clear()
            if self._task is None:
                self._ensure_started()
            self._rows_waiting.set()
        # The peak is noted where the queue shrinks (it only grows in between), not here on the hot path.
        return waiting + len(self._inflight) >= self.capacity

    def _note_peak(self) -> None:
        """Note the queue's size as its peak if it is larger: called before the queue shrinks."""
        if self.queued > self.stats.peak_queued:
            self.stats.peak_queued = self.queued

    async def _wait_for_room(self) -> None:
        self._room.clear()
        stats = self.stats
        stats.backpressure_waits += 1
        started = time.monotonic()
        try:
            while self.queued >= self.capacity:
                await self._room.wait()
        finally:
            stats.backpressure_seconds += time.monotonic() - started

    def _ensure_started(self) -> None:
        if self._task is None or self._task.done():
            if self._executor is None and self._own_thread:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")
            self._task = asyncio.get_running_loop().create_task(self._write_loop(), name="recorder:writer")

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._buffer:
                self._rows_waiting.clear()
                await self._rows_waiting.wait()
                continue
            if len(self._buffer) < self.batch_size and not self._flushing:
                await self._fill_batch(loop)
            buffer = self._buffer
            self._inflight = buffer[: self.batch_size]
            del buffer[: self.batch_size]
            await self._write_inflight(loop)
            self._note_peak()
            self._inflight = []
            if self.queued < self.capacity:
                self._room.set()
            if not self.queued:
                self._drained.set()

    async def _fill_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let a batch fill up while rows keep coming (one transaction per many rows, not per row); return
        when it is full or a flush is asked for, when the rows stop for ``quiet_interval``, or at the latest
        ``flush_interval`` from now."""
        deadline = loop.time() + self.flush_interval
        seen = len(self._buffer)
        while True:
            self._rows_waiting.clear()
            timeout = min(self.quiet_interval, deadline - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._rows_waiting.wait(), timeout=timeout)
            waiting = len(self._buffer)
            if self._rows_waiting.is_set() or waiting == seen or loop.time() >= deadline:
                return
            seen = waiting

    async def _write_inflight(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write the in-flight batch, retrying with back-off until it is committed."""
        batch = self._inflight
        failures = 0
        while True:
            started = time.monotonic()
            try:
                more_waiting = bool(self._buffer)
                if self._executor is not None:
                    counts = await loop.run_in_executor(self._executor, self._write_and_count, batch, more_waiting)
                else:
                    write = sync_to_async(self._write_and_count, thread_sensitive=True)
                    counts = await write(batch, more_waiting)
            except Exception as exc:
                self.stats.retries += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}".strip()[:500]
                delay = self._backoff.next_delay()
                failures += 1
                # One line per outage, not one per retry: an outage of minutes would flood the log.
                logger.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "recording: writing %d rows failed (%s); retrying every %.1f s or less until written",
                    len(batch),
                    self.stats.last_error,
                    self._backoff.cap,
                )
                await asyncio.sleep(delay)
                continue
            if failures:
                logger.warning("recording: %d rows written after %d failed attempt(s)", len(batch), failures)
            self._backoff.reset()
            s = self.stats
            s.observe_write(time.monotonic() - started)
            s.batches += 1
            written = s.written_by_kind
            written["deltas"] += counts[DeltaRow]
            written["snapshots"] += counts[SnapshotRow]
            written["gaps"] += counts[GapRow]
            s.written = sum(written.values())
            return

    def _write_and_count(self, batch: list[RecordedRow], more_waiting: bool) -> Counter[type]:
        """On the writer's thread: write the batch, then count its rows by kind for the metrics."""
        self._writer(batch, more_waiting=more_waiting)
        return Counter(map(type, batch))
