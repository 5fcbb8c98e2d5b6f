"""Helpers shared by the test suite (fixtures live in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from channels.testing import WebsocketCommunicator
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.environments import Environment
from apps.kalshi.signing import Credentials
from apps.trader.config import TraderConfig

TEST_KEY_ID = "test-key-7f3a"

StartSim = Callable[..., Awaitable[ExchangeSimulator]]
"""``await start_sim(**SimulatorConfig overrides)``: a started simulator, stopped after the test."""


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], seconds: float = 10.0, what: str = "condition"
) -> None:
    """Wait until ``condition()`` holds; fail naming ``what`` after ``seconds``.

    The one way a test waits for something it cannot be told about (a counter, a row, a state). ``seconds``
    is a ceiling for a failing run, never a pause: a passing test returns as soon as the condition holds.
    ``condition`` may be a coroutine function (an async ORM read).
    """

    async def holds() -> bool:
        result = condition()
        return bool(await result) if inspect.isawaitable(result) else bool(result)

    try:
        async with asyncio.timeout(seconds):
            while not await holds():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds:g} s waiting for {what}") from None


def eventually_blocking(condition: Callable[[], bool], seconds: float = 30.0, what: str = "condition") -> None:
    """``eventually`` for a test with no event loop (one that drives a subprocess over HTTP)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:g} s waiting for {what}")
        time.sleep(0.05)


class ConsoleSocket(WebsocketCommunicator):  # type: ignore[misc]
    """A test's console socket: it waits up to 10 s for the consumer (channels' default of 1 s is a hiccup on a
    machine busy with the rest of the suite). A passing test waits only as long as the answer takes."""

    async def connect(self, timeout: float = 10) -> Any:  # noqa: ASYNC109 (channels' own signature)
        return await super().connect(timeout)

    async def receive_from(self, timeout: float = 10) -> Any:  # noqa: ASYNC109 (channels' own signature)
        return await super().receive_from(timeout)

    async def receive_json_from(self, timeout: float = 10) -> Any:  # noqa: ASYNC109 (channels' own signature)
        return await super().receive_json_from(timeout)

    async def disconnect(self, code: int = 1000, timeout: float = 10) -> None:  # noqa: ASYNC109 (channels' own signature)
        await super().disconnect(code, timeout)


def sim_trader_config(credentials: Credentials, public_key_pem: bytes, **overrides: Any) -> TraderConfig:
    """A sim TraderConfig that starts the built-in exchange (trusting ``public_key_pem``), with no web app."""
    fields: dict[str, Any] = {
        "environment": Environment.SIM,
        "markets": [],
        "ws_url": "",
        "api_url": "",
        "credentials": credentials,
        "start_exchange": True,
        "web": False,
        "web_host": "127.0.0.1",
        "web_port": 0,
        "exchange_public_key_pem": public_key_pem,
        "unwritten_dir": Path(settings.DATA_DIR) / "unwritten",
        "console_group": settings.CONSOLE_GROUP,
        "heartbeat_stale_after": settings.TRADER_HEARTBEAT_STALE_SECONDS,
        "feed_idle_timeout": settings.TRADER_FEED_IDLE_TIMEOUT,
        "orderbook_interval": settings.TRADER_ORDERBOOK_INTERVAL,
        "orderbooks_per_tick": settings.TRADER_ORDERBOOKS_PER_TICK,
        "sim_message_rate": settings.SIM_MESSAGE_RATE,
        "sim_faults": "",
    }
    fields.update(overrides)
    return TraderConfig(**fields)


def metric_samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition, parsed by the client library's own parser."""
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def metric_value(found: list[Sample], name: str, **labels: str) -> float:
    """The one sample named ``name`` whose labels include ``labels``."""
    matching = [s.value for s in found if s.name == name and labels.items() <= s.labels.items()]
    assert len(matching) == 1, (name, labels, matching)
    return matching[0]


def metric_one_hot(found: list[Sample], name: str, label: str) -> list[str]:
    """The ``label`` values whose sample of ``name`` is 1 (a one-hot gauge has exactly one)."""
    return [s.labels[label] for s in found if s.name == name and s.value == 1]
