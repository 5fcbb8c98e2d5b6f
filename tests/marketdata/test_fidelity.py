"""Item 7: record a run against the simulator with every fault kind injected, then check that the book
rebuilt from the recording equals the exchange's own book for every market at every recorded seq."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest
from asgiref.sync import sync_to_async

from apps.exchange.config import DEFAULT_MARKETS
from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.messages import ERROR_BUFFER_OVERFLOW, ERROR_CHANNEL, OrderbookDelta, OrderbookSnapshot
from apps.marketdata.dbwriter import DjangoBatchWriter
from apps.marketdata.models import RecordedGap
from apps.marketdata.recorder import DatabaseRecorder
from apps.marketdata.rows import RecordedRow
from apps.marketdata.selectors import BookReplayer, Gap, Recorded, book_at, recording_messages
from apps.trader.core.coordinator import Coordinator
from apps.trader.core.states import State
from tests.marketdata.harness import live, recording_coordinator, start_simulator
from tests.support import eventually

pytestmark = pytest.mark.django_db(transaction=True)

MARKETS = DEFAULT_MARKETS[:4]


class PausableWriter:
    """The real writer; ``paused`` makes the database stop answering, as a slow disk or a lock would."""

    def __init__(self) -> None:
        self.inner = DjangoBatchWriter()
        self.running = threading.Event()
        self.running.set()

    def __call__(self, rows: Sequence[RecordedRow], *, more_waiting: bool = False) -> None:
        self.running.wait(timeout=30)
        self.inner(rows, more_waiting=more_waiting)

    def close(self) -> None:
        self.inner.close()


def errors(coordinator: Coordinator, code: int) -> int:
    client = coordinator.client
    return client.feed_status().counters.errors_by_code[code] if client else 0


OUTBOUND_LIMIT = 400
"""Messages the simulator queues for a connection before it ends the subscription with error 25."""


async def inject_every_fault(
    sim: ExchangeSimulator, coordinator: Coordinator, recorder: DatabaseRecorder, writer: PausableWriter
) -> None:
    faults = sim.faults

    async def back_to_live(what: str) -> None:
        await eventually(lambda: live(coordinator), seconds=10, what=f"live books after {what}")
        applied = coordinator.session_counters()["deltas_received"]
        await eventually(
            lambda: coordinator.session_counters()["deltas_received"] >= applied + 20,
            what=f"deltas on the fresh subscription after {what}",
        )

    await back_to_live("start")
    # Always on from here: skipped seqs (gaps), malformed and oversized frames. (rest_429 is left out: the
    # trader makes no REST calls.)
    faults.skip_seq_every = 53
    faults.malformed_every = 41
    faults.oversized_every = 150
    faults.oversized_bytes = 50_000
    injected = sim.stats["faults"]
    await eventually(
        lambda: all(sim.stats["faults"][kind] > injected[kind] for kind in ("skip_seq", "malformed", "oversized")),
        what="a skipped seq, a malformed and an oversized frame",
    )
    await eventually(lambda: coordinator.session_counters()["gaps"] >= 1, what="a seq gap")
    await back_to_live("seq gaps")

    # Subscriptions ended by the exchange with code 10, then code 25.
    for code in (ERROR_CHANNEL, ERROR_BUFFER_OVERFLOW):
        faults.error_code = code
        faults.error_every = 60
        await eventually(lambda code=code: errors(coordinator, code) >= 1, what=f"error {code}")  # type: ignore[misc]
        faults.error_every = None
        await back_to_live(f"error {code}")

    # Connections dropped without a close frame.
    reconnects = coordinator.session_counters()["reconnects"]
    faults.drop_every = 0.25
    await eventually(lambda: coordinator.session_counters()["reconnects"] > reconnects, what="a dropped connection")
    faults.drop_every = None
    await back_to_live("drop")

    # Short data stalls (pings go on), then a stall with no pings: the client calls the socket dead.
    faults.stall_for = 0.1
    faults.stall_every = 0.15
    stalls = sim.stats["faults"]["stall"]
    await eventually(lambda: sim.stats["faults"]["stall"] >= stalls + 2, what="two short stalls")
    faults.stall_every = None
    reconnects = coordinator.session_counters()["reconnects"]
    faults.stall = True
    faults.no_ping = True
    await eventually(lambda: coordinator.session_counters()["reconnects"] > reconnects, what="an idle timeout")
    faults.stall = False
    faults.no_ping = False
    await back_to_live("silence")

    # Refused handshakes: the trader goes to error and recovers through startup.
    faults.reject_handshake = True
    sim.drop_connections()
    await eventually(lambda: coordinator.machine.state is State.ERROR, what="the error state")
    faults.reject_handshake = False
    await back_to_live("refused handshakes")

    # The database stops answering while the exchange speeds up: the recorder fills, the reader waits,
    # the exchange's outbound queue overflows and it ends the subscription with 25.
    overflows = sim.stats["faults"]["buffer_overflow"]
    waits = recorder.metrics()["backpressure_waits"]
    writer.running.clear()
    sim.config.message_rate = 4000.0
    try:
        # Both, in either order: on a loaded machine the exchange's queue can overflow before the recorder
        # is full; the fresh subscription then fills it.
        await eventually(
            lambda: (
                sim.stats["faults"]["buffer_overflow"] > overflows and recorder.metrics()["backpressure_waits"] > waits
            ),
            seconds=15,
            what="an overflow and the feed waiting for the recorder",
        )
    finally:
        sim.config.message_rate = 300.0
        writer.running.set()
    await back_to_live("back-pressure")

    # A quiet end, so the last gap is healed before the trader stops. Frames built before the switch can still
    # wait in the exchange's outbound queue with seqs skipped among them: the end is quiet once more deltas than
    # that queue holds have come without a new gap.
    faults.skip_seq_every = None
    for _ in range(5):
        gaps = coordinator.session_counters()["gaps"]
        await back_to_live("the end of the faults")
        drained = coordinator.session_counters()["deltas_received"] + OUTBOUND_LIMIT
        await eventually(
            lambda: coordinator.session_counters()["deltas_received"] >= drained,  # noqa: B023 (awaited here)
            seconds=30,
            what="the exchange's queue drained after the faults",
        )
        if coordinator.session_counters()["gaps"] == gaps and live(coordinator):
            return
    raise AssertionError("seq gaps kept coming after the faults were switched off")


def rows_of(session_id: int) -> list[Recorded]:
    return list(recording_messages(session_id=session_id))


async def test_every_rebuilt_book_equals_the_exchanges_book_under_every_fault(sim_key_pair, sim_credentials) -> None:
    sim = await start_simulator(
        sim_key_pair, markets=list(DEFAULT_MARKETS), outbound_limit=OUTBOUND_LIMIT, socket_send_buffer=4096
    )
    writer = PausableWriter()
    recorder = DatabaseRecorder(capacity=256, batch_size=64, flush_interval=0.02, writer=writer)
    coordinator = recording_coordinator(sim, sim_credentials, recorder, markets=MARKETS, idle_timeout=0.6)
    run = asyncio.create_task(coordinator.run())
    try:
        await inject_every_fault(sim, coordinator, recorder, writer)
    finally:
        coordinator.request_shutdown("test over")
        await asyncio.wait_for(run, timeout=30)
        await recorder.close()
        await sim.stop()

    fault_counts = sim.stats["faults"]
    for kind in ("drop", "skip_seq", "stall", "no_ping", "subscription_error", "buffer_overflow"):
        assert fault_counts[kind] > 0, kind
    for kind in ("reject_handshake", "malformed", "oversized"):
        assert fault_counts[kind] > 0, kind

    session_id = coordinator.session_id
    assert session_id is not None
    items = await sync_to_async(rows_of)(session_id)

    # Nothing lost: every message the trader applied is in the recording, in receive order.
    counters = coordinator.session_counters()
    snapshots = sum(isinstance(i.message, OrderbookSnapshot) for i in items)
    deltas = sum(isinstance(i.message, OrderbookDelta) for i in items)
    assert (snapshots, deltas) == (counters["snapshots_received"], counters["deltas_received"])
    assert [i.position for i in items] == list(range(1, len(items) + 1))
    assert recorder.metrics()["backpressure_waits"] > 0
    gaps = [i.message for i in items if isinstance(i.message, Gap)]
    # Seq gaps, lost connections, and subscriptions the exchange ended (errors 10 and 25) are all marked.
    assert {g.kind for g in gaps} == set(RecordedGap.Kind)
    assert sum(g.kind == RecordedGap.Kind.SEQ for g in gaps) == counters["gaps"]
    assert all(g.healed_at is not None for g in gaps)

    # Every market at every recorded seq, replayed in receive order.
    replayer = BookReplayer()
    compared = dict.fromkeys(MARKETS, 0)
    unknown = 0
    for item in items:
        replayer.apply(item)
        message = item.message
        if isinstance(message, Gap):
            continue
        for ticker in MARKETS:
            if not replayer.is_current(ticker, message.sid):
                unknown += 1
                continue
            truth = sim.book_at(ticker, message.sid, message.seq)
            assert truth is not None, f"the simulator forgot sid {message.sid} seq {message.seq}"
            book = replayer.books[ticker]
            assert (book.yes, book.no) == (truth.yes, truth.no), f"{ticker} at sid {message.sid} seq {message.seq}"
            compared[ticker] += 1
    assert all(count > 200 for count in compared.values()), compared
    assert unknown < sum(compared.values()) / 5

    # The rebuild-at-seq query agrees, spot-checked around every snapshot (resyncs included).
    checked = 0
    for index, item in enumerate(items):
        message = item.message
        if not isinstance(message, OrderbookSnapshot):
            continue
        for later in items[index : index + 3]:
            probe = later.message
            if isinstance(probe, Gap) or probe.sid != message.sid:
                continue
            rebuilt = await sync_to_async(book_at)(
                session_id=session_id, market_ticker=message.market_ticker, seq=probe.seq, sid=probe.sid
            )
            if not rebuilt.current:
                continue
            truth = sim.book_at(message.market_ticker, probe.sid, probe.seq)
            assert truth is not None
            assert (rebuilt.book.yes, rebuilt.book.no) == (truth.yes, truth.no)
            checked += 1
    assert checked > 50
