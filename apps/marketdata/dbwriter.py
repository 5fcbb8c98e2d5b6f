"""Writes batches of recorded rows into the database, and keeps each market's totals from them.

PostgreSQL gets snapshots and deltas through psycopg 3's binary ``COPY``; SQLite through multi-row INSERTs of
a thousand rows each, on the raw connection, inside the batch's transaction.
Times arrive as integer Unix microseconds and become ``timestamptz`` only in the database.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, NamedTuple

from django.db import connections, transaction

from apps.kalshi.clock import from_epoch_us
from apps.marketdata.models import RecordedDelta, RecordedGap, RecordedMarket, RecordedSnapshot
from apps.marketdata.rows import DeltaRow, GapRow, HealRow, RecordedRow, SnapshotRow, column_names

logger = logging.getLogger(__name__)

_POSTGRES_EPOCH_US = 946_684_800_000_000
"""2000-01-01 UTC, where PostgreSQL's binary timestamps count from, in Unix microseconds."""

# Binary COPY needs each column's exact type. A binary timestamptz is an int8 of microseconds since 2000-01-01
# UTC, so the receive times go as int8, shifted: every column then has one of psycopg's C dumpers (a dumper
# of our own, in Python, cost more than the rest of the row: 2.7 against 1.3 us a delta row).
_DELTA_TYPES = ("int8", "int8", "text", "int4", "int8", "text", "int4", "int8", "int8", "int8")
_SNAPSHOT_TYPES = ("int8", "int8", "text", "int4", "int8", "int8", "jsonb", "jsonb", "int8")


def _sqlite_timestamp(value: str) -> str:
    """SQL turning ``value`` (an expression giving Unix microseconds) into the text Django stores a datetime
    as in SQLite ("2026-11-24 09:30:00.010000", no fraction when it is zero), inside SQLite itself."""
    return (
        f"datetime({value} / 1000000, 'unixepoch') || "
        f"CASE WHEN {value} % 1000000 THEN printf('.%06d', {value} % 1000000) ELSE '' END"
    )


SQLITE_ROWS_PER_STATEMENT = 1_000
"""Rows one INSERT takes at most on SQLite (fewer when the row's columns would pass SQLite's limit on
parameters): measured on 150,000 deltas, 1,000 and 3,000 cost the same, 500 a little more."""


def sqlite_insert_rows(
    raw: sqlite3.Connection,
    table: str,
    columns: str,
    rows: Sequence[Sequence[Any]],
    *,
    times: int = 1,
    upsert: str = "",
    execute: Callable[[str, list[Any]], object] | None = None,
) -> None:
    """Insert ``rows`` (tuples of ``columns``' values, the last ``times`` of them Unix microseconds) into the
    SQLite table ``table`` in multi-row INSERT statements, on the raw connection ``raw`` or through a Django
    cursor's ``execute`` (its execute wrappers and debug log then see them; written with ``%s`` for it).

    Python's sqlite3 lets go of the GIL for every step of a statement: ``executemany`` hands the GIL back
    and forth once per row, and with the feed reader busy on the event loop each hand-over waits for the
    interpreter's switch interval (measured: 0.5-7 s for 10,000 rows beside a busy thread). One statement
    of up to ``SQLITE_ROWS_PER_STATEMENT`` rows is one step, its parameters bound in C from one flat list.
    It also costs SQLite half what unpacking the rows from one JSON parameter with ``json_each`` did
    (measured: 4-5 against 9-10 us of CPU a delta row).
    """
    if not rows:
        return
    count = len(rows[0])
    per_statement = max(1, min(SQLITE_ROWS_PER_STATEMENT, raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // count))
    flatten = itertools.chain.from_iterable
    run = execute or raw.execute
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        sql = _sqlite_insert(table, columns, count, len(chunk), times, upsert, django=execute is not None)
        run(sql, list(flatten(chunk)))


def postgres_copy_upsert(
    connection: Any, staging: str, columns: str, rows: Iterable[Sequence[Any]], insert: str, params: Sequence[Any] = ()
) -> None:
    """Write ``rows`` (tuples of ``columns``, written "name type, ...") into PostgreSQL in one statement through
    COPY: into the temporary table ``staging`` (made on the connection's first use, emptied at commit), then
    ``insert`` (an INSERT ... SELECT ... FROM ``staging``, with ``params``) on the Django ``connection``, inside
    its transaction. psycopg's C dumpers take every value: 3 us of client CPU a row, where executemany took 23
    and binding the columns as arrays more still, on a thread whose GIL the feed reader needs."""
    if not connection.in_atomic_block:
        raise RuntimeError("postgres_copy_upsert needs a transaction: the staging table empties at commit")
    names = ", ".join(column.split()[0] for column in columns.split(","))
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ({columns}) ON COMMIT DELETE ROWS")
        with cursor.cursor.copy(f"COPY {staging} ({names}) FROM STDIN") as copy:
            write = copy.write_row
            for row in rows:
                write(row)
        cursor.execute(insert, params)


@functools.lru_cache(maxsize=64)
def _sqlite_insert(table: str, columns: str, count: int, rows: int, times: int, upsert: str, *, django: bool) -> str:
    """INSERT ... SELECT of ``rows`` rows of ``count`` parameters from a VALUES list, the last ``times`` of each
    row turned from Unix microseconds into Django's datetime text inside SQLite; placeholders as sqlite3 takes
    them, or (``django``) as Django's cursor does. The same text for the same shape, so sqlite3's statement
    cache prepares each shape once."""
    values = [f"column{n}" for n in range(1, count + 1)]
    values[count - times :] = [_sqlite_timestamp(value) for value in values[count - times :]]
    row = f"({', '.join('?' * count)})"
    # "WHERE true" keeps SQLite from reading an upsert's ON CONFLICT as part of the SELECT's join.
    sql = (
        f"INSERT INTO {table} ({columns}) SELECT {', '.join(values)} FROM (VALUES {', '.join([row] * rows)}) "
        f"WHERE true {upsert}"
    )
    return sql.replace("%", "%%").replace("?", "%s") if django else sql


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
_session = itemgetter(0)
_ticker = itemgetter(2)


@dataclass(slots=True)
class _SessionCounts:
    """One session's rows the totals do not count yet: counts per market, and each market's first and last
    row. Keyed by ticker alone: a string keeps its hash, a (session, ticker) tuple computes it again at
    every lookup (counting took twice as long)."""

    deltas: Counter[str] = field(default_factory=Counter)
    snapshots: Counter[str] = field(default_factory=Counter)
    first: dict[str, DeltaRow | SnapshotRow] = field(default_factory=dict)
    last: dict[str, DeltaRow | SnapshotRow] = field(default_factory=dict)

    def add(self, deltas: list[DeltaRow], snapshots: list[SnapshotRow]) -> None:
        """Count rows of this session, in place: in C, but for a Python step per market new to these counts."""
        rows: list[DeltaRow | SnapshotRow] = [*deltas, *snapshots]
        if snapshots and deltas:
            rows.sort(key=itemgetter(1))  # back into recording order
        tickers = list(map(_ticker, rows))
        self.deltas.update(map(_ticker, deltas))
        self.snapshots.update(map(_ticker, snapshots))
        self.last.update(zip(tickers, rows, strict=True))
        first = self.first
        batch_first = dict(zip(reversed(tickers), reversed(rows), strict=True))
        for ticker in batch_first.keys() - first.keys():  # an earlier first row wins
            first[ticker] = batch_first[ticker]

    def copy(self) -> _SessionCounts:
        return _SessionCounts(Counter(self.deltas), Counter(self.snapshots), dict(self.first), dict(self.last))

    def totals(self, session_id: int) -> list[_MarketTotals]:
        first, deltas, snapshots = self.first, self.deltas, self.snapshots
        return [
            _MarketTotals(
                session_id,
                ticker,
                snapshots[ticker],
                deltas[ticker],
                first[ticker].position,
                row.position,
                row.sid,
                row.seq,
                first[ticker].received_us,
                row.received_us,
            )
            for ticker, row in self.last.items()
        ]


@dataclass(slots=True)
class _Uncounted:
    """What the per-market totals do not count yet, per session (nearly always one). Memory stays at two rows
    per market however many rows it covers, and counting a batch costs in proportion to the batch, not to
    the markets counted so far."""

    sessions: dict[int, _SessionCounts] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(counts.last for counts in self.sessions.values())

    def add(self, deltas: list[DeltaRow], snapshots: list[SnapshotRow]) -> None:
        """Count the rows of a committed batch, in place."""
        sessions = set(map(_session, deltas))
        sessions.update(map(_session, snapshots))
        for session_id in sessions:
            if len(sessions) > 1:
                session_deltas = [row for row in deltas if row.session_id == session_id]
                session_snapshots = [row for row in snapshots if row.session_id == session_id]
            else:
                session_deltas, session_snapshots = deltas, snapshots
            counts = self.sessions.get(session_id)
            if counts is None:
                counts = self.sessions[session_id] = _SessionCounts()
            counts.add(session_deltas, session_snapshots)

    def plus(self, deltas: list[DeltaRow], snapshots: list[SnapshotRow]) -> _Uncounted:
        """These counts followed by the rows of a batch, as a new object (the batch may yet fail)."""
        added = _Uncounted({session_id: counts.copy() for session_id, counts in self.sessions.items()})
        added.add(deltas, snapshots)
        return added

    def markets_with(self, deltas: list[DeltaRow], snapshots: list[SnapshotRow], at_most: int) -> int:
        """How many markets these counts and a batch's rows cover together; when these counts alone cover more
        than ``at_most``, that number (the rows are not looked at)."""
        counted = sum(len(counts.last) for counts in self.sessions.values())
        if counted > at_most:
            return counted
        markets = {(session_id, ticker) for session_id, counts in self.sessions.items() for ticker in counts.last}
        return len(markets | set(map(_market_key, deltas)) | set(map(_market_key, snapshots)))

    def totals(self) -> list[_MarketTotals]:
        return [total for session_id, counts in self.sessions.items() for total in counts.totals(session_id)]


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
_MARKET_STAGING_COLUMNS = (
    "session_id int8, market_ticker text, snapshots int8, deltas int8, first_position int8, last_position int8, "
    "last_sid int4, last_seq int8, first_us int8, last_us int8"
)


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
        now = time.monotonic()
        totals_due = self._totals_seconds / self.totals_share
        if more_waiting:
            totals_due = max(totals_due, self.totals_interval)
        uncounted = self._uncounted
        cheap = not more_waiting and uncounted.markets_with(batch.deltas, batch.snapshots, CHEAP_TOTALS) <= CHEAP_TOTALS
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
                    self._write_totals(uncounted.plus(batch.deltas, batch.snapshots))
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
            uncounted.add(batch.deltas, batch.snapshots)

    def _copy(self, batch: _SplitBatch) -> None:
        if not batch.deltas and not batch.snapshots:
            return
        from psycopg.types.json import Jsonb

        with connections[self.using].cursor() as django_cursor:
            cursor = django_cursor.cursor
            epoch = _POSTGRES_EPOCH_US
            if batch.deltas:
                sql = f"COPY {RecordedDelta._meta.db_table} ({column_names(DeltaRow)}) FROM STDIN (FORMAT BINARY)"
                with cursor.copy(sql) as copy:
                    copy.set_types(list(_DELTA_TYPES))
                    write = copy.write_row
                    for row in batch.deltas:
                        write((*row[:-1], row[-1] - epoch))
            if batch.snapshots:
                sql = f"COPY {RecordedSnapshot._meta.db_table} ({column_names(SnapshotRow)}) FROM STDIN (FORMAT BINARY)"
                with cursor.copy(sql) as copy:
                    copy.set_types(list(_SNAPSHOT_TYPES))
                    for s in batch.snapshots:
                        copy.write_row((*s[:6], Jsonb(s.yes, _as_is), Jsonb(s.no, _as_is), s.received_us - epoch))

    def _insert(self, batch: _SplitBatch) -> None:
        raw = connections[self.using].connection  # opened by the transaction around this call
        sqlite_insert_rows(raw, RecordedDelta._meta.db_table, column_names(DeltaRow), batch.deltas)
        sqlite_insert_rows(raw, RecordedSnapshot._meta.db_table, column_names(SnapshotRow), batch.snapshots)

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
            # One set-based statement for the whole batch (10,000 markets are 10,000 rows).
            sql = (
                f"INSERT INTO {table} ({_MARKET_COLUMNS}) SELECT t.session_id, t.market_ticker, t.snapshots, "
                "t.deltas, t.first_position, t.last_position, t.last_sid, t.last_seq, "
                f"{_postgres_timestamp('t.first_us')}, {_postgres_timestamp('t.last_us')} "
                f"FROM market_totals_incoming AS t {upsert}"
            )
            postgres_copy_upsert(connection, "market_totals_incoming", _MARKET_STAGING_COLUMNS, totals, sql)
        else:
            sqlite_insert_rows(connection.connection, table, _MARKET_COLUMNS, totals, times=2, upsert=upsert)

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


def _as_is(text: str) -> str:
    """The JSON dumper for text that is JSON already."""
    return text


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
