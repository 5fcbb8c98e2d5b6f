"""The one way tests build a Coordinator, and the stand-ins the component tests run it with.

Stand-ins take real-shaped frames (parsed by the protocol module), keep real OrderBooks, and can be held
(an asyncio.Event that is cleared) to play a database or recorder that stops answering.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from apps.kalshi.client import KalshiWebSocketClient
from apps.kalshi.feed import (
    ConnectionStatus,
    FeedCounters,
    FeedEvent,
    FeedEventKind,
    FeedListener,
    FeedStatus,
    MarketChange,
    MarketMessage,
)
from apps.kalshi.messages import OrderbookDelta, OrderbookSnapshot, parse_frame
from apps.kalshi.orderbook import OrderBook
from apps.kalshi.signing import Credentials
from apps.trader.core.coordinator import Coordinator, CoordinatorOptions
from apps.trader.core.eventbus import EventBus
from apps.trader.core.ports import FeedClientFactory, Recorder, SessionStore
from apps.trader.core.statemachine import Transition
from apps.trader.core.supervisor import BackgroundTask
from apps.trader.core.trading.engine import TradingSetup
from apps.trader.core.trading.records import TradingRecord

MARKETS = ["KXFED-26DEC-T4.25", "KXCPI-26DEC-T0.3", "KXBTCD-26DEC31-T100000"]


def build_coordinator(
    client_factory: FeedClientFactory,
    *,
    bus: EventBus,
    store: SessionStore | None = None,
    recorder: Recorder | None = None,
    background: dict[str, BackgroundTask] | None = None,
    markets: list[str] | None = None,
    exchange_url: str = "ws://127.0.0.1:9/trade-api/ws/v2",
    trading: TradingSetup | None = None,
    **options: Any,
) -> Coordinator:
    """A coordinator with quick status and book ticks; the store defaults to the Django one."""
    if store is None:
        from apps.trader.services import DjangoSessionStore

        store = DjangoSessionStore()
    settings: dict[str, Any] = {"status_interval": 0.1, "orderbook_interval": 0.05, **options}
    return Coordinator(
        options=CoordinatorOptions(
            environment="sim",
            markets=list(MARKETS if markets is None else markets),
            exchange_url=exchange_url,
            **settings,
        ),
        client_factory=client_factory,
        store=store,
        bus=bus,
        recorder=recorder,
        background=background,
        trading=trading,
    )


def exchange_clients(url: str, credentials: Credentials, **client_options: Any) -> FeedClientFactory:
    """Real clients of the exchange at ``url``."""

    def factory(listener: FeedListener, markets: list[str]) -> KalshiWebSocketClient:
        return KalshiWebSocketClient(
            url=url, credentials=credentials, markets=markets, listener=listener, **client_options
        )

    return factory


def coordinator_for(
    url: str,
    credentials: Credentials,
    bus: EventBus,
    background: dict[str, BackgroundTask] | None = None,
    store: SessionStore | None = None,
    trading: TradingSetup | None = None,
    **options: Any,
) -> Coordinator:
    """A coordinator whose clients connect to the exchange at ``url`` (and trade there, given ``trading``)."""
    return build_coordinator(
        exchange_clients(url, credentials),
        bus=bus,
        store=store,
        background=background,
        exchange_url=url,
        trading=trading,
        **options,
    )


# ---------------------------------------------------------------------------------------------- frames


def snapshot(ticker: str, sid: int, seq: int, yes: Sequence[tuple[str, str]], no: Sequence[tuple[str, str]]) -> Any:
    frame = {
        "type": "orderbook_snapshot",
        "sid": sid,
        "seq": seq,
        "msg": {
            "market_ticker": ticker,
            "market_id": f"id-{ticker}",
            "yes_dollars_fp": [list(level) for level in yes],
            "no_dollars_fp": [list(level) for level in no],
        },
    }
    message = parse_frame(frame)
    assert isinstance(message, OrderbookSnapshot)
    return message


def delta(ticker: str, sid: int, seq: int, price: str, size: str, side: str = "yes", ts_ms: int = 0) -> Any:
    frame = {
        "type": "orderbook_delta",
        "sid": sid,
        "seq": seq,
        "msg": {
            "market_ticker": ticker,
            "market_id": f"id-{ticker}",
            "price_dollars": price,
            "delta_fp": size,
            "side": side,
            "ts_ms": ts_ms,
        },
    }
    message = parse_frame(frame)
    assert isinstance(message, OrderbookDelta)
    return message


# ---------------------------------------------------------------------------------------------- stand-ins


class StandInClient:
    """A FeedClient the test drives: ``feed`` applies a message to its book and tells the listener, as the
    real client does; ``event`` sends a feed event. ``run`` lasts until ``close``."""

    def __init__(self, listener: FeedListener, markets: list[str]) -> None:
        self.listener = listener
        self.url = "ws://stand-in"
        self.markets = list(markets)
        self.books: dict[str, OrderBook] = {}
        self.stale: set[str] = set(markets)
        self.metrics = FeedCounters()
        self.status = ConnectionStatus.CONNECTING
        self.last_message_at: float | None = None
        self.resynced: list[list[str]] = []
        self._closed = asyncio.Event()

    async def run(self) -> None:
        await self._closed.wait()

    async def close(self) -> None:
        self._closed.set()

    def feed_status(self) -> FeedStatus:
        connected = self.status is ConnectionStatus.CONNECTED
        return FeedStatus(
            connection=self.status,
            stale_markets=len(self.stale),
            counters=copy.deepcopy(self.metrics),
            last_message_at=self.last_message_at,
            uptime=1.0 if connected else None,
            silent_for=0.0,
        )

    async def feed(self, message: MarketMessage) -> None:
        book = self.books.setdefault(message.market_ticker, OrderBook(message.market_ticker))
        self.metrics.messages_received += 1
        if isinstance(message, OrderbookSnapshot):
            book.apply_snapshot(message)
            self.metrics.snapshots_received += 1
            self.stale.discard(message.market_ticker)
        else:
            book.apply_delta(message)
            self.metrics.deltas_received += 1
        pending = self.listener.on_market_message(message, book)
        if pending is not None:
            await pending

    async def event(self, kind: FeedEventKind, **fields: Any) -> None:
        event = FeedEvent(kind, **fields)
        if kind is FeedEventKind.SYNCED:
            self.status = ConnectionStatus.CONNECTED
        elif kind is FeedEventKind.GAP:  # as the real client: counted, and its markets stale until a snapshot
            self.metrics.gaps_detected += 1
            self.stale.update(event.markets)
        await self.listener.on_feed_event(event)

    async def add_markets(self, tickers: list[str], *, wait: float = 5.0) -> MarketChange:
        self.markets += [t for t in tickers if t not in self.markets]
        return MarketChange(done=list(tickers))

    async def remove_markets(self, tickers: list[str], *, wait: float = 5.0) -> MarketChange:
        done = [t for t in tickers if t in self.markets]
        self.markets = [t for t in self.markets if t not in done]
        return MarketChange(done=done)

    async def resync(self, tickers: list[str]) -> None:
        self.resynced.append(list(tickers))


class StandInClients:
    """A FeedClientFactory that keeps every client it built."""

    def __init__(self) -> None:
        self.built: list[StandInClient] = []

    def __call__(self, listener: FeedListener, markets: list[str]) -> StandInClient:
        self.built.append(StandInClient(listener, markets))
        return self.built[-1]

    @property
    def last(self) -> StandInClient:
        return self.built[-1]


class MemoryStore:
    """A SessionStore in memory; while ``answering`` is clear every write waits, as on a stuck database."""

    def __init__(self) -> None:
        self.answering = asyncio.Event()
        self.answering.set()
        self.transitions: list[Transition] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.trading: list[TradingRecord] = []
        self.heartbeat_calls = 0
        """Heartbeat writes begun (written or still waiting)."""
        self.ended: dict[str, Any] | None = None

    async def session_start(
        self,
        *,
        environment: str,
        markets: list[str],
        exchange_url: str,
        control_address: str = "",
        replay_of: int | None = None,
    ) -> int:
        return 1

    async def transition_record(self, *, session_id: int, transition: Transition) -> None:
        await self.answering.wait()
        self.transitions.append(transition)

    async def session_heartbeat(self, *, session_id: int, **fields: Any) -> None:
        self.heartbeat_calls += 1
        await self.answering.wait()
        self.heartbeats.append(fields)

    async def trading_records(self, *, session_id: int, records: Sequence[TradingRecord]) -> None:
        await self.answering.wait()
        self.trading.extend(records)

    async def session_end(self, *, session_id: int, failed: bool, error: str) -> None:
        await self.answering.wait()
        self.ended = {"failed": failed, "error": error}


class ListRecorder:
    """A Recorder that keeps what it is handed, in order; while ``writing`` is clear each call waits, as the
    real recorder does when its batch write is stuck and its buffer is full."""

    def __init__(self) -> None:
        self.writing = asyncio.Event()
        self.writing.set()
        self.rows: list[tuple[Any, ...]] = []

    async def record(self, session_id: int, message: MarketMessage, received_us: int) -> None:
        await self.writing.wait()
        self.rows.append(("message", message.market_ticker, message.sid, message.seq))

    def take(self, session_id: int, message: MarketMessage, received_us: int) -> Awaitable[None]:
        return self.record(session_id, message, received_us)

    async def record_gap(
        self,
        session_id: int,
        *,
        kind: str,
        sid: int | None,
        expected_seq: int | None,
        received_seq: int | None,
        markets: Sequence[str],
        detected_at: datetime,
    ) -> None:
        await self.writing.wait()
        self.rows.append(("gap", kind, sid, expected_seq, received_seq, tuple(markets)))

    async def mark_healed(self, session_id: int, *, healed_at: datetime) -> None:
        await self.writing.wait()
        self.rows.append(("healed",))

    async def flush(self) -> None:
        await self.writing.wait()

    def spill(self, directory: Path) -> tuple[int, Path | None]:
        return 0, None

    def metrics(self) -> dict[str, Any]:
        return {"queued": 0, "written": len(self.rows)}
