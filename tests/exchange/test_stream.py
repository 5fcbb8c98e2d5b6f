"""The stream exchange serves a valid Kalshi stream: the real feed client ends with the true books."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from apps.exchange.stream import StreamExchange, build_stream
from apps.kalshi.client import KalshiWebSocketClient
from apps.kalshi.discovery import discover_markets
from apps.kalshi.feed import FeedEvent, MarketMessage
from apps.kalshi.messages import OrderbookDelta, OrderbookSnapshot, parse_message, subscribe_command
from apps.kalshi.orderbook import OrderBook
from apps.kalshi.rest import KalshiRestClient
from apps.kalshi.signing import WS_PATH, Credentials
from tests import keys
from tests.exchange.helpers import PingRecordingConnection
from tests.support import TEST_KEY_ID, eventually

StartStream = Callable[..., AsyncIterator[StreamExchange]]


class Recorder:
    """A feed listener that keeps every applied message."""

    def __init__(self) -> None:
        self.messages: list[MarketMessage] = []
        self.changed = asyncio.Event()

    async def on_feed_event(self, event: FeedEvent) -> None:
        pass

    async def on_market_message(self, message: MarketMessage, book: OrderBook) -> None:
        self.messages.append(message)
        self.changed.set()

    async def wait_for(self, count: int) -> None:
        while len(self.messages) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), timeout=30)


@pytest.fixture
async def exchange(key_pair: tuple[bytes, bytes]) -> AsyncIterator[StreamExchange]:
    events: list[dict[str, Any]] = []
    stream = build_stream(5, 3000, paced=40, seed=7)
    served = StreamExchange(stream=stream, public_key_pem=key_pair[1], key_id=TEST_KEY_ID, on_event=events.append)
    await served.start()
    yield served
    await served.stop()


async def test_the_feed_client_ends_with_the_true_books_and_consecutive_seq(
    exchange: StreamExchange, credentials: Credentials
) -> None:
    stream = exchange.stream
    listener = Recorder()
    client = KalshiWebSocketClient(
        url=exchange.ws_url, credentials=credentials, markets=stream.tickers, listener=listener
    )
    running = asyncio.create_task(client.run())
    try:
        await listener.wait_for(stream.flood_messages)
        assert exchange.pace(2000) == 1
        await listener.wait_for(stream.messages)
    finally:
        await client.close()
        await running

    seqs = [message.seq for message in listener.messages]
    assert seqs == list(range(1, stream.messages + 1))
    assert {m.sid for m in listener.messages} == {1}
    assert all(isinstance(m, OrderbookSnapshot) for m in listener.messages[: len(stream.tickers)])
    assert all(isinstance(m, OrderbookDelta) for m in listener.messages[len(stream.tickers) :])
    for ticker in stream.tickers:
        assert client.books[ticker].as_wire() == stream.final_books[ticker].as_wire()
        top = client.books[ticker].top()
        assert top.yes_bid is None or top.yes_ask is None or top.yes_bid[0] < top.yes_ask[0]
    assert client.metrics.gaps_detected == 0
    assert client.metrics.malformed_frames == 0


async def test_paced_deltas_carry_the_time_they_were_sent(exchange: StreamExchange, credentials: Credentials) -> None:
    stream = exchange.stream
    headers = credentials.headers("GET", WS_PATH, time.time_ns() // 1_000_000)
    async with connect(exchange.ws_url, additional_headers=headers, max_queue=None) as ws:
        await ws.send(json.dumps(subscribe_command(1, stream.tickers)))
        for _ in range(stream.flood_messages + 1):
            await ws.recv()
        await asyncio.sleep(0)  # the flood's last write returns before it is marked sent
        await eventually(lambda: exchange.pace(1000) > 0, what="the paced part to start")
        paced_from = time.time_ns() // 1_000_000
        stamps = []
        for _ in range(len(stream.paced)):
            message = parse_message(await ws.recv())
            assert isinstance(message, OrderbookDelta)
            stamps.append(message.ts_ms)
    assert all(stamp is not None and stamp >= paced_from - 1 for stamp in stamps)


async def test_an_unsigned_or_wrongly_signed_handshake_is_refused(exchange: StreamExchange) -> None:
    other = keys.credentials("stranger", TEST_KEY_ID)
    for headers in ({}, other.headers("GET", WS_PATH, time.time_ns() // 1_000_000)):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(exchange.ws_url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 401


async def test_discovery_pages_through_every_stream_market(
    key_pair: tuple[bytes, bytes], credentials: Credentials
) -> None:
    stream = build_stream(2500, 0)
    served = StreamExchange(stream=stream, public_key_pem=key_pair[1], key_id=TEST_KEY_ID)
    await served.start()
    try:
        async with KalshiRestClient(served.api_url, credentials) as rest:
            assert await discover_markets(rest, 2500) == stream.tickers
    finally:
        await served.stop()


async def test_commands_the_stream_cannot_serve_are_answered_with_kalshi_errors(
    exchange: StreamExchange, credentials: Credentials
) -> None:
    headers = credentials.headers("GET", WS_PATH, time.time_ns() // 1_000_000)
    async with connect(exchange.ws_url, additional_headers=headers, max_queue=None) as ws:
        await ws.send(json.dumps(subscribe_command(1, exchange.stream.tickers[:2])))
        assert json.loads(await ws.recv())["msg"]["code"] == 1
        await ws.send(json.dumps(subscribe_command(2, ["KXNOPE-1"])))
        refused = json.loads(await ws.recv())
        assert (refused["id"], refused["msg"]["code"], refused["msg"]["market_tickers"]) == (2, 11, ["KXNOPE-1"])
        await ws.send(json.dumps({"id": 3, "cmd": "list_subscriptions"}))
        assert json.loads(await ws.recv()) == {"type": "ok", "msg": [], "id": 3}
        await ws.send(json.dumps({"id": 4, "cmd": "dance"}))
        assert json.loads(await ws.recv())["msg"]["code"] == 5


async def test_it_pings_like_kalshi_and_answers_a_client_ping(
    key_pair: tuple[bytes, bytes], credentials: Credentials
) -> None:
    served = StreamExchange(
        stream=build_stream(2, 10), public_key_pem=key_pair[1], key_id=TEST_KEY_ID, ping_interval=0.05
    )
    await served.start()
    try:
        headers = credentials.headers("GET", WS_PATH, time.time_ns() // 1_000_000)
        async with connect(
            served.ws_url, additional_headers=headers, create_connection=PingRecordingConnection, ping_interval=None
        ) as ws:
            assert isinstance(ws, PingRecordingConnection)
            await asyncio.wait_for(await ws.ping(b""), timeout=5)  # the pong came back
            await eventually(lambda: bool(ws.pings), seconds=5, what="a ping")  # taken off the socket as they arrive
            assert ws.pings[0] == b"heartbeat"
    finally:
        await served.stop()
