"""The trader's composition root: builds a running trader from one TraderConfig and runs it.

``load_trader_config`` turns settings and ``runtrader``'s options into the TraderConfig (once, checked up
front); ``TraderRuntime`` builds every part from it (the built-in exchange in sim, the feed client, the
recorder, the session store, the console broadcaster, the coordinator) and runs them on the current event
loop. This is the one module of the trader that knows the exchange simulator, and the only one of a run
that reads settings.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from channels.layers import get_channel_layer

from apps.exchange.config import DEFAULT_MARKETS, SimulatorConfig
from apps.exchange.faults import parse_faults
from apps.exchange.keys import load_key_pair
from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.client import KalshiWebSocketClient
from apps.kalshi.discovery import DiscoveryError, discover_markets
from apps.kalshi.environments import ConfigurationError, ConfigurationProblems, Environment
from apps.kalshi.feed import FeedListener
from apps.kalshi.orderbook import OrderBook
from apps.kalshi.privatefeed import AccountListener, PrivateFeed
from apps.kalshi.rest import KalshiRestClient
from apps.kalshi.resterrors import KalshiRestError
from apps.kalshi.trading import KalshiTradingClient
from apps.marketdata.recorder import DatabaseRecorder
from apps.trader.broadcast import ChannelLayerBroadcaster
from apps.trader.config import TraderConfig, build_trader_config
from apps.trader.control import ControlListener
from apps.trader.core.coordinator import Coordinator, CoordinatorOptions
from apps.trader.core.eventbus import EventBus
from apps.trader.core.ports import ExchangeRequestFailed
from apps.trader.core.trading.engine import TradingOptions, TradingSetup
from apps.trader.core.trading.loading import load_strategy
from apps.trader.metrics import ConsoleCounts, MetricsServer, TraderCollector, live_shards, on_loop
from apps.trader.services import DjangoSessionStore

logger = logging.getLogger(__name__)


SWITCH_INTERVAL = 0.001
"""Seconds a thread holds the GIL while another waits for it (Python's default is 0.005)."""

GC_YOUNG_THRESHOLD = 50_000
"""Allocations between young collections (Python's default is 700)."""


def tune_interpreter() -> None:
    """Set the interpreter up for a long-running feed. The GIL changes hands every ``SWITCH_INTERVAL``
    (measured: benchtrader, 10 markets on SQLite, three rounds alternating 5 ms and 1 ms: 29.0/31.6/28.5 %
    of the limit against 40.8/37.5/36.4 %). The cyclic garbage collector: what exists once the trader is built
    (Django, the web app, every module) is frozen out of the collections, and young collections run after
    50,000 allocations rather than 700 (and the older generations after 20 and 100 of those). For a
    process that runs one trader: call it once, when everything is imported and before the feed starts.

    Nearly everything the hot path allocates is freed by reference counting; the collector only costs
    time. Measured in a 10,000-market benchtrader run: 1.9 s of 6.5 s in collections, mostly the older
    generations walking the whole heap (0.8 s in 108 middle-generation passes, 0.9 s in 7 full ones).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)
    # The recorder's thread comes back from each SQLite statement wanting the GIL, and the busy feed reader
    # gives it up only every switch interval: 1 ms instead of Python's 5 ms keeps the writer from queueing.
    sys.setswitchinterval(SWITCH_INTERVAL)


def load_trader_config(settings: Any, **options: Any) -> TraderConfig:
    """The run's TraderConfig from settings and ``runtrader``'s options (see ``build_trader_config``).

    In sim it supplies what only the simulator knows: its key pair under DATA_DIR, its default markets and
    the check of SIM_FAULTS. Raises ConfigurationError listing every broken rule.
    """
    sim = settings.ENVIRONMENT is Environment.SIM
    # Checked beside the other rules, so one run reports every broken one.
    problems: list[str] = []
    if sim:
        try:
            parse_faults(settings.SIM_FAULTS)
        except ValueError as exc:
            problems.append(f"SIM_FAULTS: {exc}")
    keys = load_key_pair(Path(settings.DATA_DIR)) if sim else None
    try:
        config = build_trader_config(
            settings,
            sim_markets=list(DEFAULT_MARKETS),
            sim_keys=(keys.private_key, keys.public_key_pem) if keys else None,
            **options,
        )
    except ConfigurationError as exc:
        raise ConfigurationProblems([*exc.problems, *problems]) from None
    if problems:
        raise ConfigurationProblems(problems)
    return config


def client_factory(config: TraderConfig, ws_url: str) -> Callable[[FeedListener, list[str]], KalshiWebSocketClient]:
    def build(listener: FeedListener, markets: list[str]) -> KalshiWebSocketClient:
        return KalshiWebSocketClient(
            url=ws_url,
            credentials=config.credentials,
            markets=markets,
            listener=listener,
            idle_timeout=config.feed_idle_timeout,
        )

    return build


async def start_exchange(config: TraderConfig) -> ExchangeSimulator:
    exchange = ExchangeSimulator(
        SimulatorConfig(
            host="127.0.0.1",
            port=0,
            public_key_pem=config.exchange_public_key_pem,
            key_id=config.credentials.key_id,
            message_rate=config.sim_message_rate,
            faults=parse_faults(config.sim_faults),
        )
    )
    await exchange.start()
    return exchange


class KalshiExchangeRest:
    """The coordinator's ExchangeRest port on Kalshi's REST API (or the simulator's)."""

    def __init__(self, client: KalshiRestClient) -> None:
        self._client = client

    async def discover(self, count: int) -> list[str]:
        try:
            return await discover_markets(self._client, count)
        except (DiscoveryError, KalshiRestError) as exc:
            raise ExchangeRequestFailed(str(exc)) from exc

    async def orderbook(self, ticker: str) -> OrderBook:
        return await self._client.orderbook(ticker)

    def metrics(self) -> dict[str, int]:
        return self._client.metrics.as_dict()

    async def aclose(self) -> None:
        await self._client.aclose()


def trading_setup(config: TraderConfig, ws_url: str, api_url: str) -> TradingSetup | None:
    """The trading client, the private feed and the strategy of a trader that trades; None for one that watches.

    Both clients check the trading rules again when built and before every request or connect."""
    choice = config.trading
    if choice is None:
        return None
    client = KalshiTradingClient(api_url, config.credentials, choice.permission)

    def private_feed(listener: AccountListener) -> PrivateFeed:
        return PrivateFeed(
            url=ws_url, credentials=config.credentials, permission=choice.permission, trading=client, listener=listener
        )

    path, params = choice.strategy_path, choice.strategy_params
    return TradingSetup(
        options=TradingOptions(
            limits=choice.limits,
            strategy=(lambda: load_strategy(path, params)) if path else None,
            strategy_path=path,
            cancel_unknown_orders=choice.cancel_unknown_orders,
        ),
        client=client,
        feed_factory=private_feed,
    )


RECORDER_CAPACITY = 30_000
"""Rows the recorder buffers before the feed waits. A recorded delta takes about 270 bytes in the buffer;
three 10,000-row batches keep the writer busy while the buffer stays under 9 MB (100,000 rows peaked at
95,000 in a 10,000-market run, 27 MB of the trader's peak RSS; 50,000 cost 4 MB more than this)."""


class TraderRuntime:
    """One run of the trader: the event bus and its broadcaster, the built-in exchange in sim, the coordinator."""

    def __init__(
        self,
        config: TraderConfig,
        *,
        consoles: Callable[[], ConsoleCounts] | None = None,
        on_metrics_listening: Callable[[str, int], None] | None = None,
    ) -> None:
        """``consoles``: the consoles the process's web app serves, for the metrics (None without a web app);
        ``on_metrics_listening(host, port)`` is called once the metrics port listens."""
        self.config = config
        self._consoles = consoles
        self._on_metrics_listening = on_metrics_listening
        self.metrics_server: MetricsServer | None = None
        self.coordinator: Coordinator | None = None
        self.exchange: ExchangeSimulator | None = None
        self.bus = EventBus()
        self.recorder = DatabaseRecorder(capacity=RECORDER_CAPACITY)
        self.store = DjangoSessionStore()
        self._pending_shutdown = ""
        self.control: ControlListener | None = None

    async def run(self, *, handle_signals: bool = True) -> None:
        """Run until shutdown."""
        config = self.config
        self.bus.subscribe(
            "channel_layer", ChannelLayerBroadcaster(get_channel_layer(), config.console_group), queue_size=5000
        )
        ws_url, api_url = config.ws_url, config.api_url
        rest: KalshiExchangeRest | None = None
        layer = get_channel_layer()
        # This trader's own control channel; its name goes on the session row so consoles can address it.
        # The default prefix matters: channels-redis reads every process-local channel of a layer through
        # one Redis list, and a channel with another prefix would hold that read and starve the consumers.
        control_address = await layer.new_channel()
        try:
            if config.start_exchange:
                self.exchange = await start_exchange(config)
                ws_url, api_url = self.exchange.ws_url, self.exchange.api_url
                logger.info("built-in exchange listening on %s", ws_url)
            if api_url and (config.discover or config.crosscheck_interval):
                rest = KalshiExchangeRest(KalshiRestClient(api_url, config.credentials))
            self.coordinator = Coordinator(
                options=CoordinatorOptions(
                    environment=config.environment.value,
                    markets=list(config.markets),  # the coordinator adds and removes markets
                    exchange_url=ws_url,
                    heartbeat_stale_after=config.heartbeat_stale_after,
                    feed_idle_timeout=config.feed_idle_timeout,
                    orderbook_interval=config.orderbook_interval,
                    orderbooks_per_tick=config.orderbooks_per_tick,
                    discover=config.discover,
                    crosscheck_interval=config.crosscheck_interval,
                    spill_dir=config.unwritten_dir,
                    control_address=control_address,
                    replay_of=config.replay_of,
                ),
                client_factory=client_factory(config, ws_url),
                store=self.store,
                bus=self.bus,
                rest=rest,
                recorder=self.recorder,
                background={"control": lambda: self._listen_for_control(layer, control_address)},
                trading=trading_setup(config, ws_url, api_url),
            )
            if config.metrics_port is not None:
                self.metrics_server = self._serve_metrics(self.coordinator, config.metrics_host, config.metrics_port)
            if self._pending_shutdown:
                self.coordinator.request_shutdown(self._pending_shutdown)
            if handle_signals:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, self.request_shutdown, f"received {sig.name}")
            await self.coordinator.run()
        finally:
            if self.metrics_server is not None:
                await self.metrics_server.close()
            # The coordinator has written (or saved) the recording by its shutdown deadline; whatever came
            # after is saved too rather than waiting for a database that does not answer.
            await self.recorder.close(give_up_after=2.0, spill_dir=config.unwritten_dir)
            self.store.close()
            await self.bus.close()
            if rest is not None:
                await rest.aclose()
            if self.exchange is not None:
                await self.exchange.stop()

    def _serve_metrics(self, coordinator: Coordinator, host: str, port: int) -> MetricsServer:
        loop = asyncio.get_running_loop()
        collector = TraderCollector(lambda: on_loop(loop, lambda: live_shards(coordinator)), consoles=self._consoles)
        server = MetricsServer(collector, host=host, port=port)
        if self._on_metrics_listening is not None:
            self._on_metrics_listening(host, server.port)
        else:
            logger.info("metrics on http://%s:%d/metrics", host, server.port)
        return server

    async def _listen_for_control(self, layer: Any, address: str) -> None:
        assert self.coordinator is not None
        self.control = ControlListener(self.coordinator, layer, address)
        await self.control.run()

    def request_shutdown(self, reason: str) -> None:
        if self.coordinator is None:
            self._pending_shutdown = reason
        else:
            self.coordinator.request_shutdown(reason)
