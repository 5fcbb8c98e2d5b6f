from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from apps.exchange.simulator import ExchangeSimulator, SimulatorConfig
from apps.kalshi.signing import Credentials, generate_key_pair, load_private_key

StartSim = Callable[..., Awaitable[ExchangeSimulator]]


@pytest.fixture(scope="session")
def key_pair() -> tuple[bytes, bytes]:
    return generate_key_pair()


@pytest.fixture(scope="session")
def credentials(key_pair: tuple[bytes, bytes]) -> Credentials:
    return Credentials(key_id="test-key", private_key=load_private_key(key_pair[0]))


@pytest.fixture
async def start_sim(key_pair: tuple[bytes, bytes]) -> AsyncIterator[StartSim]:
    """Start simulators with the test key; every one is stopped after the test."""
    started: list[ExchangeSimulator] = []

    async def start(**overrides: Any) -> ExchangeSimulator:
        options: dict[str, Any] = {"public_key_pem": key_pair[1], "seed": 7, "message_rate": 0.0}
        options.update(overrides)
        sim = ExchangeSimulator(SimulatorConfig(**options))
        await sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        await sim.stop()
