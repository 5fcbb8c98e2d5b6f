from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from channels.layers import get_channel_layer

from apps.exchange.simulator import ExchangeSimulator
from apps.trader.core.eventbus import Event, EventBus
from tests.support import StartSim


@pytest.fixture
async def exchange(start_sim: StartSim) -> ExchangeSimulator:
    """A built-in exchange with moving books."""
    return await start_sim(message_rate=200.0, seed=7)


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
