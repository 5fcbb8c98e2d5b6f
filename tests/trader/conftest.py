from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from channels.layers import get_channel_layer

from apps.exchange.keys import ensure_key_pair
from apps.exchange.simulator import ExchangeSimulator, SimulatorConfig
from apps.kalshi.signing import Credentials, load_private_key
from apps.trader.core.eventbus import Event, EventBus


@pytest.fixture(scope="session")
def sim_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ensure_key_pair(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def credentials(sim_keys: tuple[Path, Path]) -> Credentials:
    return Credentials(key_id="sim-local-key", private_key=load_private_key(sim_keys[0].read_bytes()))


@pytest.fixture
async def exchange(sim_keys: tuple[Path, Path]) -> AsyncIterator[ExchangeSimulator]:
    sim = ExchangeSimulator(
        SimulatorConfig(public_key_pem=sim_keys[1].read_bytes(), key_id="sim-local-key", message_rate=200.0, seed=7)
    )
    await sim.start()
    yield sim
    await sim.stop()


class EventLog:
    """A bus subscriber that keeps every event, for assertions."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e.data for e in self.events if e.kind == kind]


@pytest.fixture
async def bus() -> AsyncIterator[EventBus]:
    bus = EventBus()
    yield bus
    await bus.close()


@pytest.fixture
async def layer_inbox() -> AsyncIterator[Callable[[], Any]]:
    """A channel joined to the console group; returns a receive function."""
    from django.conf import settings

    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(settings.CONSOLE_GROUP, channel)

    async def receive() -> Any:
        return await asyncio.wait_for(layer.receive(channel), timeout=5)

    yield receive
    await layer.group_discard(settings.CONSOLE_GROUP, channel)


async def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)
