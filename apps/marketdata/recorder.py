"""The recording path: a bounded, batched, lossless writer of snapshots, deltas and gaps.

``DatabaseRecorder`` implements the trader core's ``Recorder`` port. ``record`` turns a message into a
plain row tuple and appends it to a buffer; a writer task takes batches off the buffer and writes each in
one transaction off the event loop (one crossing of the async boundary per batch): on PostgreSQL on a
dedicated thread with its own connection, on SQLite on Django's shared sync thread. Nothing is ever
dropped:

- the buffer holds at most ``capacity`` rows (plus the one a caller is handing over): when it is full,
  ``record`` waits until a batch is written, so the feed reader stops reading (back-pressure);
- a failed batch (a database outage) stays in memory and is retried with back-off until it is written;
- ``flush`` returns only when every row recorded so far is in the database;
- at a shutdown deadline, ``spill`` saves the rows not yet written to a file under ``DATA_DIR`` that
  ``spill_load`` writes at the next start.

PostgreSQL gets the rows through psycopg 3's binary ``COPY`` on Django's connection; other databases
(SQLite) through ``bulk_create`` inside ``transaction.atomic``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.db import connections, transaction

from apps.kalshi.backoff import Backoff
from apps.kalshi.client import MarketMessage
from apps.kalshi.messages import OrderbookDelta
from apps.marketdata.models import RecordedDelta, RecordedGap, RecordedMarket, RecordedSnapshot
from apps.trader.core.tasks import STOP_TIMEOUT, cancel_and_wait

logger = logging.getLogger(__name__)

# Row kinds: the first element of every buffered tuple.
SNAPSHOT = 0
DELTA = 1
GAP = 2
HEAL = 3

# (DELTA, session_id, position, ticker, sid, seq, side, price, delta, ts_ms, received_at)
# (SNAPSHOT, session_id, position, ticker, sid, seq, command_id, yes, no, received_at)
# (GAP, session_id, position, kind, sid, expected_seq, received_seq, markets, detected_at)
# (HEAL, session_id, position, healed_at): gaps of the session before ``position`` are healed.
Row = tuple[Any, ...]


class BatchWriter(Protocol):
    """Writes one batch of rows, in order, in one transaction; raises when it could not. Runs on a thread."""

    def __call__(self, rows: Sequence[Row]) -> None: ...

    def close(self) -> None:
        """Release the thread's database connection."""


# ---------------------------------------------------------------------------------------------- writers


# Column order matches the buffered rows (after the kind); binary COPY needs each column's exact type.
_DELTA_COLUMNS = "session_id, position, market_ticker, sid, seq, side, price, delta, ts_ms, received_at"
_DELTA_TYPES = ("int8", "int8", "text", "int4", "int8", "text", "int4", "int8", "int8", "timestamptz")
_SNAPSHOT_COLUMNS = "session_id, position, market_ticker, sid, seq, command_id, yes, no, received_at"
_SNAPSHOT_TYPES = ("int8", "int8", "text", "int4", "int8", "int8", "jsonb", "jsonb", "timestamptz")


@dataclass
class _MarketTotals:
    snapshots: int = 0
    deltas: int = 0
    first_position: int = 0
    last_position: int = 0
    last_sid: int = 0
    last_seq: int = 0
    first_received_at: datetime | None = None
    last_received_at: datetime | None = None


class DjangoBatchWriter:
    """The default BatchWriter: the Django database ``using``, through COPY on PostgreSQL."""

    def __init__(self, using: str = "default") -> None:
        self.using = using

    def __call__(self, rows: Sequence[Row]) -> None:
        snapshots = [row for row in rows if row[0] == SNAPSHOT]
        deltas = [row for row in rows if row[0] == DELTA] if len(snapshots) < len(rows) else []
        others = [row for row in rows if row[0] >= GAP] if len(snapshots) + len(deltas) < len(rows) else []
        connection = connections[self.using]
        try:
            with transaction.atomic(using=self.using):
                if connection.vendor == "postgresql":
                    self._copy(RecordedDelta._meta.db_table, _DELTA_COLUMNS, _DELTA_TYPES, deltas, jsonb=False)
                    self._copy(
                        RecordedSnapshot._meta.db_table, _SNAPSHOT_COLUMNS, _SNAPSHOT_TYPES, snapshots, jsonb=True
                    )
                else:
                    self._bulk_create(snapshots, deltas)
                self._gaps_and_heals(others)
                self._market_totals(rows)
        except BaseException:
            # A broken connection must not be reused by the retry: the next attempt opens a fresh one.
            with contextlib.suppress(Exception):
                connection.close()
            raise
        finally:
            # With DEBUG on, Django keeps the last 9,000 statements; bulk inserts would pin ~100 MB there.
            connection.queries_log.clear()

    def _copy(self, table: str, columns: str, types: tuple[str, ...], rows: list[Row], *, jsonb: bool) -> None:
        if not rows:
            return
        from psycopg.types.json import Jsonb

        sql = f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
        with connections[self.using].cursor() as cursor, cursor.cursor.copy(sql) as copy:
            copy.set_types(list(types))
            write = copy.write_row
            if jsonb:
                for row in rows:
                    write((*row[1:7], Jsonb(row[7]), Jsonb(row[8]), row[9]))
            else:
                for row in rows:
                    write(row[1:])

    def _bulk_create(self, snapshots: list[Row], deltas: list[Row]) -> None:
        if snapshots:
            RecordedSnapshot.objects.using(self.using).bulk_create(
                [
                    RecordedSnapshot(
                        session_id=r[1],
                        position=r[2],
                        market_ticker=r[3],
                        sid=r[4],
                        seq=r[5],
                        command_id=r[6],
                        yes=r[7],
                        no=r[8],
                        received_at=r[9],
                    )
                    for r in snapshots
                ]
            )
        if deltas:
            RecordedDelta.objects.using(self.using).bulk_create(
                [
                    RecordedDelta(
                        session_id=r[1],
                        position=r[2],
                        market_ticker=r[3],
                        sid=r[4],
                        seq=r[5],
                        side=r[6],
                        price=r[7],
                        delta=r[8],
                        ts_ms=r[9],
                        received_at=r[10],
                    )
                    for r in deltas
                ]
            )

    def _gaps_and_heals(self, rows: list[Row]) -> None:
        gaps = [
            RecordedGap(
                session_id=r[1],
                position=r[2],
                kind=r[3],
                sid=r[4],
                expected_seq=r[5],
                received_seq=r[6],
                markets=list(r[7]),
                detected_at=r[8],
            )
            for r in rows
            if r[0] == GAP
        ]
        if gaps:
            RecordedGap.objects.using(self.using).bulk_create(gaps)
        for r in rows:
            if r[0] == HEAL:
                RecordedGap.objects.using(self.using).filter(
                    session_id=r[1], position__lt=r[2], healed_at__isnull=True
                ).update(healed_at=r[3])

    def _market_totals(self, rows: Iterable[Row]) -> None:
        totals: dict[tuple[int, str], _MarketTotals] = {}
        for row in rows:
            kind = row[0]
            if kind > DELTA:
                continue
            key = (row[1], row[3])
            t = totals.get(key)
            if t is None:
                t = totals[key] = _MarketTotals(first_position=row[2], first_received_at=row[-1])
            if kind == DELTA:
                t.deltas += 1
            else:
                t.snapshots += 1
            t.last_position, t.last_sid, t.last_seq, t.last_received_at = row[2], row[4], row[5], row[-1]
        if not totals:
            return
        table = RecordedMarket._meta.db_table
        # One statement for both backends: PostgreSQL and SQLite (>= 3.24) share ON CONFLICT ... DO UPDATE.
        sql = (
            f"INSERT INTO {table} (session_id, market_ticker, snapshots, deltas, first_position, last_position, "
            "last_sid, last_seq, first_received_at, last_received_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (session_id, market_ticker) DO UPDATE SET "
            f"snapshots = {table}.snapshots + excluded.snapshots, deltas = {table}.deltas + excluded.deltas, "
            "last_position = excluded.last_position, last_sid = excluded.last_sid, last_seq = excluded.last_seq, "
            "last_received_at = excluded.last_received_at"
        )
        params = [
            (
                session_id,
                ticker,
                t.snapshots,
                t.deltas,
                t.first_position,
                t.last_position,
                t.last_sid,
                t.last_seq,
                t.first_received_at,
                t.last_received_at,
            )
            for (session_id, ticker), t in totals.items()
        ]
        adapt = connections[self.using].ops.adapt_datetimefield_value
        with connections[self.using].cursor() as cursor:
            cursor.executemany(sql, [(*p[:8], adapt(p[8]), adapt(p[9])) for p in params])

    def close(self) -> None:
        connections[self.using].close()


# ---------------------------------------------------------------------------------------------- recorder


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


class DatabaseRecorder:
    """The Recorder port on the database. Use from one event loop; ``close()`` it when done."""

    def __init__(
        self,
        *,
        capacity: int = 100_000,
        batch_size: int = 10_000,
        flush_interval: float = 0.25,
        writer: BatchWriter | None = None,
        using: str = "default",
        own_thread: bool | None = None,
        backoff: Backoff | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """``own_thread``: write on a dedicated thread with its own connection (default on PostgreSQL), or on
        Django's shared sync thread (default elsewhere: SQLite takes one writer at a time, so the batches
        queue up with the trader's other writes instead of contending with them for the lock)."""
        if capacity < 1 or batch_size < 1:
            raise ValueError("capacity and batch_size must be at least 1")
        self.capacity = capacity
        self.batch_size = min(batch_size, capacity)
        self.flush_interval = flush_interval
        self._writer: BatchWriter = writer if writer is not None else DjangoBatchWriter(using)
        # A short cap: the first write after the database is back comes within 2 s of its return.
        self._backoff = backoff or Backoff(initial=0.2, cap=2.0)
        self._wall_clock = wall_clock
        self._buffer: deque[Row] = deque()
        self._inflight: list[Row] = []
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

    async def record(self, session_id: int, message: MarketMessage, received_at: datetime) -> None:
        """Append one applied message; waits only while the buffer is full (back-pressure)."""
        position = self._next_position(session_id)
        if isinstance(message, OrderbookDelta):
            row: Row = (
                DELTA,
                session_id,
                position,
                message.market_ticker,
                message.sid,
                message.seq,
                message.side,
                message.price,
                message.delta,
                message.ts_ms,
                received_at,
            )
        else:
            row = (
                SNAPSHOT,
                session_id,
                position,
                message.market_ticker,
                message.sid,
                message.seq,
                message.id,
                [list(level) for level in message.yes],
                [list(level) for level in message.no],
                received_at,
            )
        await self._append(row)

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
        row = (GAP, session_id, position, kind, sid, expected_seq, received_seq, tuple(markets), detected_at)
        await self._append(row)

    async def mark_healed(self, session_id: int, *, healed_at: datetime) -> None:
        # A heal takes no position of its own: it applies to the gaps recorded before the next row.
        position = self._positions.get(session_id, 0) + 1
        await self._append((HEAL, session_id, position, healed_at))

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
            "retries": s.retries,
            "oldest_unwritten_age": self.oldest_unwritten_age(),
            "backpressure_waits": s.backpressure_waits,
            "backpressure_seconds": round(s.backpressure_seconds, 3),
            "peak_queued": s.peak_queued,
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
        self._closed = True
        self._inflight = []
        self._buffer.clear()
        if self._task is not None:
            self._task.cancel()
        self._room.set()
        self._drained.set()
        if not rows:
            return 0, None
        directory.mkdir(parents=True, exist_ok=True)
        sessions = "-".join(str(s) for s in sorted({row[1] for row in rows}))
        path = directory / f"recording-{sessions}-{int(time.time())}.jsonl"
        with path.open("w") as file:
            for row in rows:
                file.write(json.dumps([*row[:-1], row[-1].isoformat()]) + "\n")
        return len(rows), path

    @property
    def queued(self) -> int:
        """Rows recorded but not yet committed: buffered plus the batch being written."""
        return len(self._buffer) + len(self._inflight)

    def oldest_unwritten_age(self) -> float | None:
        """Seconds since the oldest row not yet committed was received (None when all are written)."""
        oldest = self._inflight[0] if self._inflight else (self._buffer[0] if self._buffer else None)
        if oldest is None:
            return None
        received_at: datetime = oldest[-1]
        return round(max(0.0, (self._wall_clock() - received_at).total_seconds()), 3)

    # ------------------------------------------------------------------------------------------ internals

    def _next_position(self, session_id: int) -> int:
        position = self._positions.get(session_id, 0) + 1
        self._positions[session_id] = position
        return position

    async def _append(self, row: Row) -> None:
        if self._closed:
            raise RuntimeError("the recorder is closed")
        # The row is taken before any waiting, so a caller cancelled while it waits loses nothing.
        self._buffer.append(row)
        self._drained.clear()
        if self._task is None:
            self._ensure_started()
        queued = len(self._buffer) + len(self._inflight)
        if queued > self.stats.peak_queued:
            self.stats.peak_queued = queued
        if len(self._buffer) >= self.batch_size or len(self._buffer) == 1:
            self._rows_waiting.set()
        if queued >= self.capacity:
            self._room.clear()
            self.stats.backpressure_waits += 1
            started = time.monotonic()
            try:
                while self.queued >= self.capacity:
                    await self._room.wait()
            finally:
                self.stats.backpressure_seconds += time.monotonic() - started

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
                # Let a batch fill up a little: one transaction per many rows, not per row.
                self._rows_waiting.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._rows_waiting.wait(), timeout=self.flush_interval)
            take = min(self.batch_size, len(self._buffer))
            popleft = self._buffer.popleft
            self._inflight = [popleft() for _ in range(take)]
            await self._write_inflight(loop)
            self._inflight = []
            if self.queued < self.capacity:
                self._room.set()
            if not self.queued:
                self._drained.set()

    async def _write_inflight(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write the in-flight batch, retrying with back-off until it is committed."""
        batch = self._inflight
        failures = 0
        while True:
            started = time.monotonic()
            try:
                if self._executor is not None:
                    await loop.run_in_executor(self._executor, self._writer, batch)
                else:
                    await sync_to_async(self._writer, thread_sensitive=True)(batch)
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
            elapsed_ms = (time.monotonic() - started) * 1000
            s = self.stats
            s.write_latency_ms = elapsed_ms
            s.max_write_latency_ms = max(s.max_write_latency_ms, elapsed_ms)
            s.batches += 1
            for row in batch:
                kind = row[0]
                if kind == DELTA:
                    s.written_by_kind["deltas"] += 1
                elif kind == SNAPSHOT:
                    s.written_by_kind["snapshots"] += 1
                elif kind == GAP:
                    s.written_by_kind["gaps"] += 1
            s.written = sum(s.written_by_kind.values())
            return


# ---------------------------------------------------------------------------------------------- spill files


def spill_load(path: Path, writer: BatchWriter | None = None, *, batch_size: int = 10_000) -> int:
    """Write the rows of a file ``DatabaseRecorder.spill`` saved, skipping any already in the database,
    then delete the file. Returns how many rows were written. Runs synchronously (a management command)."""
    writer = writer if writer is not None else DjangoBatchWriter()
    rows: list[Row] = []
    with path.open() as file:
        for line in file:
            if line.strip():
                values = json.loads(line)
                rows.append((*values[:-1], datetime.fromisoformat(values[-1])))
    written = _written_positions(rows)
    rows = [row for row in rows if row[0] == HEAL or (row[1], row[2]) not in written]
    for start in range(0, len(rows), batch_size):
        writer(rows[start : start + batch_size])
    path.unlink()
    return sum(1 for row in rows if row[0] != HEAL)


def _written_positions(rows: Sequence[Row]) -> set[tuple[int, int]]:
    """(session, position) of the given rows that are already in the database."""
    written: set[tuple[int, int]] = set()
    for session_id in {row[1] for row in rows}:
        positions = [row[2] for row in rows if row[1] == session_id and row[0] != HEAL]
        if not positions:
            continue
        span = {"session_id": session_id, "position__gte": min(positions), "position__lte": max(positions)}
        for model in (RecordedSnapshot, RecordedDelta, RecordedGap):
            found = model.objects.filter(**span).values_list("position", flat=True)
            written.update((session_id, position) for position in found)
    return written
