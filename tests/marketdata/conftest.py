from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError

from apps.kalshi.clock import epoch_us
from apps.kalshi.messages import OrderbookDelta, OrderbookSnapshot, Side
from apps.marketdata.dbwriter import DjangoBatchWriter
from apps.marketdata.rows import RecordedRow
from apps.marketdata.selectors import Recorded, recording_messages
from apps.trader.models import TradingSession
from apps.trader.services import session_start

T0 = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def at_us(ms: int) -> int:
    """``at(ms)`` as the recorder takes receive times: Unix microseconds."""
    return epoch_us(at(ms))


def snapshot(ticker: str, sid: int, seq: int, yes: Any = (), no: Any = (), command_id: int | None = None):
    return OrderbookSnapshot(
        sid=sid, seq=seq, market_ticker=ticker, market_id="", yes=list(yes), no=list(no), id=command_id
    )


def delta(ticker: str, sid: int, seq: int, side: Side, price: int, size: int, ts_ms: int | None = None):
    return OrderbookDelta(
        sid=sid, seq=seq, market_ticker=ticker, market_id="", price=price, delta=size, side=side, ts_ms=ts_ms
    )


def new_session(markets: Sequence[str] = ("KXA", "KXB")) -> TradingSession:
    return session_start(environment="sim", markets=list(markets), exchange_url="ws://127.0.0.1:1/trade-api/ws/v2")


async def a_new_session(markets: Sequence[str] = ("KXA", "KXB")) -> TradingSession:
    return await sync_to_async(new_session)(markets)


async def recorded(session_id: int, market: str | None = None) -> list[Recorded]:
    return await sync_to_async(lambda: list(recording_messages(session_id=session_id, market_ticker=market)))()


class GatedWriter:
    """The real writer behind a gate the test opens: a database that stops answering for a while."""

    def __init__(self) -> None:
        self.inner = DjangoBatchWriter()
        self.gate = threading.Event()
        self.batches: list[int] = []

    def __call__(self, rows: Sequence[RecordedRow], *, more_waiting: bool = False) -> None:
        self.gate.wait(timeout=30)
        self.inner(rows, more_waiting=more_waiting)
        self.batches.append(len(rows))

    def close(self) -> None:
        self.inner.close()


class FlakyWriter:
    """The real writer, failing its first ``failures`` calls the way a database outage does."""

    def __init__(self, failures: int) -> None:
        self.inner = DjangoBatchWriter()
        self.failures = failures
        self.calls = 0

    def __call__(self, rows: Sequence[RecordedRow], *, more_waiting: bool = False) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise OperationalError("could not connect to server: Connection refused")
        self.inner(rows, more_waiting=more_waiting)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(autouse=True)
async def _release_thread_connections():
    """Give back the connection sync_to_async's thread opened, so PostgreSQL can drop the test database."""
    yield
    from django.db import connections

    await sync_to_async(connections.close_all)()


@pytest.fixture(scope="session")
def sim_key_pair() -> tuple[bytes, bytes]:
    from tests import keys

    return keys.key_pair("recording")


@pytest.fixture(scope="session")
def sim_credentials():
    from tests import keys

    return keys.credentials("recording", "recording-test")


async def record_script(session_id: int, script: list[tuple[str, Any]]) -> None:
    """Record ("message", msg) / ("gap", kwargs) / ("heal", None) steps, 10 ms apart, through the real writer."""
    from apps.marketdata.recorder import DatabaseRecorder

    recorder = DatabaseRecorder(flush_interval=0.01)
    for step, (kind, value) in enumerate(script):
        when = at(10 * (step + 1))
        if kind == "message":
            await recorder.record(session_id, value, epoch_us(when))
        elif kind == "gap":
            await recorder.record_gap(session_id, detected_at=when, **value)
        else:
            await recorder.mark_healed(session_id, healed_at=when)
    await recorder.close()


# Two markets on sid 1, a seq gap healed by resync snapshots, a lost connection, then sid 2.
# KXB trades in deci-cents; sizes include fractional contracts.
SCRIPT: list[tuple[str, Any]] = [
    ("message", snapshot("KXA", 1, 1, yes=[(4100, 300), (4200, 1250)], no=[(5500, 2000)])),
    ("message", snapshot("KXB", 1, 2, yes=[(155, 10000)])),
    ("message", delta("KXA", 1, 3, "yes", 4300, 500, ts_ms=1_795_000_000_001)),
    ("message", delta("KXB", 1, 4, "no", 9800, 250, ts_ms=1_795_000_000_002)),
    ("message", delta("KXA", 1, 5, "yes", 4200, -1250, ts_ms=1_795_000_000_003)),
    ("gap", {"kind": "seq", "sid": 1, "expected_seq": 6, "received_seq": 8, "markets": ["KXA", "KXB"]}),
    ("message", snapshot("KXA", 1, 9, yes=[(4100, 300), (4300, 500)], no=[(5500, 2000)], command_id=3)),
    ("message", snapshot("KXB", 1, 10, yes=[(155, 10000)], no=[(9700, 100), (9800, 250)], command_id=3)),
    ("heal", None),
    ("message", delta("KXA", 1, 11, "no", 5600, 125, ts_ms=1_795_000_000_011)),
    ("gap", {"kind": "disconnect", "sid": 1, "expected_seq": 12, "received_seq": None, "markets": ["KXA", "KXB"]}),
    ("message", snapshot("KXA", 2, 1, yes=[(4400, 100)])),
    ("message", snapshot("KXB", 2, 2, yes=[(155, 10000)], no=[(9800, 250)])),
    ("heal", None),
    ("message", delta("KXA", 2, 3, "yes", 4400, -100, ts_ms=1_795_000_000_023)),
]


def recorded_session() -> TradingSession:
    """A finished session holding SCRIPT (for sync tests that need committed rows)."""
    import asyncio

    from apps.trader.services import session_end

    session = new_session()
    asyncio.run(record_script(session.pk, SCRIPT))
    session_end(session_id=session.pk, failed=False, error="")
    session.refresh_from_db()
    return session
