"""The real trader (coordinator, client, recorder, session store) wired to a simulator, for recording tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from apps.exchange.simulator import ExchangeSimulator, SimulatorConfig
from apps.kalshi.backoff import Backoff
from apps.kalshi.client import KalshiWebSocketClient
from apps.kalshi.feed import FeedListener
from apps.kalshi.signing import Credentials
from apps.marketdata.recorder import DatabaseRecorder
from apps.trader.core.coordinator import Coordinator, CoordinatorOptions
from apps.trader.core.eventbus import EventBus
from apps.trader.core.ports import SessionStore
from apps.trader.core.states import State
from apps.trader.services import DjangoSessionStore


async def start_simulator(key_pair: tuple[bytes, bytes], **overrides: Any) -> ExchangeSimulator:
    options: dict[str, Any] = {
        "public_key_pem": key_pair[1],
        "key_id": "recording-test",
        "seed": 11,
        "message_rate": 300.0,
        "ping_interval": 0.2,
        "history_size": 200_000,
    }
    options.update(overrides)
    sim = ExchangeSimulator(SimulatorConfig(**options))
    await sim.start()
    return sim


def recording_coordinator(
    sim: ExchangeSimulator,
    credentials: Credentials,
    recorder: DatabaseRecorder,
    *,
    markets: list[str],
    store: SessionStore | None = None,
    idle_timeout: float = 30.0,
) -> Coordinator:
    def factory(listener: FeedListener, subscribed: list[str]) -> KalshiWebSocketClient:
        return KalshiWebSocketClient(
            url=sim.ws_url,
            credentials=credentials,
            markets=subscribed,
            listener=listener,
            backoff=Backoff(initial=0.02, cap=0.1),
            idle_timeout=idle_timeout,
        )

    return Coordinator(
        options=CoordinatorOptions(
            environment="sim",
            markets=markets,
            exchange_url=sim.ws_url,
            status_interval=0.1,
            orderbook_interval=0.05,
            error_backoff=Backoff(initial=0.05, cap=0.2),
        ),
        client_factory=factory,
        store=store or DjangoSessionStore(),
        bus=EventBus(),
        recorder=recorder,
    )


async def wait_until(condition: Callable[[], bool], within: float = 10.0, what: str = "condition") -> None:
    try:
        async with asyncio.timeout(within):
            while not condition():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def live(coordinator: Coordinator) -> bool:
    client = coordinator.client
    return coordinator.machine.state is State.READY and client is not None and not client.stale
