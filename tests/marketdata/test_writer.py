"""The writer: ordered, batched, bounded, and never loses a row (back-pressure, outages, shutdown)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from apps.kalshi.backoff import Backoff
from apps.kalshi.clock import epoch_us
from apps.kalshi.messages import OrderbookDelta, OrderbookSnapshot, Side
from apps.marketdata.dbwriter import (
    SQLITE_ROWS_PER_STATEMENT,
    DjangoBatchWriter,
    postgres_copy_upsert,
    recount_market_totals,
)
from apps.marketdata.models import RecordedDelta, RecordedGap, RecordedMarket
from apps.marketdata.recorder import DatabaseRecorder, RecorderMetrics
from apps.marketdata.rows import DeltaRow
from apps.marketdata.selectors import Gap
from apps.marketdata.spill import spill_load
from tests.marketdata.conftest import (
    FlakyWriter,
    GatedWriter,
    a_new_session,
    at,
    at_us,
    delta,
    new_session,
    recorded,
    recorded_session,
    snapshot,
)
from tests.support import eventually

pytestmark = pytest.mark.django_db(transaction=True)

FAST_RETRY = Backoff(initial=0.01, cap=0.02)


def deltas(count: int, ticker: str = "KXA", sid: int = 1, first_seq: int = 2) -> list[OrderbookDelta]:
    sides: tuple[Side, Side] = ("no", "yes")
    return [delta(ticker, sid, first_seq + i, sides[i % 2], 100 * (i % 90 + 1), 100 + i) for i in range(count)]


async def test_it_writes_snapshots_deltas_and_gaps_in_receive_order() -> None:
    session = await a_new_session()
    recorder = DatabaseRecorder(flush_interval=0.01)
    await recorder.record(session.pk, snapshot("KXA", 1, 1, yes=[(4200, 1250)], no=[(5500, 300)]), at_us(0))
    await recorder.record(session.pk, snapshot("KXB", 1, 2, no=[(100, 7)]), at_us(1))
    await recorder.record(session.pk, delta("KXA", 1, 3, "yes", 4300, -54_00, ts_ms=1_700_000_000_123), at_us(2))
    await recorder.record_gap(
        session.pk, kind="seq", sid=1, expected_seq=4, received_seq=6, markets=["KXA", "KXB"], detected_at=at(3)
    )
    await recorder.record(session.pk, snapshot("KXA", 1, 7, yes=[(4300, 100)], command_id=9), at_us(4))
    await recorder.record(session.pk, snapshot("KXB", 1, 8, command_id=9), at_us(5))
    await recorder.mark_healed(session.pk, healed_at=at(6))
    await recorder.close()

    items = await recorded(session.pk)
    assert [item.position for item in items] == [1, 2, 3, 4, 5, 6]
    assert [type(item.message).__name__ for item in items] == [
        "OrderbookSnapshot",
        "OrderbookSnapshot",
        "OrderbookDelta",
        "Gap",
        "OrderbookSnapshot",
        "OrderbookSnapshot",
    ]
    first = items[0].message
    assert isinstance(first, OrderbookSnapshot)
    assert (first.sid, first.seq, first.yes, first.no, first.id) == (1, 1, [(4200, 1250)], [(5500, 300)], None)
    change = items[2].message
    assert isinstance(change, OrderbookDelta)
    assert (change.side, change.price, change.delta, change.ts_ms) == ("yes", 4300, -5400, 1_700_000_000_123)
    assert items[2].received_at == at(2)
    gap = items[3].message
    assert isinstance(gap, Gap)
    assert (gap.kind, gap.sid, gap.expected_seq, gap.received_seq, gap.markets) == ("seq", 1, 4, 6, ("KXA", "KXB"))
    assert gap.healed_at == at(6)
    resync = items[4].message
    assert isinstance(resync, OrderbookSnapshot) and resync.id == 9

    totals = await sync_to_async(lambda: {m.market_ticker: m for m in RecordedMarket.objects.all()})()
    assert (totals["KXA"].snapshots, totals["KXA"].deltas, totals["KXA"].last_seq) == (2, 1, 7)
    assert (totals["KXB"].snapshots, totals["KXB"].deltas, totals["KXB"].first_position) == (2, 0, 2)
    assert recorder.metrics()["written"] == 6


async def test_it_heals_only_the_gaps_recorded_before_the_heal() -> None:
    session = await a_new_session()
    recorder = DatabaseRecorder(flush_interval=0.01)
    gap = {"kind": "seq", "sid": 1, "received_seq": 9, "markets": ["KXA"]}
    await recorder.record_gap(session.pk, expected_seq=5, detected_at=at(0), **gap)  # type: ignore[arg-type]
    await recorder.mark_healed(session.pk, healed_at=at(1))
    await recorder.record_gap(session.pk, expected_seq=12, detected_at=at(2), **gap)  # type: ignore[arg-type]
    await recorder.close()

    healed = await sync_to_async(lambda: list(RecordedGap.objects.order_by("position").values_list("healed_at")))()
    assert healed == [(at(1),), (None,)]


async def test_it_makes_the_feed_wait_when_the_buffer_is_full() -> None:
    session = await a_new_session()
    writer = GatedWriter()
    recorder = DatabaseRecorder(capacity=10, batch_size=5, flush_interval=0.01, writer=writer)
    messages = deltas(40)

    async def feed() -> None:
        for message in messages:
            await recorder.record(session.pk, message, at_us(message.seq))

    reader = asyncio.create_task(feed())
    await eventually(lambda: recorder.metrics()["backpressure_waits"] > 0)
    await asyncio.sleep(0.05)  # not a wait for anything: a window in which the reader must stay blocked
    assert not reader.done(), "the feed reader must wait while the database does not keep up"
    assert recorder.queued <= recorder.capacity
    assert recorder.metrics()["oldest_unwritten_age"] is not None
    assert recorder.metrics()["peak_queued"] == recorder.capacity  # the queue as it stands counts

    writer.gate.set()
    await asyncio.wait_for(reader, timeout=10)
    await recorder.close()

    items = await recorded(session.pk)
    assert [(item.message.sid, item.message.seq) for item in items] == [(1, m.seq) for m in messages]  # type: ignore[union-attr]
    assert max(writer.batches) <= 5
    assert recorder.metrics()["peak_queued"] == recorder.capacity  # and is kept once the queue has drained
    assert recorder.metrics()["written"] == 40
    assert recorder.metrics()["queued"] == 0


async def test_take_hands_rows_over_without_waiting_until_the_buffer_is_full() -> None:
    session = await a_new_session()
    writer = GatedWriter()
    recorder = DatabaseRecorder(capacity=10, batch_size=5, flush_interval=0.01, writer=writer)
    messages = deltas(10)
    assert [recorder.take(session.pk, m, at_us(m.seq)) for m in messages[:9]] == [None] * 9
    room = recorder.take(session.pk, messages[9], at_us(messages[9].seq))
    assert room is not None, "the tenth row fills the buffer: the caller must wait for room"
    waiting = asyncio.ensure_future(room)
    await asyncio.sleep(0.05)  # a window in which the database does not answer
    assert not waiting.done()

    writer.gate.set()
    await asyncio.wait_for(waiting, timeout=10)
    await recorder.close()
    items = await recorded(session.pk)
    assert [item.message.seq for item in items] == [m.seq for m in messages]  # type: ignore[union-attr]


async def test_a_reader_cancelled_while_it_waits_loses_nothing() -> None:
    session = await a_new_session()
    writer = GatedWriter()
    recorder = DatabaseRecorder(capacity=4, batch_size=2, flush_interval=0.01, writer=writer)
    messages = deltas(6)

    async def feed() -> None:
        for message in messages:
            await recorder.record(session.pk, message, at_us(message.seq))

    reader = asyncio.create_task(feed())
    await eventually(lambda: recorder.metrics()["backpressure_waits"] > 0)
    reader.cancel()
    handed_over = recorder.queued
    writer.gate.set()
    await recorder.close()

    items = await recorded(session.pk)
    assert len(items) == handed_over
    assert [item.position for item in items] == list(range(1, handed_over + 1))


async def test_it_retries_an_outage_with_back_off_and_loses_no_rows() -> None:
    session = await a_new_session()
    writer = FlakyWriter(failures=3)
    recorder = DatabaseRecorder(capacity=50, batch_size=10, flush_interval=0.01, writer=writer, backoff=FAST_RETRY)
    messages = deltas(25)
    for message in messages:
        await recorder.record(session.pk, message, at_us(message.seq))
    await recorder.flush()

    metrics = recorder.metrics()
    assert metrics["retries"] == 3
    assert "Connection refused" in metrics["last_error"]
    assert metrics["written"] == 25
    await recorder.close()
    items = await recorded(session.pk)
    assert [item.message.seq for item in items] == [m.seq for m in messages]  # type: ignore[union-attr]


async def test_flush_writes_everything_without_waiting_for_a_full_batch() -> None:
    session = await a_new_session()
    recorder = DatabaseRecorder(batch_size=1000, flush_interval=60.0, quiet_interval=60.0)
    for message in deltas(7):
        await recorder.record(session.pk, message, at_us(0))
    await asyncio.wait_for(recorder.flush(), timeout=5)
    assert len(await recorded(session.pk)) == 7
    await recorder.close()


async def test_the_end_of_a_burst_is_written_once_the_rows_stop_not_an_interval_later() -> None:
    session = await a_new_session()
    writer = GatedWriter()
    writer.gate.set()
    recorder = DatabaseRecorder(batch_size=1000, flush_interval=60.0, quiet_interval=0.05, writer=writer)
    burst = deltas(40)
    for message in burst[:20]:
        await recorder.record(session.pk, message, at_us(0))
    # A row every 10 ms keeps the batch open (the quiet interval is 50 ms) ...
    for message in burst[20:]:
        await asyncio.sleep(0.01)
        await recorder.record(session.pk, message, at_us(0))
    # ... and once they stop it is written within a fraction of a second, not after the 60 s flush interval.
    await eventually(lambda: recorder.stats.written == 40, seconds=5, what="the burst written")
    assert len(writer.batches) < 10, f"a batch per few rows: {writer.batches}"
    assert len(await recorded(session.pk)) == 40
    await recorder.close()


async def test_status_shows_the_age_of_the_oldest_unwritten_row() -> None:
    session = await a_new_session()
    now = [at(0)]
    writer = GatedWriter()
    recorder = DatabaseRecorder(flush_interval=0.01, writer=writer, wall_clock=lambda: now[0])
    assert recorder.metrics()["oldest_unwritten_age"] is None
    await recorder.record(session.pk, deltas(1)[0], at_us(0))
    await recorder.record(session.pk, deltas(1)[0], at_us(500))
    now[0] = at(0) + timedelta(seconds=2.5)
    metrics = recorder.metrics()
    assert metrics["queued"] == 2
    assert metrics["oldest_unwritten_age"] == 2.5
    writer.gate.set()
    await recorder.close()
    metrics = recorder.metrics()
    assert (metrics["queued"], metrics["written"], metrics["oldest_unwritten_age"]) == (0, 2, None)
    assert metrics["write_latency_ms"] > 0
    assert metrics["write_seconds"]["+Inf"] == metrics["batches"] >= 1  # every write is in the histogram


def test_write_durations_fall_in_prometheus_buckets_whose_bound_is_inclusive() -> None:
    stats = RecorderMetrics()
    for seconds in (0.001, 0.005, 0.3, 7.0):
        stats.observe_write(seconds)
    histogram = stats.write_seconds_histogram()
    assert [histogram[le] for le in ("0.005", "0.25", "0.5", "5.0", "+Inf")] == [2, 2, 3, 3, 4]
    assert histogram["sum"] == pytest.approx(7.306)
    assert (stats.write_latency_ms, stats.max_write_latency_ms) == (7000, 7000)


async def test_rows_not_written_by_the_shutdown_deadline_are_saved_and_written_at_the_next_start(tmp_path) -> None:
    session = await a_new_session()
    recorder = DatabaseRecorder(
        batch_size=10, flush_interval=0.01, writer=FlakyWriter(failures=10**9), backoff=FAST_RETRY
    )
    messages = deltas(25)
    for message in messages:
        await recorder.record(session.pk, message, at_us(message.seq))
    await recorder.record_gap(
        session.pk, kind="seq", sid=1, expected_seq=27, received_seq=30, markets=["KXA"], detected_at=at(30)
    )
    await recorder.close(give_up_after=0.2, spill_dir=tmp_path)
    [saved] = await asyncio.to_thread(lambda: list(tmp_path.iterdir()))
    assert saved.name.startswith(f"recording-{session.pk}-")
    assert recorder.metrics()["queued"] == 0
    assert await recorded(session.pk) == []

    # A batch the old process was still waiting on may have landed after all: it is not written twice.
    landed = DatabaseRecorder(flush_interval=0.01)
    for message in messages[:10]:
        await landed.record(session.pk, message, at_us(message.seq))
    await landed.close()

    assert await sync_to_async(spill_load)(saved) == 16
    items = await recorded(session.pk)
    assert [item.position for item in items] == list(range(1, 27))
    assert isinstance(items[-1].message, Gap)
    assert [item.message for item in items[:25]] == messages
    assert not await asyncio.to_thread(saved.exists)


async def test_receive_times_are_stored_exactly_and_compare_like_any_datetime() -> None:
    session = await a_new_session()
    recorder = DatabaseRecorder(flush_interval=0.01)
    times = [at(0), at(0) + timedelta(microseconds=1), at(0) + timedelta(microseconds=999_999)]
    for message, moment in zip(deltas(3), times, strict=True):
        await recorder.record(session.pk, message, epoch_us(moment))
    await recorder.close()

    assert [item.received_at for item in await recorded(session.pk)] == times

    def stored() -> tuple[int, int, tuple[object, object]]:
        rows = RecordedDelta.objects.filter(session_id=session.pk)
        market = RecordedMarket.objects.get(session_id=session.pk, market_ticker="KXA")
        return (
            rows.filter(received_at__lte=at(0)).count(),
            rows.filter(received_at__gt=times[1]).count(),
            (market.first_received_at, market.last_received_at),
        )

    assert await sync_to_async(stored)() == (1, 1, (times[0], times[2]))


async def test_a_spill_file_of_the_earlier_layout_still_loads(tmp_path) -> None:
    """Files written before rows had kind names: a kind number first, an ISO 8601 time last."""
    session = await a_new_session()
    lines = [
        [0, session.pk, 1, "KXA", 1, 1, None, [[4200, 1250]], [], at(0).isoformat()],
        [1, session.pk, 2, "KXA", 1, 2, "no", 9800, 250, 1_795_000_000_002, at(1).isoformat()],
        [2, session.pk, 3, "seq", 1, 3, 5, ["KXA"], at(2).isoformat()],
        [3, session.pk, 4, at(3).isoformat()],
    ]
    saved = tmp_path / f"recording-{session.pk}-1.jsonl"
    saved.write_text("".join(json.dumps(line) + "\n" for line in lines))

    assert await sync_to_async(spill_load)(saved) == 3
    items = await recorded(session.pk)
    assert [item.position for item in items] == [1, 2, 3]
    assert [item.received_at for item in items[:2]] == [at(0), at(1)]
    assert items[1].message == delta("KXA", 1, 2, "no", 9800, 250, ts_ms=1_795_000_000_002)
    gap = items[2].message
    assert isinstance(gap, Gap)
    assert gap.healed_at == at(3)


def _market_totals(session_id: int) -> list[tuple[object, ...]]:
    return list(
        RecordedMarket.objects.filter(session_id=session_id)
        .order_by("market_ticker")
        .values_list(
            "market_ticker",
            "snapshots",
            "deltas",
            "first_position",
            "last_position",
            "last_sid",
            "last_seq",
            "first_received_at",
            "last_received_at",
        )
    )


def _rows(session_id: int, messages: list[OrderbookDelta], first: int) -> list[DeltaRow]:
    return [
        DeltaRow(session_id, first + i, m.market_ticker, m.sid, m.seq, m.side, m.price, m.delta, None, at_us(i))
        for i, m in enumerate(messages)
    ]


def test_market_totals_wait_while_rows_queue_up_and_are_current_once_the_writer_catches_up() -> None:
    session = new_session()
    writer = DjangoBatchWriter(totals_interval=3600)
    writer(_rows(session.pk, deltas(3), 1), more_waiting=True)
    assert _market_totals(session.pk) == []
    writer(_rows(session.pk, deltas(2, ticker="KXB"), 4), more_waiting=True)
    assert _market_totals(session.pk) == []
    writer(_rows(session.pk, deltas(2), 6))
    assert _market_totals(session.pk) == [
        ("KXA", 0, 5, 1, 7, 1, 3, at(0), at(1)),
        ("KXB", 0, 2, 4, 5, 1, 3, at(0), at(1)),
    ]
    writer(_rows(session.pk, deltas(1, ticker="KXB"), 8), more_waiting=True)
    writer.close()  # what is still deferred is written on close
    assert _market_totals(session.pk)[1] == ("KXB", 0, 3, 4, 8, 1, 2, at(0), at(0))


def test_a_batch_that_fails_is_not_counted_in_the_totals_and_its_retry_is_counted_once() -> None:
    session = new_session()
    writer = DjangoBatchWriter(totals_interval=3600)
    writer(_rows(session.pk, deltas(3), 1), more_waiting=True)  # committed; totals deferred
    retried = _rows(session.pk, deltas(2, ticker="KXB"), 4)
    clashing = _rows(session.pk, deltas(1), 1)  # position 1 is taken: the whole batch rolls back
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):  # the raw drivers' errors
        writer([*retried, *clashing], more_waiting=True)
    assert RecordedDelta.objects.filter(session_id=session.pk).count() == 3
    writer(retried)  # caught up: the totals are written with this batch
    assert _market_totals(session.pk) == [
        ("KXA", 0, 3, 1, 3, 1, 4, at(0), at(2)),
        ("KXB", 0, 2, 4, 5, 1, 3, at(0), at(1)),
    ]


def test_one_batch_with_rows_of_two_sessions_counts_each_session_apart() -> None:
    ended, started = new_session(), new_session()
    writer = DjangoBatchWriter()
    writer([*_rows(ended.pk, deltas(2), 1), *_rows(started.pk, deltas(3), 1)])
    assert _market_totals(ended.pk) == [("KXA", 0, 2, 1, 2, 1, 3, at(0), at(1))]
    assert _market_totals(started.pk) == [("KXA", 0, 3, 1, 3, 1, 4, at(0), at(2))]


def test_market_totals_can_be_rebuilt_from_the_recorded_rows() -> None:
    session = recorded_session()
    written = _market_totals(session.pk)
    assert written and sum(totals[2] for totals in written) == 5  # type: ignore[misc]
    RecordedMarket.objects.filter(session_id=session.pk).update(deltas=0, last_received_at=None)
    assert recount_market_totals(session.pk) == 2
    assert _market_totals(session.pk) == written


def test_a_batch_larger_than_one_statement_is_written_whole_with_its_totals() -> None:
    session = new_session()
    count = SQLITE_ROWS_PER_STATEMENT * 2 + 7  # three statements on SQLite, the last a short one
    tickers = [f"KXM{n:04d}" for n in range(count)]  # one market a row: the totals span as many statements
    rows = [
        DeltaRow(session.pk, n + 1, ticker, 1, n + 2, "yes", 4200, 100, n if n % 2 else None, at_us(n))
        for n, ticker in enumerate(tickers)
    ]
    writer = DjangoBatchWriter()
    writer(rows)
    writer.close()

    stored = list(
        RecordedDelta.objects.filter(session_id=session.pk)
        .order_by("position")
        .values_list("position", "market_ticker", "seq", "ts_ms", "received_at")
    )
    assert stored == [(row.position, row.market_ticker, row.seq, row.ts_ms, at(n)) for n, row in enumerate(rows)]
    totals = _market_totals(session.pk)
    assert len(totals) == count
    assert totals[-1] == (tickers[-1], 0, 1, count, count, 1, count + 1, at(count - 1), at(count - 1))


def test_copy_upsert_refuses_to_run_outside_a_transaction() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL runs only: DATABASE_URL is not PostgreSQL")
    # In autocommit the staging table would be emptied before the INSERT ... SELECT read it.
    with pytest.raises(RuntimeError, match="needs a transaction"):
        postgres_copy_upsert(connection, "numbers_incoming", "n int8", [(1,)], "SELECT n FROM numbers_incoming")
