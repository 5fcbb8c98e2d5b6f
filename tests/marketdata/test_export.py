"""exportsession: one record per recorded message, receive order, exact strings, JSON lines or CSV."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from apps.marketdata.export import FIELDS
from tests.marketdata.conftest import delta, new_session, record_script, recorded_session, snapshot

pytestmark = pytest.mark.django_db(transaction=True)


def export(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("exportsession", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_writes_json_lines_in_receive_order_with_exact_strings() -> None:
    session = recorded_session()
    text, _ = export(str(session.pk), "--format", "jsonl")
    lines = text.splitlines()
    records = [json.loads(line) for line in lines]

    assert all(list(r) == list(FIELDS) for r in records)
    assert [(r["kind"], r["market_ticker"], r["sid"], r["seq"]) for r in records] == [
        ("snapshot", "KXA", 1, 1),
        ("snapshot", "KXB", 1, 2),
        ("delta", "KXA", 1, 3),
        ("delta", "KXB", 1, 4),
        ("delta", "KXA", 1, 5),
        ("gap", "KXA", 1, 6),
        ("gap", "KXB", 1, 6),
        ("snapshot", "KXA", 1, 9),
        ("snapshot", "KXB", 1, 10),
        ("delta", "KXA", 1, 11),
        ("gap", "KXA", 1, 12),
        ("gap", "KXB", 1, 12),
        ("snapshot", "KXA", 2, 1),
        ("snapshot", "KXB", 2, 2),
        ("delta", "KXA", 2, 3),
    ]
    assert lines[0] == (
        '{"kind":"snapshot","market_ticker":"KXA","sid":1,"seq":1,"side":null,"price_dollars":null,'
        '"delta_fp":null,"yes_dollars_fp":[["0.4100","3.00"],["0.4200","12.50"]],'
        '"no_dollars_fp":[["0.5500","20.00"]],"ts_ms":null,"received_at":"2026-11-24T09:30:00.010000Z"}'
    )
    assert lines[4] == (
        '{"kind":"delta","market_ticker":"KXA","sid":1,"seq":5,"side":"yes","price_dollars":"0.4200",'
        '"delta_fp":"-12.50","yes_dollars_fp":null,"no_dollars_fp":null,"ts_ms":1795000000003,'
        '"received_at":"2026-11-24T09:30:00.050000Z"}'
    )
    assert records[1]["yes_dollars_fp"] == [["0.0155", "100.00"]]
    assert records[1]["no_dollars_fp"] == []
    assert records[3]["price_dollars"] == "0.9800" and records[3]["delta_fp"] == "2.50"
    assert records[5] == {
        "kind": "gap",
        "market_ticker": "KXA",
        "sid": 1,
        "seq": 6,
        "side": None,
        "price_dollars": None,
        "delta_fp": None,
        "yes_dollars_fp": None,
        "no_dollars_fp": None,
        "ts_ms": None,
        "received_at": "2026-11-24T09:30:00.060000Z",
    }


def test_it_writes_csv_with_a_header_and_the_same_values() -> None:
    session = recorded_session()
    text, _ = export(str(session.pk), "--format", "csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == list(FIELDS)
    assert rows[1] == [
        "snapshot",
        "KXA",
        "1",
        "1",
        "",
        "",
        "",
        '[["0.4100","3.00"],["0.4200","12.50"]]',
        '[["0.5500","20.00"]]',
        "",
        "2026-11-24T09:30:00.010000Z",
    ]
    assert rows[4] == ["delta", "KXB", "1", "4", "no", "0.9800", "2.50", "", "", "1795000000002", rows[4][-1]]
    assert [row[0] for row in rows[1:]].count("gap") == 4
    jsonl, _ = export(str(session.pk))
    assert len(rows) - 1 == len(jsonl.splitlines())


def test_one_market_keeps_its_own_messages_and_the_gaps_that_touched_it(tmp_path: Path) -> None:
    session = recorded_session()
    target = tmp_path / "kxb.jsonl"
    text, err = export("latest", "--market", "KXB", "--output", str(target))
    assert text == ""
    assert f"Wrote 6 records of session {session.pk}" in err
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(r["kind"], r["market_ticker"], r["sid"], r["seq"]) for r in records] == [
        ("snapshot", "KXB", 1, 2),
        ("delta", "KXB", 1, 4),
        ("gap", "KXB", 1, 6),
        ("snapshot", "KXB", 1, 10),
        ("gap", "KXB", 1, 12),
        ("snapshot", "KXB", 2, 2),
    ]


def test_a_long_export_streams_in_receive_order_and_shows_progress() -> None:
    session = new_session(["KXA", "KXB"])
    script = [("message", snapshot("KXA", 1, 1, yes=[(5000, 100)])), ("message", snapshot("KXB", 1, 2))]
    for seq in range(3, 5003):
        ticker = "KXA" if seq % 3 else "KXB"
        script.append(("message", delta(ticker, 1, seq, "no", 100 * (seq % 50 + 1), 100)))
    asyncio.run(record_script(session.pk, script))

    text, err = export(str(session.pk), "--progress")
    seqs = [json.loads(line)["seq"] for line in text.splitlines()]
    assert seqs == list(range(1, 5003))
    assert "5,002/5,002 records" in err and "100%" in err


def test_it_explains_an_unknown_session() -> None:
    with pytest.raises(CommandError, match="there is no session 999"):
        export("999")
    with pytest.raises(CommandError, match="an id or 'latest'"):
        export("yesterday")
