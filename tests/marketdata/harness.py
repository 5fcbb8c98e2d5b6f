"""The real trader (coordinator, client, recorder, session store) wired to a simulator, for recording tests."""

from __future__ import annotations

from typing import Any

from apps.exchange.config import SimulatorConfig
from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.backoff import Backoff
from apps.kalshi.signing import Credentials
from apps.marketdata.recorder import DatabaseRecorder
from apps.trader.core.coordinator import Coordinator
from apps.trader.core.eventbus import EventBus
from apps.trader.core.ports import SessionStore
from apps.trader.core.states import State
from tests.trader.builders import build_coordinator, exchange_clients


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
    clients = exchange_clients(
        sim.ws_url, credentials, backoff=Backoff(initial=0.02, cap=0.1), idle_timeout=idle_timeout
    )
    return build_coordinator(
        clients,
        bus=EventBus(),
        store=store,
        recorder=recorder,
        markets=markets,
        exchange_url=sim.ws_url,
        error_backoff=Backoff(initial=0.05, cap=0.2),
    )


def live(coordinator: Coordinator) -> bool:
    client = coordinator.client
    return coordinator.machine.state is State.READY and client is not None and not client.stale
