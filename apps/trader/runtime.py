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


def install_signal_handlers(coordinator: Coordinator) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, coordinator.request_shutdown, f"received {sig.name}")


async def run_trader(config: TraderConfig, *, handle_signals: bool = True) -> int:
    """Run the trader (and, in sim, the built-in exchange) until shutdown. Returns the exit code."""
    bus = EventBus()
    broadcaster = ChannelLayerBroadcaster(get_channel_layer(), settings.CONSOLE_GROUP)
    bus.subscribe("channel_layer", broadcaster, queue_size=5000)
    exchange: ExchangeSimulator | None = None
    ws_url = config.ws_url
    try:
        if config.start_exchange:
            exchange = await start_exchange(config)
            ws_url = exchange.ws_url
            logger.info("built-in exchange listening on %s", ws_url)
        coordinator = Coordinator(
            options=CoordinatorOptions(
                environment=config.environment.value,
                markets=config.markets,
                exchange_url=ws_url,
                heartbeat_stale_after=settings.TRADER_HEARTBEAT_STALE_SECONDS,
                feed_idle_timeout=settings.TRADER_FEED_IDLE_TIMEOUT,
            ),
            client_factory=client_factory(config, ws_url),
            store=DjangoSessionStore(),
            bus=bus,
        )
        if handle_signals:
            install_signal_handlers(coordinator)
        return await coordinator.run()
    finally:
        await bus.close()
        if exchange is not None:
            await exchange.stop()
