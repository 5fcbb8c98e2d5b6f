"""The orderbook client against the simulator throwing each fault: once healed, every book is exact."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.backoff import Backoff
from apps.kalshi.client import KalshiWebSocketClient
from apps.kalshi.feed import ConnectionStatus, FeedEvent, FeedEventKind, MarketMessage
from apps.kalshi.messages import ERROR_BUFFER_OVERFLOW, ERROR_CHANNEL
from apps.kalshi.orderbook import OrderBook
from apps.kalshi.signing import Credentials
from tests.support import StartSim, eventually

MARKETS = ["KXFED-26DEC-T4.25", "KXCPI-26DEC-T0.3", "KXBTCD-26DEC31-T100000"]


class Listener:
    def __init__(self, delay: float = 0.0) -> None:
        self.events: list[FeedEvent] = []
        self.applied = 0
        self.delay = delay

    async def on_feed_event(self, event: FeedEvent) -> None:
        self.events.append(event)

    async def on_market_message(self, message: MarketMessage, book: OrderBook) -> None:
        self.applied += 1
        if self.delay:
            await asyncio.sleep(self.delay)  # a slow reader: the exchange's buffer for us fills up

    def kinds(self) -> list[FeedEventKind]:
        return [e.kind for e in self.events]


@pytest.fixture
async def exchange(start_sim: StartSim) -> ExchangeSimulator:
    return await start_sim(message_rate=400.0, seed=11, ping_interval=0.2)


@pytest.fixture
def make_client(credentials: Credentials, exchange: ExchangeSimulator) -> Callable[..., KalshiWebSocketClient]:

    def make(listener: Listener, **options: Any) -> KalshiWebSocketClient:
        return KalshiWebSocketClient(
            url=exchange.ws_url,
            credentials=credentials,
            markets=list(MARKETS),
            listener=listener,
            backoff=Backoff(initial=0.05, cap=0.2),
            **options,
        )

    return make


def assert_books_equal_the_exchange(client: KalshiWebSocketClient, exchange: ExchangeSimulator) -> None:
    assert not client.stale
    for ticker in client.markets:
        book = client.books[ticker]
        assert book.sid is not None and book.seq is not None
        truth = exchange.book_at(ticker, book.sid, book.seq)
        assert truth is not None, f"{ticker} at seq {book.seq} is outside the exchange's history"
        assert book.as_wire() == truth.as_wire(), ticker


async def run_healed(
    client: KalshiWebSocketClient, exchange: ExchangeSimulator, heal: Callable[[], None], healed: Callable[[], bool]
) -> None:
    """Run the client through a fault, switch the fault off, and check every book once healed."""
    task = asyncio.create_task(client.run())
    try:
        await eventually(healed, 15)
        heal()
        await eventually(lambda: client.status is ConnectionStatus.CONNECTED and not client.stale, 15)
        await eventually(lambda: client.metrics.deltas_received > 0)
        assert_books_equal_the_exchange(client, exchange)
    finally:
        await client.close()
        await task


async def test_skipped_seq_is_a_gap_that_heals_with_fresh_snapshots(make_client, exchange) -> None:
    listener = Listener()
    client: KalshiWebSocketClient = make_client(listener)
    exchange.faults.skip_seq_every = 25

    def gaps_healed() -> bool:
        metrics = client.metrics
        return metrics.gaps_detected >= 3 and metrics.resyncs >= 3

    def heal() -> None:
        exchange.faults.skip_seq_every = None

    await run_healed(client, exchange, heal, gaps_healed)
    gap = next(e for e in listener.events if e.kind is FeedEventKind.GAP)
    assert gap.sid is not None and gap.received_seq == gap.expected_seq + 1  # type: ignore[operator]
    assert set(gap.markets) == set(MARKETS)
    assert client.metrics.stale_deltas_dropped >= 0


async def test_dropped_connections_reconnect_and_resubscribe(make_client, exchange) -> None:
    listener = Listener()
    client = make_client(listener)
    exchange.faults.drop_every = 0.3

    def heal() -> None:
        exchange.faults.drop_every = None

    await run_healed(client, exchange, heal, lambda: client.metrics.reconnects >= 3)
    disconnects = [e for e in listener.events if e.kind is FeedEventKind.DISCONNECTED]
    assert len(disconnects) >= 3
    assert all(0 < e.delay <= 0.2 * 1.2 for e in disconnects)


@pytest.mark.parametrize(("live_after", "streak"), [(0.05, False), (60.0, True)])
async def test_a_connection_that_had_its_books_live_ends_the_back_off_streak(
    make_client, exchange, live_after: float, streak: bool
) -> None:
    listener = Listener()
    client = make_client(listener, live_after=live_after)
    exchange.faults.drop_every = 0.4

    def heal() -> None:
        exchange.faults.drop_every = None

    await run_healed(client, exchange, heal, lambda: client.metrics.reconnects >= 3)
    attempts = [e.attempt for e in listener.events if e.kind is FeedEventKind.DISCONNECTED]
    synced = [e for e in listener.events if e.kind is FeedEventKind.SYNCED]
    assert len(attempts) >= 3 and len(synced) >= 3  # every connection got its books live before it was dropped
    # Books live for live_after: each drop is a first attempt again; otherwise the streak keeps counting.
    assert attempts[:3] == ([1, 2, 3] if streak else [1, 1, 1])


@pytest.mark.parametrize("code", [ERROR_CHANNEL, ERROR_BUFFER_OVERFLOW])
async def test_terminal_errors_end_the_subscription_and_the_client_resubscribes(make_client, exchange, code) -> None:
    listener = Listener()
    client = make_client(listener)
    exchange.faults.error_every = 40
    exchange.faults.error_code = code

    def heal() -> None:
        exchange.faults.error_every = None

    await run_healed(client, exchange, heal, lambda: client.metrics.errors_by_code[code] >= 2)
    assert client.metrics.resubscribes >= 2
    assert client.metrics.reconnects == 0  # the connection itself stayed up


async def test_malformed_and_oversized_frames_are_counted_and_survived(make_client, exchange) -> None:
    listener = Listener()
    client = make_client(listener)
    exchange.faults.malformed_every = 15
    exchange.faults.oversized_every = 200

    def heal() -> None:
        exchange.faults.malformed_every = None
        exchange.faults.oversized_every = None

    await run_healed(
        client,
        exchange,
        heal,
        lambda: client.metrics.malformed_frames >= 5 and sum(client.metrics.unknown_types.values()) >= 1,
    )
    assert client.metrics.reconnects == 0


async def test_a_data_stall_with_pings_is_quiet_not_dead(make_client, exchange) -> None:
    listener = Listener()
    client = make_client(listener, idle_timeout=0.6)
    task = asyncio.create_task(client.run())
    try:
        await eventually(lambda: not client.stale and client.status is ConnectionStatus.CONNECTED)
        exchange.faults.stall = True
        pings_at_stall = exchange.stats["pings_sent"]
        # Five pings 0.2 s apart: a data silence well past the idle timeout, with pings arriving throughout.
        await eventually(lambda: exchange.stats["pings_sent"] >= pings_at_stall + 5, what="five pings in the stall")
        assert client.metrics.reconnects == 0
        assert (client.silent_for() or 0) < 0.6
        exchange.faults.stall = False
        await eventually(lambda: client.metrics.deltas_received > 10)
        assert_books_equal_the_exchange(client, exchange)
    finally:
        await client.close()
        await task


async def test_a_silent_socket_is_dead_and_reconnected(make_client, exchange) -> None:
    listener = Listener()
    client = make_client(listener, idle_timeout=0.5)
    exchange.faults.stall = True
    exchange.faults.no_ping = True

    def heal() -> None:
        exchange.faults.stall = False
        exchange.faults.no_ping = False

    await run_healed(client, exchange, heal, lambda: client.metrics.reconnects >= 1)
    lost = next(e for e in listener.events if e.kind is FeedEventKind.DISCONNECTED)
    assert "socket silent" in lost.reason


async def test_a_reader_too_slow_for_the_exchange_is_cut_off_with_error_25_and_recovers(
    start_sim: StartSim, credentials: Credentials
) -> None:
    # The client's kernel buffer (megabytes once autotuned) fills before the exchange's queue: a fast feed
    # overflows in well under a second where 3,000 messages/s took over ten.
    sim = await start_sim(message_rate=30_000.0, seed=5, outbound_limit=100, socket_send_buffer=4096)
    listener = Listener(delay=0.004)
    client = KalshiWebSocketClient(
        url=sim.ws_url,
        credentials=credentials,
        markets=list(MARKETS),
        listener=listener,
        backoff=Backoff(initial=0.05, cap=0.2),
    )

    def heal() -> None:
        listener.delay = 0.0
        sim.config.message_rate = 100.0

    await run_healed(client, sim, heal, lambda: client.metrics.errors_by_code[ERROR_BUFFER_OVERFLOW] >= 1)


async def test_markets_are_added_and_removed_on_the_live_subscription(make_client, exchange) -> None:
    listener = Listener()
    client = make_client(listener)
    task = asyncio.create_task(client.run())
    try:
        await eventually(lambda: not client.stale and client.status is ConnectionStatus.CONNECTED)
        extra = [m for m in exchange.markets if m not in MARKETS][:2]
        assert (await client.add_markets(extra)).done == extra
        await eventually(lambda: not client.stale and all(client.books[t].seq for t in extra))
        await client.remove_markets([MARKETS[0]])
        assert MARKETS[0] not in client.books
        await eventually(lambda: client.metrics.deltas_received > 50)
        assert sorted(client.markets) == sorted([*MARKETS[1:], *extra])
        assert_books_equal_the_exchange(client, exchange)
        assert client.metrics.reconnects == 0
    finally:
        await client.close()
        await task
