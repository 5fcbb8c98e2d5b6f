"""The session writer and trading records: queued in order, written in batches after the transitions queued
before them and before the heartbeat, kept through a database that fails and written once when it is back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apps.trader.core.sessionwriter import TRADING_BATCH, SessionWriter
from apps.trader.core.statemachine import Transition
from apps.trader.core.states import State
from apps.trader.core.trading.records import OrderRecord, TradingRecord, record_from_dict
from tests.support import eventually
from tests.trader.trading_records import a_trading_morning, placed


class FlakyStore:
    """A SessionStore that keeps every write it took, in order; the next ``failures`` trading writes fail, and
    while ``answering`` is clear every write waits, as on a stuck database."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, Any]] = []
        self.failures = 0
        self.attempts = 0
        self.answering = asyncio.Event()
        self.answering.set()

    async def session_start(self, **fields: Any) -> int:
        return 1

    async def transition_record(self, *, session_id: int, transition: Transition) -> None:
        await self.answering.wait()
        self.writes.append(("transition", transition.to_state))

    async def trading_records(self, *, session_id: int, records: Sequence[TradingRecord]) -> None:
        self.attempts += 1
        await self.answering.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the database is away")
        self.writes.append(("trading", list(records)))

    async def session_heartbeat(self, *, session_id: int, **fields: Any) -> None:
        await self.answering.wait()
        self.writes.append(("heartbeat", fields["state"]))

    async def session_end(self, *, session_id: int, failed: bool, error: str) -> None:
        await self.answering.wait()
        self.writes.append(("end", failed))

    def trading(self) -> list[TradingRecord]:
        return [record for kind, batch in self.writes if kind == "trading" for record in batch]


def orders(count: int) -> list[OrderRecord]:
    return [placed(f"c-{n}", at_ms=n) for n in range(count)]


def transition(to_state: State) -> Transition:
    return Transition(State.READY, to_state, "", datetime(2026, 12, 2, tzinfo=UTC), {})


async def test_records_are_written_in_order_in_batches_after_transitions_and_before_the_heartbeat() -> None:
    store = FlakyStore()
    store.answering.clear()
    writer = SessionWriter(store)
    writer.start(1)
    records = orders(2 * TRADING_BATCH + 7)
    writer.transition(transition(State.TRADING_CONNECT))
    for record in records:
        writer.trading(record)
    writer.heartbeat(state="trading_client_connect", status={}, counters={}, console=[], tops=[], markets=None)
    assert writer.pending == 1 + len(records) + 1
    assert writer.status()["pending_writes"] == 1 + len(records)

    store.answering.set()
    await writer.flush()
    await writer.close()
    assert [(kind, len(batch) if kind == "trading" else batch) for kind, batch in store.writes] == [
        ("transition", State.TRADING_CONNECT),
        ("trading", TRADING_BATCH),
        ("trading", TRADING_BATCH),
        ("trading", 7),
        ("heartbeat", "trading_client_connect"),
    ]
    assert store.trading() == records
    assert writer.pending == 0


async def test_records_are_kept_while_the_store_fails_and_written_once_in_order_when_it_is_back() -> None:
    store = FlakyStore()
    store.failures = 1_000
    changes: list[tuple[bool, str]] = []
    writer = SessionWriter(store, retry_interval=0.01, on_change=lambda up, line: changes.append((up, line)))
    writer.start(1)
    first = a_trading_morning()
    for record in first:
        writer.trading(record)
    await eventually(lambda: store.attempts >= 2, what="a failed write tried again")
    later = [replace(record, at_us=record.at_us + 10_000_000) for record in orders(3)]
    for record in later:  # queued while the database is away
        writer.trading(record)
    assert writer.status()["pending_writes"] == len(first) + len(later)

    store.failures = 0
    await writer.flush()
    await writer.close()
    assert store.trading() == first + later  # each once, in the order queued
    assert changes[0] == (False, "database unreachable (ConnectionError)")
    assert changes[-1][0] is True
    assert changes[-1][1].endswith("0 transition(s) and 10 trading record(s) written late")


async def test_a_write_with_no_answer_yet_is_waited_for_and_never_sent_twice() -> None:
    store = FlakyStore()
    store.answering.clear()
    writer = SessionWriter(store, slow_after=0.05)
    writer.start(1)
    early = orders(3)
    for record in early:
        writer.trading(record)
    await eventually(lambda: writer.status()["status"] == "unreachable", what="the slow write to count as down")
    late = placed("c-late")
    writer.trading(late)
    assert writer.status()["pending_writes"] == 4

    store.answering.set()
    await writer.flush()
    await writer.close()
    assert store.attempts == 2
    assert store.trading() == [*early, late]


async def test_a_spill_saves_the_unwritten_records_as_they_read_back(tmp_path: Path) -> None:
    store = FlakyStore()
    store.failures = 1_000
    writer = SessionWriter(store, retry_interval=60.0)
    writer.start(7)
    records = a_trading_morning()
    writer.transition(transition(State.SHUTDOWN))
    for record in records:
        writer.trading(record)
    await eventually(lambda: store.attempts == 1, what="the failed trading write")
    path = writer.spill(tmp_path)
    await writer.close()

    assert path is not None
    document = json.loads(path.read_text())
    assert document["session_id"] == 7
    assert [record_from_dict(saved) for saved in document["trading"]] == records
    assert store.writes == [("transition", State.SHUTDOWN)]
