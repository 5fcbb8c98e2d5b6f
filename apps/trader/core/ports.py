"""What the trader core is handed. Django-backed implementations live in apps.trader.services."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from apps.kalshi.client import ClientMetrics, ConnectionStatus, FeedListener
from apps.kalshi.orderbook import OrderBook
from apps.trader.core.statemachine import Transition


class SessionStore(Protocol):
    """Where sessions, transitions and heartbeats are written."""

    async def session_start(self, *, environment: str, markets: list[str], exchange_url: str) -> int: ...

    async def transition_record(self, *, session_id: int, transition: Transition) -> None: ...

    async def session_heartbeat(
        self,
        *,
        session_id: int,
        state: str,
        state_entered_at: datetime,
        status: dict[str, Any],
        counters: dict[str, int],
        console: list[dict[str, Any]],
    ) -> None: ...

    async def session_end(self, *, session_id: int, failed: bool, error: str) -> None: ...


class FeedClient(Protocol):
    """The exchange connection: KalshiWebSocketClient, or a stand-in in tests."""

    url: str
    markets: list[str]
    books: dict[str, OrderBook]
    stale: set[str]
    metrics: ClientMetrics
    status: ConnectionStatus
    last_message_at: float | None

    async def run(self) -> None: ...

    async def close(self) -> None: ...

    def uptime(self) -> float | None: ...

    def silent_for(self) -> float | None: ...


FeedClientFactory = Callable[[FeedListener], FeedClient]
"""Builds a fresh feed client for each (re)start; the coordinator passes itself as the listener."""


def counter_dict(counter: Counter[Any]) -> dict[str, int]:
    return {str(key): value for key, value in sorted(counter.items())}
