"""The built-in Kalshi exchange assembled from its parts; here its books move and each change goes out.

An offline peer of Kalshi's WebSocket API v2 and a few REST endpoints, in plain asyncio on ``websockets``
(no Django). Each other job has its own module: ``gateway`` (signed handshake, REST), ``connections``
(per-connection sending and pings), ``commands`` (subscription commands), ``sequencing`` (sids and seqs),
``faultschedule`` (periodic drops and stalls), ``market`` (one market's book and its random walk),
``config`` and ``counts``.

Protocol as in kalshi-protocol.md: fixed-point strings (``"0.4200"``, ``"12.50"``), one ``seq`` counter per
``sid`` (global across connections here, starting at 1, shared by all markets on that sid), a
``heartbeat`` Ping every ``ping_interval`` seconds, error codes from ``apps.kalshi.messages``.

Books move by a seeded random walk. After every sequenced message the exchange remembers which book
state it described, so ``book_at(ticker, sid, seq)`` gives the exact book a correct client must hold.
Faults are switched through ``sim.faults`` (see ``apps.exchange.faults``) or the methods
``drop_connections``, ``stall_data``, ``fail_subscriptions`` and ``set_exchange_status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve

from apps.exchange import rest
from apps.exchange.accounts import AccountSettlement
from apps.exchange.commands import Commands
from apps.exchange.config import (
    DEFAULT_CLOSE_TIMES,
    DEFAULT_MARKETS,
    DEFAULT_STRUCTURES,
    FALLBACK_CLOSE_TIME,
    SimulatorConfig,
)
from apps.exchange.connections import Connections, Subscription
from apps.exchange.counts import FaultCounts, TrafficCounts
from apps.exchange.desk import Desk, DeskEvent
from apps.exchange.faults import Faults
from apps.exchange.faultschedule import FaultScheduler
from apps.exchange.gateway import Gateway
from apps.exchange.httpserver import HttpServer
from apps.exchange.market import LINEAR_CENT, PRICE_LEVEL_STRUCTURES, Change, SimMarket
from apps.exchange.matching import MAKER_FEE_RATE_CHARGED
from apps.exchange.portfolio import private_message
from apps.exchange.sequencing import Sequencer
from apps.kalshi.fixedpoint import DOLLAR
from apps.kalshi.messages import CHANNEL_ORDERBOOK, ERROR_CHANNEL, OrderbookDelta, delta_frame
from apps.kalshi.orderbook import OrderBook
from apps.kalshi.signing import WS_PATH, load_public_key

logger = logging.getLogger(__name__)


def _rfc3339(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ExchangeSimulator:
    """A faithful offline Kalshi exchange: ``await start()``, use ``ws_url``, ``api_url``, ``await stop()``.

    Runtime switches: assign fields of ``sim.faults``; call ``drop_connections()``, ``stall_data(seconds)``,
    ``fail_subscriptions(code, sid)``, ``set_exchange_status(...)``, ``set_market_status(...)``.
    """

    def __init__(self, config: SimulatorConfig) -> None:
        if not config.public_key_pem:
            raise ValueError("SimulatorConfig.public_key_pem is required")
        self.config = config
        tickers = list(config.markets) if config.markets is not None else list(DEFAULT_MARKETS)
        if not tickers or len(set(tickers)) != len(tickers):
            raise ValueError("markets must be a non-empty list of distinct tickers")
        self._markets: dict[str, SimMarket] = {}
        for ticker in tickers:
            structure = config.price_structures.get(ticker, DEFAULT_STRUCTURES.get(ticker, LINEAR_CENT))
            if structure not in PRICE_LEVEL_STRUCTURES:
                raise ValueError(f"{ticker}: unknown price level structure {structure!r}")
            self._markets[ticker] = SimMarket(
                ticker,
                structure=structure,
                rng=self._rng(f"market:{ticker}"),
                close_time=DEFAULT_CLOSE_TIMES.get(ticker, FALLBACK_CLOSE_TIME),
                history_size=config.history_size,
            )
        for ticker in config.maker_fee_markets:
            if ticker not in self._markets:
                raise ValueError(f"maker_fee_markets: unknown market {ticker!r}")
            self._markets[ticker].matching.maker_fee_rate = MAKER_FEE_RATE_CHARGED
        self._schedule_rng = self._rng("schedule")
        self.exchange_active = True
        self.trading_active = True
        self._traffic = TrafficCounts()
        self._fault_counts = FaultCounts()
        self._sequencer = Sequencer(config.history_size)
        self._connections = Connections(config, traffic=self._traffic, fault_counts=self._fault_counts)
        self._commands = Commands(
            markets=self._markets, connections=self._connections, sequencer=self._sequencer, traffic=self._traffic
        )
        self.desk = Desk(
            self._markets, starting_balance=config.starting_balance, trading_active=lambda: self.trading_active
        )
        """Accounts and orders; its changes reach the public stream and the private channels at once."""
        self.desk.on_book = lambda ticker: self._publish_book(self._markets[ticker])
        self.desk.on_event = self._send_private
        self._gateway = Gateway(
            config,
            public_key=load_public_key(config.public_key_pem),
            markets=self._markets,
            trading_status=lambda: (self.exchange_active, self.trading_active),
            traffic=self._traffic,
            fault_counts=self._fault_counts,
            desk=self.desk,
            settle=lambda ticker, result: len(self.settle_market(ticker, result)),
        )
        for key_id, pem in config.api_keys.items():
            self.register_key(key_id, pem)
        self._fault_schedule = FaultScheduler(
            config, drop_connections=self.drop_connections, fault_counts=self._fault_counts
        )
        self._server: Server | None = None
        self._rest_server: HttpServer | None = None
        self._port: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    def _rng(self, name: str) -> random.Random:
        # String seeds hash deterministically (unlike hash()), so each stream is repeatable per seed.
        return random.Random(f"{self.config.seed}:{name}") if self.config.seed is not None else random.Random()

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def faults(self) -> Faults:
        """The live fault switches; assigning a field takes effect at once."""
        return self.config.faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self.config.faults = value

    async def start(self) -> None:
        """Bind and start serving; ``port``, ``ws_url`` and ``api_url`` are valid afterwards."""
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        self._server = await serve(
            self._handle_connection,
            self.config.host,
            self.config.port,
            process_request=self._gateway.process_request,
            ping_interval=None,  # heartbeat pings are sent by Connections with Kalshi's body
            compression=None,
            close_timeout=1.0,
            logger=logging.getLogger("apps.exchange.websockets"),
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._rest_server = HttpServer(self._gateway.rest, self.config.host, self.config.rest_port)
        try:
            await self._rest_server.start()
        except OSError:
            self._server.close()
            raise
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="exchange-ticks"),
            asyncio.create_task(self._fault_schedule.run(), name="exchange-faults"),
        ]

    async def _handle_connection(self, ws: ServerConnection) -> None:
        await self._connections.serve(ws, self._commands.on_message)

    async def stop(self) -> None:
        """Close every connection and stop all tasks. Safe to call more than once."""
        if self._server is None or self._stopped:
            return
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._rest_server is not None:
            await self._rest_server.stop()
        self._server.close()
        try:
            await asyncio.wait_for(self._server.wait_closed(), timeout=3.0)
        except TimeoutError:
            self._connections.abort_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        return self._port

    @property
    def rest_port(self) -> int:
        if self._rest_server is None:
            raise RuntimeError("the simulator is not started")
        return self._rest_server.port

    def _netloc(self, port: int) -> str:
        host = self.config.host
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self._netloc(self.port)}{WS_PATH}"

    @property
    def api_url(self) -> str:
        return f"http://{self._netloc(self.rest_port)}{rest.API_PREFIX}"

    @property
    def markets(self) -> list[str]:
        """The simulated tickers, in order."""
        return list(self._markets)

    def market_id(self, ticker: str) -> str:
        return self._markets[ticker].market_id

    # ------------------------------------------------------------------------------------------ books

    def true_book(self, ticker: str) -> OrderBook:
        """A copy of the exchange's current book for ``ticker`` (KeyError if unknown)."""
        return self._markets[ticker].book.copy()

    def book_at(self, ticker: str, sid: int, seq: int) -> OrderBook | None:
        """The book of ``ticker`` exactly as it was when message ``seq`` of subscription ``sid`` was issued.

        That is the state a client holds after applying every message of ``sid`` up to and including
        ``seq``, whether that message was about ``ticker`` or another market on the same sid. The returned
        book has ``sid`` and ``seq`` set. None when the sid is unknown or ``seq`` is outside the retained
        window (the last ``history_size`` seqs of the sid and changes of the market; records of the last
        1024 ended subscriptions are kept). KeyError for an unknown ticker.
        """
        market = self._markets[ticker]
        event = self._sequencer.event_at(sid, seq)
        state = market.book_at_event(event) if event is not None else None
        if state is None:
            return None
        book = OrderBook(ticker)
        book.market_id = market.market_id
        book.sid = sid
        book.seq = seq
        book.yes, book.no = state
        return book

    # ------------------------------------------------------------------------------------------ control

    @property
    def stats(self) -> dict[str, Any]:
        """Counters (see ``apps.exchange.counts``), connections and subscriptions (open now) and faults
        (how often each fault kind happened)."""
        stats: dict[str, Any] = self._traffic.as_dict()
        stats["connections"] = len(self._connections.open)
        stats["subscriptions"] = len(self._connections.subscriptions())
        stats["faults"] = self._fault_counts.as_dict()
        return stats

    def set_exchange_status(self, exchange_active: bool, trading_active: bool | None = None) -> None:
        """Open or close the exchange (GET /exchange/status). Books do not move while trading is off."""
        self.exchange_active = exchange_active
        self.trading_active = exchange_active if trading_active is None else trading_active

    def set_market_status(self, ticker: str, status: str) -> None:
        """Set a market's REST status (active, closed, finalized, ...); only active markets move."""
        if status not in rest.MARKET_STATUSES:
            raise ValueError(f"unknown market status {status!r}")
        self._markets[ticker].status = status

    def register_key(self, key_id: str, public_key_pem: bytes) -> None:
        """Accept requests signed by another API key (``key_id`` in KALSHI-ACCESS-KEY): an account of its own."""
        self._gateway.keys[key_id] = load_public_key(public_key_pem)

    def settle_market(self, ticker: str, result: str) -> list[AccountSettlement]:
        """Settle ``ticker`` (yes or no): resting orders are cancelled, the market is finalized and every
        position is paid $1 per winning contract. KeyError for an unknown market."""
        if result not in ("yes", "no"):
            raise ValueError("a market settles yes or no")
        return self.desk.settle(ticker, "yes" if result == "yes" else "no")

    def drop_connections(self) -> int:
        """Abort every open connection without a close frame; returns how many were dropped."""
        dropped = self._connections.abort_all()
        self._fault_counts.drop += dropped
        return dropped

    def stall_data(self, seconds: float) -> None:
        """Produce no orderbook deltas for ``seconds`` (pings and command replies continue)."""
        self._fault_schedule.stall_data(seconds)

    def fail_subscriptions(self, code: int = ERROR_CHANNEL, sid: int | None = None) -> int:
        """End subscriptions with a terminal error (10 or 25): one sid, or every orderbook subscription.

        Returns how many ended.
        """
        ended = 0
        for sub in self._connections.subscriptions():
            if (sid is None and sub.channel == CHANNEL_ORDERBOOK) or sub.sid == sid:
                self._connections.end_subscription(sub, code)
                self._fault_counts.subscription_error += 1
                ended += 1
        return ended

    # ------------------------------------------------------------------------------------------ data

    def publish_change(self, ticker: str, change: Change, ts_ms: int | None = None) -> None:
        """Have the house make one book change and send what it did to every subscriber of the market, as a
        generated one is.

        Public so a change decided elsewhere (a recorded session being replayed) moves the book too.
        ValueError when it would leave a negative size.
        """
        market = self._markets[ticker]
        fills = market.house_change(change)
        self._publish_book(market, ts_ms)
        self.desk.house_fills(fills)

    def _publish_book(self, market: SimMarket, ts_ms: int | None = None) -> None:
        """Send the matching book's level changes since the last call as orderbook deltas."""
        ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
        for change in market.take_changes():
            market.apply(change, self._sequencer.next_event())
            for sub in self._connections.subscriptions():
                if sub.active and sub.channel == CHANNEL_ORDERBOOK and market.ticker in sub.tickers:
                    self._send_delta(sub, market, change, ts_ms)

    def _send_delta(self, sub: Subscription, market: SimMarket, change: Change, ts_ms: int) -> None:
        seq = self._sequencer.issue(sub.log)
        sub.deltas += 1
        faults = self.faults
        if faults.skip_seq_every and sub.deltas % faults.skip_seq_every == 0:
            self._fault_counts.skip_seq += 1
        else:
            price = change.price
            if sub.use_yes_price and change.side == "no":
                price = DOLLAR - price
            delta = OrderbookDelta(
                sid=sub.sid,
                seq=seq,
                market_ticker=market.ticker,
                market_id=market.market_id,
                price=price,
                delta=change.delta,
                side=change.side,
                ts_ms=ts_ms,
            )
            frame = delta_frame(delta)
            frame["msg"]["ts"] = _rfc3339(ts_ms)
            self._traffic.deltas_sent += 1
            self._connections.enqueue(sub.connection, frame, sub.sid)
        if faults.error_every and sub.deltas % faults.error_every == 0 and sub.active:
            self._fault_counts.subscription_error += 1
            self._connections.end_subscription(sub, faults.error_code)

    def _active_markets(self) -> list[str]:
        wanted: set[str] = set()
        for sub in self._connections.subscriptions():
            if sub.channel == CHANNEL_ORDERBOOK:
                wanted.update(sub.tickers)
        # Config order, not set order, so the schedule is repeatable for a seed.
        return [t for t, m in self._markets.items() if t in wanted and m.status == "active"]

    def _produce_delta(self) -> bool:
        """Move one subscribed market by one change and fan it out; False when nothing is subscribed."""
        active = self._active_markets()
        if not active:
            return False
        market = self._markets[self._schedule_rng.choice(active)]
        fills = market.house_change(market.next_change())
        self._publish_book(market)
        self.desk.house_fills(fills)
        return True

    def _send_private(self, event: DeskEvent) -> None:
        """Send a desk event to the owner's subscriptions of its private channel (these carry no seq)."""
        now_ms = int(time.time() * 1000)
        channel, kind, owner, ticker, msg = private_message(event, now_ms)
        for sub in self._connections.subscriptions():
            if not (sub.active and sub.channel == channel and sub.connection.owner == owner):
                continue
            if sub.tickers and ticker not in sub.tickers:
                continue
            faults = self.faults
            if faults.drop_private > 0:
                faults.drop_private -= 1
                self._fault_counts.drop_private += 1
                continue
            self._traffic.private_sent += 1
            self._connections.enqueue(sub.connection, {"type": kind, "sid": sub.sid, "msg": msg}, sub.sid)

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        owed = 0.0
        while True:
            rate = self.config.message_rate
            await asyncio.sleep(min(0.05, max(0.002, 1.0 / rate)) if rate > 0 else 0.05)
            now = loop.time()
            elapsed, last = now - last, now
            self.desk.expire()
            if rate <= 0 or self._fault_schedule.stalled(now) or not self.trading_active:
                owed = 0.0
                continue
            # A late wake-up must not turn into a burst of more than a quarter second's worth.
            owed = min(owed + elapsed * rate, max(1.0, rate / 4))
            while owed >= 1.0:
                owed -= 1.0
                if not self._produce_delta():
                    owed = 0.0
                    break
