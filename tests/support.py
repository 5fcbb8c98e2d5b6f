"""Helpers shared by the test suite (fixtures live in tests/conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from apps.exchange.simulator import ExchangeSimulator

TEST_KEY_ID = "test-key-7f3a"

StartSim = Callable[..., Awaitable[ExchangeSimulator]]
"""``await start_sim(**SimulatorConfig overrides)``: a started simulator, stopped after the test."""


async def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait until ``condition()`` holds, failing with a timeout after ``seconds``."""
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)
