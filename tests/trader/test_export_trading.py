"""exportsession --what orders|fills: one record per order as it stands or per fill, oldest first, in Kalshi's
exact strings, as JSON lines or CSV; the recording stays the default."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from apps.marketdata.export import FIELDS
from apps.trader.export import FILL_FIELDS, ORDER_FIELDS
from apps.trader.models import TradingSession
from apps.trader.services import session_start, trading_records_write
from tests.trader.trading_records import a_trading_morning, fill, placed

pytestmark = pytest.mark.django_db


def export(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("exportsession", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def traded_session() -> TradingSession:
    session = session_start(environment="sim", markets=["KXA", "KXB"], exchange_url="ws://127.0.0.1:1/x")
    trading_records_write(session_id=session.pk, records=a_trading_morning())
    taker = placed("c-3", at_ms=2000, ticker="KXB", side="ask", yes_price=5100, status="executed", order_id="ex-3")
    trading_records_write(
        session_id=session.pk,
        records=[
            taker,
            fill(
                "t-2",
                order=taker,
                at_ms=2000,
                ticker="KXB",
                side="ask",
                yes_price=5100,
                count=500,
                fee=-1_200,
                is_taker=True,
                post_position=-500,
            ),
        ],
    )
    return session


def test_orders_are_one_record_each_as_they_stand_oldest_first() -> None:
    session = traded_session()
    text, _ = export(str(session.pk), "--what", "orders")
    records = [json.loads(line) for line in text.splitlines()]
    assert all(list(record) == list(ORDER_FIELDS) for record in records)
    assert [record["client_order_id"] for record in records] == ["c-1", "c-2", "c-3"]
    assert records[0] == {
        "client_order_id": "c-1",
        "order_id": "ex-1",
        "market_ticker": "KXA",
        "book_side": "bid",
        "yes_price_dollars": "0.4500",
        "initial_count_fp": "5.00",
        "fill_count_fp": "2.00",
        "remaining_count_fp": "0.00",
        "time_in_force": "good_till_canceled",
        "status": "canceled",
        "fees_dollars": "0.003150",
        "strategy": "quoter",
        "error_code": "",
        "reason": "cancelled: kill switch",
        "created_at": "2026-12-02T14:30:05.123456Z",
        "updated_at": "2026-12-02T14:30:06.623456Z",
    }
    assert (records[1]["status"], records[1]["error_code"], records[1]["order_id"]) == ("refused", "max_position", "")
    assert records[1]["reason"] == "refused by max_position: 5.00 over the limit of 10.00"


def test_fills_are_one_record_each_in_trade_order_and_csv_says_the_same() -> None:
    session = traded_session()
    text, _ = export(str(session.pk), "--what", "fills")
    records = [json.loads(line) for line in text.splitlines()]
    assert [record["trade_id"] for record in records] == ["t-1", "t-2"]
    assert all(list(record) == list(FILL_FIELDS) for record in records)
    assert text.splitlines()[1] == (
        '{"trade_id":"t-2","order_id":"ex-3","client_order_id":"c-3","market_ticker":"KXB","book_side":"ask",'
        '"yes_price_dollars":"0.5100","count_fp":"5.00","fee_dollars":"-0.001200","is_taker":true,'
        '"post_position_fp":"-5.00","ts_ms":1796221807123,"received_at":"2026-12-02T14:30:07.124306Z"}'
    )

    table, _ = export(str(session.pk), "--what", "fills", "--format", "csv")
    rows = list(csv.reader(io.StringIO(table)))
    assert rows[0] == list(FILL_FIELDS)
    assert rows[2] == [
        "t-2",
        "ex-3",
        "c-3",
        "KXB",
        "ask",
        "0.5100",
        "5.00",
        "-0.001200",
        "true",
        "-5.00",
        "1796221807123",
        "2026-12-02T14:30:07.124306Z",
    ]
    assert rows[1][8] == "false"


def test_one_market_and_a_file(tmp_path: Path) -> None:
    session = traded_session()
    target = tmp_path / "kxb-orders.csv"
    text, err = export("latest", "--what", "orders", "--market", "KXB", "--format", "csv", "--output", str(target))
    assert text == "" and f"Wrote 1 orders of session {session.pk} to {target}" in err
    rows = list(csv.reader(io.StringIO(target.read_text())))
    assert rows[0] == list(ORDER_FIELDS)
    assert [row[0] for row in rows[1:]] == ["c-3"]


def test_progress_counts_the_records_and_the_recording_stays_the_default() -> None:
    session = traded_session()
    _, err = export(str(session.pk), "--what", "orders", "--progress")
    assert "3/3 records" in err and "100%" in err
    recording, _ = export(str(session.pk), "--format", "csv")
    assert recording.splitlines() == [",".join(FIELDS)]  # no market data recorded: the header alone
