"""One market's recorded deltas read through the market index, whose blocks split a long session.

The rows are written by the recorder's own writer (COPY on PostgreSQL, INSERT on SQLite), at positions on
both sides of block boundaries, and read back through the public selectors.
"""

from __future__ import annotations

import pytest
from django.db import connection

from apps.marketdata.dbwriter import DjangoBatchWriter
from apps.marketdata.models import DELTA_BLOCK_ROWS, RecordedDelta
from apps.marketdata.rows import DeltaRow, SnapshotRow, levels_json
from apps.marketdata.selectors import book_at, price_history, recording_messages
from tests.marketdata.conftest import at_us, new_session

pytestmark = pytest.mark.django_db(transaction=True)

B = DELTA_BLOCK_ROWS
KXA_DELTAS = (3, B - 1, B, B + 1, 3 * B + 5)
"""KXA's delta positions: blocks 0, 0, 1, 1 and 3 (block 2 holds only KXB)."""


def _record() -> int:
    session = new_session()
    sid_seq = iter(range(1, 100))
    rows: list[DeltaRow | SnapshotRow] = [
        SnapshotRow(session.pk, 1, "KXA", 1, next(sid_seq), None, levels_json([(4000, 100)]), "[]", at_us(0)),
        SnapshotRow(session.pk, 2, "KXB", 1, next(sid_seq), None, "[]", "[]", at_us(0)),
    ]
    kxb_deltas = (4, B - 2, 2 * B + 7, 3 * B + 6)
    for i, position in enumerate(sorted(KXA_DELTAS + kxb_deltas)):
        ticker = "KXA" if position in KXA_DELTAS else "KXB"
        # KXA's bid at 0.4100 grows by 1.00 with each of its deltas.
        rows.append(DeltaRow(session.pk, position, ticker, 1, next(sid_seq), "yes", 4100, 100, None, at_us(i + 1)))
    writer = DjangoBatchWriter()
    try:
        writer(rows)
    finally:
        writer.close()
    return session.pk


def test_the_database_keeps_each_delta_in_its_block() -> None:
    session_id = _record()
    stored = dict(RecordedDelta.objects.filter(session_id=session_id).values_list("position", "block"))
    assert stored[B - 1] == 0 and stored[B] == 1 and stored[2 * B + 7] == 2 and stored[3 * B + 5] == 3


def test_a_market_s_messages_come_in_receive_order_across_blocks() -> None:
    session_id = _record()
    items = list(recording_messages(session_id=session_id, market_ticker="KXA"))
    assert [item.position for item in items] == [1, *KXA_DELTAS]
    assert {item.message.market_ticker for item in items} == {"KXA"}  # type: ignore[union-attr]


def test_the_book_is_rebuilt_from_deltas_in_every_block() -> None:
    session_id = _record()
    end = book_at(session_id=session_id, market_ticker="KXA")
    assert end.position == 3 * B + 5
    assert end.book.as_wire()["yes"] == [["0.4100", "5.00"], ["0.4000", "1.00"]]
    # Seq 9 is KXB's delta in block 2: KXA's book then is the one after its own seq 8, in block 1.
    at_seq = book_at(session_id=session_id, market_ticker="KXA", seq=9, sid=1)
    assert at_seq.position == B + 1
    assert at_seq.book.as_wire()["yes"] == [["0.4100", "4.00"], ["0.4000", "1.00"]]


def test_the_price_history_reads_deltas_across_blocks() -> None:
    session_id = _record()
    history = price_history(session_id=session_id, market_ticker="KXA")
    assert history["from_start"] is True and history["to_end"] is True
    assert [point[1:] for point in history["points"]] == [["0.4000", None], ["0.4100", None]]
    # Two deltas at most: the newest two (blocks 1 and 3) have no snapshot among them, so the history is
    # read forwards from the snapshot and stops short of the end.
    short = price_history(session_id=session_id, market_ticker="KXA", deltas=2)
    assert short["from_start"] is True and short["to_end"] is False


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's query plan")
def test_sqlite_answers_a_market_s_ordered_reads_from_the_index_without_sorting() -> None:
    session_id = _record()
    for newest_first in (False, True):
        for block in RecordedDelta.objects.market_blocks(session_id, "KXA", newest_first=newest_first):
            plan = block.explain()
            assert "delta_block_market_position" in plan
            assert "TEMP B-TREE" not in plan
    for rows in (
        RecordedDelta.objects.of_market(session_id, "KXA").filter(position__lt=3 * B),
        RecordedDelta.objects.of_market(session_id, "KXA", after=B),
    ):
        plan = rows[:1].explain()
        assert "delta_block_market_position" in plan
        assert "TEMP B-TREE" not in plan
