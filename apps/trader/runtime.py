"""Wiring: builds the trader's parts from a TraderConfig and runs them on the current event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from channels.layers import get_channel_layer
from django.conf import settings

from apps.exchange.simulator import ExchangeSimulator, SimulatorConfig
from apps.kalshi.client import FeedListener, KalshiWebSocketClient
from apps.trader.broadcast import ChannelLayerBroadcaster
from apps.trader.config import TraderConfig
from apps.trader.core.coordinator import Coordinator, CoordinatorOptions
from apps.trader.core.eventbus import EventBus
from apps.trader.services import DjangoSessionStore

logger = logging.getLogger(__name__)


def client_factory(config: TraderConfig, ws_url: str) -> Callable[[FeedListener], KalshiWebSocketClient]:
    def build(listener: FeedListener) -> KalshiWebSocketClient:
        return KalshiWebSocketClient(
            url=ws_url,
            credentials=config.credentials,
            markets=config.markets,
            listener=listener,
            idle_timeout=settings.TRADER_FEED_IDLE_TIMEOUT,
        )

    return build


async def start_exchange(config: TraderConfig) -> ExchangeSimulator:
    exchange = ExchangeSimulator(
        SimulatorConfig(
            host="127.0.0.1",
            port=0,
            public_key_pem=config.exchange_public_key_pem,
            key_id=config.credentials.key_id,
            message_rate=settings.SIM_MESSAGE_RATE,
        )
    )
    await exchange.start()
    return exchange


class TraderRuntime:
    """One run of the trader: the event bus and its broadcaster, the built-in exchange in sim, the coordinator."""

    def __init__(self, config: TraderConfig) -> None:
        self.config = config
        self.coordinator: Coordinator | None = None
        self.exchange: ExchangeSimulator | None = None
        self.bus = EventBus()
        self._pending_shutdown = ""

    async def run(self, *, handle_signals: bool = True) -> int:
        """Run until shutdown; returns the exit code."""
        config = self.config
        self.bus.subscribe(
            "channel_layer", ChannelLayerBroadcaster(get_channel_layer(), settings.CONSOLE_GROUP), queue_size=5000
        )
        ws_url = config.ws_url
        try:
            if config.start_exchange:
                self.exchange = await start_exchange(config)
                ws_url = self.exchange.ws_url
                logger.info("built-in exchange listening on %s", ws_url)
            self.coordinator = Coordinator(
                options=CoordinatorOptions(
                    environment=config.environment.value,
                    markets=config.markets,
                    exchange_url=ws_url,
                    heartbeat_stale_after=settings.TRADER_HEARTBEAT_STALE_SECONDS,
                    feed_idle_timeout=settings.TRADER_FEED_IDLE_TIMEOUT,
                ),
                client_factory=client_factory(config, ws_url),
                store=DjangoSessionStore(),
                bus=self.bus,
            )
            if self._pending_shutdown:
                self.coordinator.request_shutdown(self._pending_shutdown)
            if handle_signals:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, self.request_shutdown, f"received {sig.name}")
            return await self.coordinator.run()
        finally:
            await self.bus.close()
            if self.exchange is not None:
                await self.exchange.stop()

    def request_shutdown(self, reason: str) -> None:
        if self.coordinator is None:
            self._pending_shutdown = reason
        else:
            self.coordinator.request_shutdown(reason)
