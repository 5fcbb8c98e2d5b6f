"""The trader against the built-in exchange while its session store does not answer.

The feed and the console carry on; health says "database unreachable" within seconds; every transition is
written, in order, once the store answers again; a shutdown while it is away keeps its deadline and saves
what was not written, which the next start writes.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError

from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.signing import Credentials
from apps.trader.core.coordinator import Coordinator
from apps.trader.core.eventbus import EventBus
from apps.trader.core.states import State
from apps.trader.models import StateTransition, TradingSession
from apps.trader.services import DjangoSessionStore, unwritten_load_all
from tests.support import eventually as wait_for
from tests.trader.builders import coordinator_for
from tests.trader.conftest import EventLog

pytestmark = pytest.mark.django_db(transaction=True)


class StoreThatGoesAway(DjangoSessionStore):
    """The real store, except that while ``away`` every write hangs (``hang``) or fails at once."""

    def __init__(self) -> None:
        super().__init__()
        self.away = False
        self.hang = True
        self.back = asyncio.Event()
        self.attempts = 0

    async def _call(self, function: Any, **kwargs: Any) -> Any:
        self.attempts += 1
        if self.away:
            if not self.hang:
                raise OperationalError("connection refused")
            await self.back.wait()
        return await super()._call(function, **kwargs)

    def come_back(self) -> None:
        self.away = False
        self.back.set()


def trader(
    exchange: ExchangeSimulator, credentials: Credentials, bus: EventBus, store: StoreThatGoesAway, **options: Any
) -> Coordinator:
    return coordinator_for(exchange.ws_url, credentials, bus, store=store, database_slow_after=0.3, **options)


async def test_the_console_and_health_show_the_outage_and_every_transition_is_written_after(
    exchange: ExchangeSimulator, credentials: Credentials, bus: EventBus
) -> None:
    log = EventLog()
    bus.subscribe("log", log)
    store = StoreThatGoesAway()
    coordinator = trader(exchange, credentials, bus, store)
    run = asyncio.create_task(coordinator.run())
    await wait_for(lambda: coordinator.machine.state is State.READY)

    store.away = True
    await wait_for(lambda: "database unreachable" in coordinator.status()["health"]["reason"], seconds=3)
    status = coordinator.status()
    assert status["state"] == "ready"  # the books stay live: ready, but unhealthy, with the reason
    assert status["health"]["status"] == "unhealthy"
    assert status["metrics"]["database"]["status"] == "unreachable"
    await wait_for(
        lambda: any(line["message"].startswith("DATABASE: database unreachable") for line in log.of("console"))
    )

    # A reconnect while the database is away is broadcast at once, not after the database answers.
    exchange.drop_connections()
    await wait_for(lambda: [t["to_state"] for t in log.of("state_transition")][-2:] == [State.CONNECTING, State.READY])
    deltas_before = coordinator.session_counters()["deltas_received"]
    await wait_for(lambda: coordinator.session_counters()["deltas_received"] > deltas_before + 10)

    store.come_back()
    await wait_for(lambda: coordinator.status()["health"]["status"] == "healthy", seconds=5)
    # The console line reaches the log through the event bus, a moment after the health flips.
    await wait_for(
        lambda: any(line["message"].startswith("DATABASE: database reachable again") for line in log.of("console"))
    )
    coordinator.request_shutdown("test is over")
    await run

    written = [
        (t.from_state, t.to_state)
        async for t in StateTransition.objects.filter(session_id=coordinator.session_id).order_by("id")
    ]
    broadcast = [(t["from_state"], t["to_state"]) for t in log.of("state_transition")]
    assert written == broadcast
    assert ("ready", "kalshi_connectivity_orderbook_client") in written
    session = await TradingSession.objects.aget(pk=coordinator.session_id)
    assert (session.status, session.error) == ("stopped", "")


async def test_a_shutdown_while_the_database_is_away_keeps_its_deadline_and_saves_the_rest(
    exchange: ExchangeSimulator, credentials: Credentials, bus: EventBus, tmp_path: Path
) -> None:
    store = StoreThatGoesAway()
    store.hang = False
    coordinator = trader(exchange, credentials, bus, store, spill_dir=tmp_path)
    coordinator.options.timeouts[State.SHUTDOWN] = 2.0
    run = asyncio.create_task(coordinator.run())
    await wait_for(lambda: coordinator.machine.state is State.READY)
    await wait_for(lambda: coordinator.status()["metrics"]["database"]["pending_writes"] == 0)
    store.away = True
    await wait_for(lambda: "database unreachable" in coordinator.status()["health"]["reason"], seconds=3)

    coordinator.request_shutdown("test is over")
    started = time.monotonic()
    await run
    assert time.monotonic() - started < 4.0  # the shutdown deadline (2 s) holds with the store away
    session = await TradingSession.objects.aget(pk=coordinator.session_id)
    assert session.status == "running"  # nothing reached the database...
    [saved] = await asyncio.to_thread(lambda: list(tmp_path.iterdir()))
    document = json.loads(await asyncio.to_thread(saved.read_text))
    assert [t["to_state"] for t in document["transitions"]] == ["shutdown"]  # ...and nothing was lost
    assert document["end"] == {"failed": False, "error": ""}

    store.come_back()
    lines = await asyncio.to_thread(unwritten_load_all, directory=tmp_path)
    assert lines == [f"{saved.name}: session {session.pk}: wrote 1 transition(s) and its closing, saved at shutdown"]
    assert not await asyncio.to_thread(lambda: list(tmp_path.iterdir()))
    session = await TradingSession.objects.aget(pk=coordinator.session_id)
    assert (session.status, session.current_state) == ("stopped", "shutdown")
    assert "the database was unreachable at shutdown" in session.error
    last = await StateTransition.objects.filter(session=session).order_by("-id").afirst()
    assert last is not None and (last.to_state, last.context) == ("shutdown", "test is over")
    assert isinstance(last.timestamp, datetime)
