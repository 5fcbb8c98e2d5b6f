"""The recording path: a bounded, batched, lossless writer of snapshots, deltas and gaps.

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
  ``spill_load`` writes at the next start.

Times travel as integer microseconds since the Unix epoch (UTC): exact, and cheap to take on the hot
path; they become ``timestamptz`` only in the database. PostgreSQL gets snapshots and deltas through
psycopg 3's binary ``COPY``; SQLite through ``executemany`` of one prepared INSERT per table on the raw
connection, inside the batch's transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple, Protocol, cast

import orjson
from asgiref.sync import sync_to_async
from django.db import connections, transaction

from apps.kalshi.backoff import Backoff
from apps.kalshi.clock import epoch_us, from_epoch_us
from apps.kalshi.feed import MarketMessage
from apps.kalshi.messages import Level, OrderbookDelta
from apps.kalshi.tasks import STOP_TIMEOUT, cancel_and_wait
from apps.marketdata.models import RecordedDelta, RecordedGap, RecordedMarket, RecordedSnapshot

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- rows
# Each row's fields are its table's columns, in order (a ``*_us`` field is the ``*_at`` column).


class DeltaRow(NamedTuple):
    session_id: int
    position: int
    market_ticker: str
    sid: int
    seq: int
    side: str
    price: int
    delta: int
    ts_ms: int | None
    received_us: int


class SnapshotRow(NamedTuple):
    session_id: int
    position: int
    market_ticker: str
    sid: int
    seq: int
    command_id: int | None
    yes: str
    """The levels as the column holds them: JSON text ``[[price, size], ...]`` in units. Text rather than
    tuples: a 10,000-market start buffers 10,000 snapshots, at a third of the memory, and the writer
    passes it on as it is."""
    no: str
    received_us: int


class GapRow(NamedTuple):
    session_id: int
    position: int
    kind: str
    sid: int | None
    expected_seq: int | None
    received_seq: int | None
    markets: tuple[str, ...]
    detected_us: int


class HealRow(NamedTuple):
    """The gaps of the session recorded before ``position`` are healed (a heal takes no position itself)."""

    session_id: int
    position: int
    healed_us: int


RecordedRow = DeltaRow | SnapshotRow | GapRow | HealRow
ROW_KINDS: dict[str, type[RecordedRow]] = {"snapshot": SnapshotRow, "delta": DeltaRow, "gap": GapRow, "heal": HealRow}
"""Kind names, as spill files and metrics write them."""
_KIND_NAMES = {cls: name for name, cls in ROW_KINDS.items()}


def _columns(row_type: type[tuple[Any, ...]]) -> str:
    fields: tuple[str, ...] = row_type._fields  # type: ignore[attr-defined]
    return ", ".join(f"{name[:-3]}_at" if name.endswith("_us") else name for name in fields)


_new_row = cast(Callable[[type[DeltaRow], tuple[Any, ...]], DeltaRow], tuple.__new__)


class BatchWriter(Protocol):
    """Writes one batch of rows, in order, in one transaction; raises when it could not. Runs on a thread."""

    def __call__(self, rows: Sequence[RecordedRow], *, more_waiting: bool = False) -> None:
        """``more_waiting``: more rows are queued behind this batch (the writer may defer bookkeeping)."""

    def close(self) -> None:
        """Finish deferred work and release the thread's database connection."""


# ---------------------------------------------------------------------------------------------- writers

_TIMESTAMPTZ_OID = 1184
_POSTGRES_EPOCH_US = 946_684_800_000_000
"""2000-01-01 UTC, where PostgreSQL's binary timestamps count from, in Unix microseconds."""
_pack_int8 = struct.Struct(">q").pack

# Binary COPY needs each column's exact type.
_DELTA_TYPES = ("int8", "int8", "text", "int4", "int8", "text", "int4", "int8", "int8", "timestamptz")
_SNAPSHOT_TYPES = ("int8", "int8", "text", "int4", "int8", "int8", "jsonb", "jsonb", "timestamptz")


def _sqlite_timestamp(param: int) -> str:
    """SQL turning parameter ``param`` (Unix microseconds) into the text Django stores a datetime as in
    SQLite ("2026-11-24 09:30:00.010000", no fraction when it is zero), inside SQLite itself."""
    return (
        f"datetime(?{param} / 1000000, 'unixepoch') || "
        f"CASE WHEN ?{param} % 1000000 THEN printf('.%06d', ?{param} % 1000000) ELSE '' END"
    )


def _sqlite_insert(table: str, row_type: type[tuple[Any, ...]]) -> str:
    count = len(row_type._fields)  # type: ignore[attr-defined]
    values = ", ".join([*(f"?{n}" for n in range(1, count)), _sqlite_timestamp(count)])
    return f"INSERT INTO {table} ({_columns(row_type)}) VALUES ({values})"


@functools.cache
def _timestamptz_dumper() -> type[Any]:
    from psycopg import pq
    from psycopg.adapt import Dumper

    class MicrosecondsDumper(Dumper):
        """Unix microseconds (an int) straight to binary ``timestamptz``: no datetime per row."""

        oid = _TIMESTAMPTZ_OID
        format = pq.Format.BINARY

        def dump(self, obj: Any) -> bytes:
            return _pack_int8(obj - _POSTGRES_EPOCH_US)

    return MicrosecondsDumper


@dataclass(slots=True)
class _SplitBatch:
    """A batch sorted by kind in one pass."""

    deltas: list[DeltaRow] = field(default_factory=list)
    snapshots: list[SnapshotRow] = field(default_factory=list)
    gaps: list[GapRow] = field(default_factory=list)
    heals: list[HealRow] = field(default_factory=list)

    @classmethod
    def of(cls, rows: Sequence[RecordedRow]) -> _SplitBatch:
        batch = cls()
        lists: dict[type, list[Any]] = {
            DeltaRow: batch.deltas,
            SnapshotRow: batch.snapshots,
            GapRow: batch.gaps,
            HealRow: batch.heals,
        }
        for row in rows:
            lists[type(row)].append(row)
        return batch


class _MarketTotals(NamedTuple):
    """A RecordedMarket upsert, in ``_MARKET_COLUMNS`` order."""

    session_id: int
    market_ticker: str
    snapshots: int
    deltas: int
    first_position: int
    last_position: int
    last_sid: int
    last_seq: int
    first_received_us: int
    last_received_us: int


_market_key = itemgetter(0, 2)
"""A recorded snapshot's or delta's (session_id, market_ticker)."""


@dataclass(slots=True)
class _Uncounted:
    """What the per-market totals do not count yet: counts per market, and each market's first and last
    row. Memory stays at two rows per market however many rows it covers; the merging runs in C."""

    deltas: Counter[tuple[int, str]] = field(default_factory=Counter)
    snapshots: Counter[tuple[int, str]] = field(default_factory=Counter)
    first: dict[tuple[int, str], DeltaRow | SnapshotRow] = field(default_factory=dict)
    last: dict[tuple[int, str], DeltaRow | SnapshotRow] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.last)

    def plus(self, deltas: list[DeltaRow], snapshots: list[SnapshotRow]) -> _Uncounted:
        """These counts followed by the rows of a batch (a new object: the batch may yet fail)."""
        if not deltas and not snapshots:
            return self
        rows: list[DeltaRow | SnapshotRow] = [*deltas, *snapshots]
        if snapshots:
            rows.sort(key=itemgetter(0, 1))  # back into recording order: (session, position)
        keys = list(map(_market_key, rows))
        added = _Uncounted(Counter(self.deltas), Counter(self.snapshots), {}, dict(self.last))
        added.deltas.update(map(_market_key, deltas))
        added.snapshots.update(map(_market_key, snapshots))
        added.last.update(zip(keys, rows, strict=True))
        added.first = dict(zip(reversed(keys), reversed(rows), strict=True))
        added.first.update(self.first)  # an earlier first row wins
        return added

    def totals(self) -> list[_MarketTotals]:
        return [
            _MarketTotals(
                market[0],
                market[1],
                self.snapshots[market],
                self.deltas[market],
                self.first[market].position,
                row.position,
                row.sid,
                row.seq,
                self.first[market].received_us,
                row.received_us,
            )
            for market, row in self.last.items()
        ]


_MARKET_COLUMNS = (
    "session_id, market_ticker, snapshots, deltas, first_position, last_position, last_sid, last_seq, "
    "first_received_at, last_received_at"
)
# Both backends share INSERT ... ON CONFLICT DO UPDATE (SQLite >= 3.24).
_MARKET_UPSERT = (
    "ON CONFLICT (session_id, market_ticker) DO UPDATE SET "
    "snapshots = {table}.snapshots + excluded.snapshots, deltas = {table}.deltas + excluded.deltas, "
    "last_position = excluded.last_position, last_sid = excluded.last_sid, last_seq = excluded.last_seq, "
    "last_received_at = excluded.last_received_at"
)
_MARKET_ARRAY_TYPES = ("int8", "text", "int8", "int8", "int8", "int8", "int4", "int8", "int8", "int8")


def _postgres_timestamp(column: str) -> str:
    """SQL turning ``column`` (Unix microseconds) into timestamptz, exactly (whole seconds, then the rest).
    Written for psycopg's placeholders, where %% is a literal %."""
    return f"to_timestamp({column} / 1000000) + ({column} %% 1000000) * interval '1 microsecond'"


CHEAP_TOTALS = 1_000
"""Markets whose totals a caught-up writer updates with any batch (a few milliseconds)."""


class DjangoBatchWriter:
    """The default BatchWriter: the Django database ``using``, through COPY on PostgreSQL.

    Each batch also updates the per-market totals (RecordedMarket) in its transaction. That update covers
    every market touched since the last one: with 10,000 markets it is as many rows as a batch itself, so
    its cost grows with the number of markets while the batches' does not. It is therefore deferred until
    it takes at most ``totals_share`` of the writer's time (judged by how long the last one took), and
    while more rows wait behind a batch, for at least ``totals_interval`` seconds too. A writer that has
    caught up writes them with its batch when they cover at most ``CHEAP_TOTALS`` markets; with more (on
    PostgreSQL the reader is often the slower side, so the writer catches up with nearly every batch)
    only as often as the share allows. On close the totals are current; only a process killed under load
    leaves them behind its last seconds of rows, and ``recount_market_totals`` rebuilds them from the rows.
    """

    def __init__(self, using: str = "default", *, totals_interval: float = 1.0, totals_share: float = 0.1) -> None:
        self.using = using
        self.totals_interval = totals_interval
        self.totals_share = totals_share
        self._uncounted = _Uncounted()
        """Committed rows the totals do not count yet."""
        self._totals_written_at = time.monotonic()
        self._totals_seconds = 0.0
        """How long the last totals update took."""

    def __call__(self, rows: Sequence[RecordedRow], *, more_waiting: bool = False) -> None:
        batch = _SplitBatch.of(rows)
        uncounted = self._uncounted.plus(batch.deltas, batch.snapshots)
        now = time.monotonic()
        totals_due = self._totals_seconds / self.totals_share
        if more_waiting:
            totals_due = max(totals_due, self.totals_interval)
        cheap = not more_waiting and len(uncounted.last) <= CHEAP_TOTALS
        write_totals = cheap or now - self._totals_written_at >= totals_due
        connection = connections[self.using]
        try:
            with transaction.atomic(using=self.using):
                if connection.vendor == "postgresql":
                    self._copy(batch)
                else:
                    self._insert(batch)
                self._gaps_and_heals(batch)
                if write_totals:
                    started = time.monotonic()
                    self._write_totals(uncounted)
                    totals_seconds = time.monotonic() - started
        except BaseException:
            # A broken connection must not be reused by the retry: the next attempt opens a fresh one.
            with contextlib.suppress(Exception):
                connection.close()
            raise
        finally:
            # With DEBUG on, Django keeps the last 9,000 statements.
            connection.queries_log.clear()
        if write_totals:
            self._uncounted = _Uncounted()
            self._totals_written_at = now
            self._totals_seconds = totals_seconds
        else:
            self._uncounted = uncounted

    def _copy(self, batch: _SplitBatch) -> None:
        if not batch.deltas and not batch.snapshots:
            return
        from psycopg.types.json import Jsonb

        with connections[self.using].cursor() as django_cursor:
            cursor = django_cursor.cursor
            cursor.adapters.register_dumper(None, _timestamptz_dumper())
            if batch.deltas:
                sql = f"COPY {RecordedDelta._meta.db_table} ({_columns(DeltaRow)}) FROM STDIN (FORMAT BINARY)"
                with cursor.copy(sql) as copy:
                    copy.set_types(list(_DELTA_TYPES))
                    write = copy.write_row
                    for row in batch.deltas:
                        write(row)
            if batch.snapshots:
                sql = f"COPY {RecordedSnapshot._meta.db_table} ({_columns(SnapshotRow)}) FROM STDIN (FORMAT BINARY)"
                with cursor.copy(sql) as copy:
                    copy.set_types(list(_SNAPSHOT_TYPES))
                    for s in batch.snapshots:
                        copy.write_row((*s[:6], Jsonb(s.yes, _as_is), Jsonb(s.no, _as_is), s.received_us))

    def _insert(self, batch: _SplitBatch) -> None:
        connection = connections[self.using]
        raw = connection.connection  # opened by the transaction around this call
        if batch.deltas:
            raw.executemany(_sqlite_insert(RecordedDelta._meta.db_table, DeltaRow), batch.deltas)
        if batch.snapshots:
            raw.executemany(_sqlite_insert(RecordedSnapshot._meta.db_table, SnapshotRow), batch.snapshots)

    def _gaps_and_heals(self, batch: _SplitBatch) -> None:
        if batch.gaps:
            RecordedGap.objects.using(self.using).bulk_create(
                [
                    RecordedGap(
                        session_id=g.session_id,
                        position=g.position,
                        kind=g.kind,
                        sid=g.sid,
                        expected_seq=g.expected_seq,
                        received_seq=g.received_seq,
                        markets=list(g.markets),
                        detected_at=from_epoch_us(g.detected_us),
                    )
                    for g in batch.gaps
                ]
            )
        for heal in batch.heals:
            RecordedGap.objects.using(self.using).filter(
                session_id=heal.session_id, position__lt=heal.position, healed_at__isnull=True
            ).update(healed_at=from_epoch_us(heal.healed_us))

    def _write_totals(self, uncounted: _Uncounted) -> None:
        if not uncounted:
            return
        totals = uncounted.totals()
        table = RecordedMarket._meta.db_table
        upsert = _MARKET_UPSERT.format(table=table)
        connection = connections[self.using]
        if connection.vendor == "postgresql":
            # One set-based statement for the whole batch (10,000 markets are 10,000 rows): the columns go
            # as arrays and unnest turns them back into rows.
            arrays = ", ".join(f"%s::{kind}[]" for kind in _MARKET_ARRAY_TYPES)
            sql = (
                f"INSERT INTO {table} ({_MARKET_COLUMNS}) SELECT t.session_id, t.market_ticker, t.snapshots, "
                "t.deltas, t.first_position, t.last_position, t.last_sid, t.last_seq, "
                f"{_postgres_timestamp('t.first_us')}, {_postgres_timestamp('t.last_us')} FROM unnest({arrays}) "
                "AS t(session_id, market_ticker, snapshots, deltas, first_position, last_position, last_sid, "
                f"last_seq, first_us, last_us) {upsert}"
            )
            from psycopg import Cursor

            # A server-side binding cursor: the arrays go in binary, not quoted into the SQL text.
            with Cursor(connection.connection) as cursor:
                cursor.execute(sql, [list(column) for column in zip(*totals, strict=True)])
        else:
            values = ", ".join([*(f"?{n}" for n in range(1, 9)), _sqlite_timestamp(9), _sqlite_timestamp(10)])
            sql = f"INSERT INTO {table} ({_MARKET_COLUMNS}) VALUES ({values}) {upsert}"
            connection.connection.executemany(sql, totals)

    def close(self) -> None:
        try:
            if self._uncounted:
                with transaction.atomic(using=self.using):
                    self._write_totals(self._uncounted)
                self._uncounted = _Uncounted()
        except Exception:
            logger.exception("recording: the per-market totals of the last second could not be written")
        finally:
            connections[self.using].close()


def levels_json(levels: Sequence[Level] | Sequence[list[int]]) -> str:
    """Levels as a snapshot row carries them: JSON text ``[[price, size], ...]`` (orjson writes tuples as
    arrays)."""
    return orjson.dumps(levels).decode()


def _as_is(text: str) -> str:
    """The JSON dumper for text that is JSON already."""
    return text


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
        self._buffer: deque[RecordedRow] = deque()
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
        position = self._positions.get(session_id, 0) + 1
        self._positions[session_id] = position
        # tuple.__new__ builds the row without the NamedTuple constructor's argument handling (3x cheaper).
        if isinstance(message, OrderbookDelta):
            row: RecordedRow = _new_row(
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
        sessions = "-".join(str(s) for s in sorted({row.session_id for row in rows}))
        path = directory / f"recording-{sessions}-{int(time.time())}.jsonl"
        with path.open("wb") as file:
            for row in rows:
                # One JSON array per line: the kind's name, then the row's fields in order.
                file.write(orjson.dumps([_KIND_NAMES[type(row)], *row]) + b"\n")
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
        # Every row kind ends with its time (Unix microseconds).
        return round(max(0, epoch_us(self._wall_clock()) - oldest[-1]) / 1_000_000, 3)

    # ------------------------------------------------------------------------------------------ internals

    def _next_position(self, session_id: int) -> int:
        position = self._positions.get(session_id, 0) + 1
        self._positions[session_id] = position
        return position

    async def _append(self, row: RecordedRow) -> None:
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
        queued = waiting + len(self._inflight)
        stats = self.stats
        if queued > stats.peak_queued:
            stats.peak_queued = queued
        if queued >= self.capacity:
            self._room.clear()
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
            elapsed_ms = (time.monotonic() - started) * 1000
            s = self.stats
            s.write_latency_ms = elapsed_ms
            s.max_write_latency_ms = max(s.max_write_latency_ms, elapsed_ms)
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


# ---------------------------------------------------------------------------------------------- spill files


def spill_load(path: Path, writer: BatchWriter | None = None, *, batch_size: int = 10_000) -> int:
    """Write the rows of a file ``DatabaseRecorder.spill`` saved, skipping any already in the database,
    then delete the file. Returns how many rows were written. Runs synchronously (a management command)."""
    writer = writer if writer is not None else DjangoBatchWriter()
    with path.open("rb") as file:
        rows = [_spilled_row(orjson.loads(line)) for line in file if line.strip()]
    written = _written_positions(rows)
    rows = [row for row in rows if type(row) is HealRow or (row.session_id, row.position) not in written]
    for start in range(0, len(rows), batch_size):
        writer(rows[start : start + batch_size])
    # The process that saved the file may have committed rows whose per-market totals it could not write.
    for session_id in sorted({row.session_id for row in rows}):
        recount_market_totals(session_id)
    path.unlink()
    return sum(1 for row in rows if type(row) is not HealRow)


def recount_market_totals(session_id: int, using: str = "default") -> int:
    """Rebuild a session's per-market totals (RecordedMarket) from its recorded rows, e.g. after its
    process died under load before writing the last ones. Returns how many markets it has."""
    snapshots, deltas = RecordedSnapshot._meta.db_table, RecordedDelta._meta.db_table
    # For each market: counts, and the first and last row by position (window functions: both backends).
    sql = f"""
        WITH rows AS (
            SELECT market_ticker, position, sid, seq, received_at, 1 AS snapshot FROM {snapshots}
            WHERE session_id = %s
            UNION ALL
            SELECT market_ticker, position, sid, seq, received_at, 0 AS snapshot FROM {deltas}
            WHERE session_id = %s
        ), ranked AS (
            SELECT rows.*,
                ROW_NUMBER() OVER (PARTITION BY market_ticker ORDER BY position) AS from_first,
                ROW_NUMBER() OVER (PARTITION BY market_ticker ORDER BY position DESC) AS from_last,
                SUM(snapshot) OVER (PARTITION BY market_ticker) AS snapshots,
                COUNT(*) OVER (PARTITION BY market_ticker) AS total
            FROM rows
        )
        SELECT last.market_ticker, last.snapshots, last.total - last.snapshots, first.position, last.position,
            last.sid, last.seq, first.received_at, last.received_at
        FROM ranked AS last JOIN ranked AS first
            ON first.market_ticker = last.market_ticker AND first.from_first = 1
        WHERE last.from_last = 1
    """
    with transaction.atomic(using=using):
        with connections[using].cursor() as cursor:
            cursor.execute(sql, [session_id, session_id])
            found = cursor.fetchall()
        markets = RecordedMarket.objects.using(using)
        markets.filter(session_id=session_id).delete()
        markets.bulk_create(
            RecordedMarket(
                session_id=session_id,
                market_ticker=ticker,
                snapshots=snapshot_count,
                deltas=delta_count,
                first_position=first_position,
                last_position=last_position,
                last_sid=last_sid,
                last_seq=last_seq,
                first_received_at=_from_database(first_received_at),
                last_received_at=_from_database(last_received_at),
            )
            for (
                ticker,
                snapshot_count,
                delta_count,
                first_position,
                last_position,
                last_sid,
                last_seq,
                first_received_at,
                last_received_at,
            ) in found
        )
    return len(found)


def _from_database(value: datetime | str) -> datetime:
    """A timestamp read through a raw cursor: aware from PostgreSQL; naive UTC (or its text) from SQLite."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_EARLIER_SPILL_KINDS: tuple[type[RecordedRow], ...] = (SnapshotRow, DeltaRow, GapRow, HealRow)
"""Files spilled before rows had kind names: a kind number first and an ISO 8601 time last."""


def _spilled_row(values: list[Any]) -> RecordedRow:
    kind = values[0]
    if isinstance(kind, int):
        fields = [*values[1:-1], epoch_us(datetime.fromisoformat(values[-1]))]
        row_type = _EARLIER_SPILL_KINDS[kind]
    else:
        fields = values[1:]
        row_type = ROW_KINDS[kind]
    row = row_type(*fields)
    if isinstance(row, GapRow):
        return row._replace(markets=tuple(row.markets))
    if isinstance(row, SnapshotRow) and not isinstance(row.yes, str):
        # Spilled before snapshot rows carried their levels as JSON text.
        return row._replace(yes=levels_json(row.yes), no=levels_json(row.no))
    return row


def _written_positions(rows: Sequence[RecordedRow]) -> set[tuple[int, int]]:
    """(session, position) of the given rows that are already in the database."""
    written: set[tuple[int, int]] = set()
    for session_id in {row.session_id for row in rows}:
        positions = [row.position for row in rows if row.session_id == session_id and type(row) is not HealRow]
        if not positions:
            continue
        span = {"session_id": session_id, "position__gte": min(positions), "position__lte": max(positions)}
        for model in (RecordedSnapshot, RecordedDelta, RecordedGap):
            found = model.objects.filter(**span).values_list("position", flat=True)
            written.update((session_id, position) for position in found)
    return written
