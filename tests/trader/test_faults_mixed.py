"""A long randomized run: the trader against the simulator throwing every fault at once, then healing."""

from __future__ import annotations

import asyncio
import random

import pytest

from apps.exchange.config import SimulatorConfig
from apps.exchange.faults import Faults
from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.backoff import Backoff
from apps.kalshi.messages import ERROR_BUFFER_OVERFLOW, ERROR_CHANNEL
from apps.kalshi.signing import Credentials
from apps.trader.core.eventbus import EventBus
from apps.trader.core.states import State
from apps.trader.models import StateTransition
from tests.support import eventually as wait_for
from tests.trader.builders import build_coordinator, exchange_clients
from tests.trader.conftest import EventLog

pytestmark = pytest.mark.django_db(transaction=True)

MARKETS = ["KXFED-26DEC-T4.25", "KXCPI-26DEC-T0.3", "KXBTCD-26DEC31-T100000", "KXETHD-26DEC31-T4000"]


def random_faults(rng: random.Random) -> Faults:
    return Faults(
        skip_seq_every=rng.choice([None, 15, 40]),
        drop_every=rng.choice([None, None, 0.4]),
        error_every=rng.choice([None, 60]),
        error_code=rng.choice([ERROR_CHANNEL, ERROR_BUFFER_OVERFLOW]),
        malformed_every=rng.choice([None, 25]),
        oversized_every=rng.choice([None, 500]),
        stall=rng.random() < 0.2,
        no_ping=rng.random() < 0.2,
    )


async def test_every_fault_mixed_then_healed_leaves_exact_books(
    key_pair: tuple[bytes, bytes], credentials: Credentials, bus: EventBus
) -> None:
    sim = ExchangeSimulator(
        SimulatorConfig(public_key_pem=key_pair[1], markets=None, message_rate=600.0, seed=2026, ping_interval=0.2)
    )
    await sim.start()
    log = EventLog()
    bus.subscribe("log", log)

    clients = exchange_clients(
        sim.ws_url, credentials, idle_timeout=0.6, backoff=Backoff(initial=0.05, cap=0.3), resync_timeout=1.0
    )
    coordinator = build_coordinator(
        clients,
        bus=bus,
        markets=MARKETS,
        exchange_url=sim.ws_url,
        error_backoff=Backoff(initial=0.05, cap=0.2),
    )
    run = asyncio.create_task(coordinator.run())
    rng = random.Random(2026)
    try:
        await wait_for(lambda: coordinator.machine.state is State.READY)
        for _ in range(25):  # about five seconds of chaos
            sim.faults = random_faults(rng)
            await asyncio.sleep(0.2)  # how long each mix lasts: the chaos's pace, not a wait for anything
        sim.faults = Faults()
        await wait_for(lambda: coordinator.machine.state is State.READY and not coordinator.client.stale, 20)
        await wait_for(lambda: coordinator.client.feed_status().counters.deltas_received > 0)
        client = coordinator.client
        for ticker in MARKETS:
            book = client.books[ticker]
            assert book.sid is not None and book.seq is not None
            truth = sim.book_at(ticker, book.sid, book.seq)
            assert truth is not None
            assert book.as_wire() == truth.as_wire(), ticker
    finally:
        coordinator.request_shutdown("done")
        await run
        await sim.stop()

    metrics = client.feed_status().counters
    assert metrics.gaps_detected > 0 and metrics.resyncs > 0
    assert metrics.reconnects > 0
    assert metrics.malformed_frames > 0
    # Every lost connection while ready was a visible transition with its reason and next attempt.
    rows = [row async for row in StateTransition.objects.filter(session_id=coordinator.session_id)]
    reconnects = [r for r in rows if r.from_state == "ready" and r.to_state == "kalshi_connectivity_orderbook_client"]
    assert reconnects and all("reconnecting, attempt" in r.context for r in reconnects)
    assert rows[-1].to_state == "shutdown"
    assert any(line["message"].startswith("GAP:") for line in log.of("console"))
