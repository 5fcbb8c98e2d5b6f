"""The seam: the trader records what it applies, counts it on the session, and flushes before closing it."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from apps.marketdata.models import RecordedDelta, RecordedSnapshot
from apps.marketdata.recorder import DatabaseRecorder
from apps.trader.models import TradingSession
from apps.trader.services import DjangoSessionStore
from tests.marketdata.harness import live, recording_coordinator, start_simulator
from tests.support import eventually

pytestmark = pytest.mark.django_db(transaction=True)

MARKETS = ["KXFED-26DEC-T4.25", "KXCPI-26DEC-T0.3"]


def recorded_rows(session_id: int) -> int:
    return (
        RecordedSnapshot.objects.filter(session_id=session_id).count()
        + RecordedDelta.objects.filter(session_id=session_id).count()
    )


class StoreWatchingTheRecorder(DjangoSessionStore):
    """Notes what was written when the session is closed."""

    def __init__(self, recorder: DatabaseRecorder) -> None:
        super().__init__()
        self.recorder = recorder
        self.at_end: dict[str, int] = {}

    async def session_end(self, *, session_id: int, failed: bool, error: str) -> None:
        self.at_end = {"queued": self.recorder.queued, "rows": await sync_to_async(recorded_rows)(session_id)}
        await super().session_end(session_id=session_id, failed=failed, error=error)


async def test_shutdown_writes_every_buffered_row_before_the_session_is_closed(sim_key_pair, sim_credentials) -> None:
    sim = await start_simulator(sim_key_pair)
    # Nothing is written on its own for a minute: only the shutdown flush can write these rows.
    recorder = DatabaseRecorder(batch_size=100_000, flush_interval=60.0, quiet_interval=60.0)
    store = StoreWatchingTheRecorder(recorder)
    coordinator = recording_coordinator(sim, sim_credentials, recorder, markets=MARKETS, store=store)
    run = asyncio.create_task(coordinator.run())
    try:
        await eventually(lambda: live(coordinator), what="live books")
        sim.faults.skip_seq_every = 25
        await eventually(lambda: coordinator.session_counters()["gaps"] >= 1, what="a gap")
        await eventually(lambda: live(coordinator) and coordinator.session_counters()["deltas_received"] > 60)
        metrics = coordinator.metrics()
        assert metrics["recorder_queued"] > 0
        assert metrics["recorder_written"] == 0
        assert metrics["recorder_oldest_unwritten_age"] is not None
        assert metrics["recorder"]["capacity"] == recorder.capacity
    finally:
        coordinator.request_shutdown("test over")
        await asyncio.wait_for(run, timeout=30)
        await recorder.close()
        await sim.stop()

    counters = coordinator.session_counters()
    applied = counters["snapshots_received"] + counters["deltas_received"]
    assert store.at_end == {"queued": 0, "rows": applied}

    session = await TradingSession.objects.aget(pk=coordinator.session_id)
    assert session.status == TradingSession.Status.STOPPED
    assert session.gaps == counters["gaps"] >= 1
    assert session.resyncs == counters["resyncs"] >= 1
    assert session.bytes_received == counters["bytes_received"] > 0
    assert session.messages_received == counters["messages_received"]
    final = session.latest_metrics
    assert final["recorder_written"] == recorder.metrics()["written"] > applied
    assert final["recorder_queued"] == 0
    assert "recorder" not in (await session.transitions.alast()).metrics  # type: ignore[union-attr]
