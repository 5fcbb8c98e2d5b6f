"""Adding markets: a ticker is live only once the exchange accepts it; a refusal never poisons the feed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.backoff import Backoff
from apps.kalshi.client import KalshiWebSocketClient
from apps.kalshi.feed import ConnectionStatus, FeedEventKind
from apps.kalshi.messages import ERROR_INVALID_PARAMETER
from apps.kalshi.signing import Credentials
from tests.kalshi.test_client_faults import Listener, assert_books_equal_the_exchange
from tests.support import StartSim, eventually

FED, CPI, NBA = "KXFED-26DEC-T4.25", "KXCPI-26DEC-T0.3", "KXNBA-26-LAL"
UNKNOWN = "KXNOPE-26DEC-T1"
"""Well-formed, but no market of the exchange."""

Frame = dict[str, Any]


def snapshot(sid: int, seq: int, ticker: str) -> Frame:
    return {
        "type": "orderbook_snapshot",
        "sid": sid,
        "seq": seq,
        "msg": {"market_ticker": ticker, "market_id": "9b0f6b43-5b68-4f9f-9f02-9a2d1b8ac1a1"},
    }


class ScriptedExchange:
    """A loopback WebSocket peer: ``subscribe`` is accepted with a snapshot per market; what it answers to
    ``update_subscription`` is up to the test (``on_update``). Frames have Kalshi's real shapes."""

    def __init__(self, on_update: Callable[[Frame, list[str]], list[Frame]]) -> None:
        self.on_update = on_update
        self.commands: list[Frame] = []
        self.connections: list[ServerConnection] = []
        self.server: Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/trade-api/ws/v2"

    async def handle(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        subscribed: list[str] = []
        seq = 0
        async for raw in ws:
            command = json.loads(raw)
            self.commands.append(command)
            params = command.get("params", {})
            if command["cmd"] == "subscribe":
                subscribed = list(params["market_tickers"])
                frames = [{"id": command["id"], "type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": 1}}]
                for ticker in subscribed:
                    seq += 1
                    frames.append(snapshot(1, seq, ticker))
            else:
                frames = self.on_update(command, subscribed)
                for frame in frames:
                    if frame["type"] == "ok" and "msg" in frame:
                        subscribed = list(frame["msg"]["market_tickers"])
                    if "seq" in frame:  # the subscription's sequence goes on through replies too
                        seq += 1
                        frame["seq"] = seq
            for frame in frames:
                await ws.send(json.dumps(frame))

    def adds(self) -> list[list[str]]:
        return [
            c["params"]["market_tickers"]
            for c in self.commands
            if c["cmd"] == "update_subscription" and c["params"]["action"] == "add_markets"
        ]

    def subscribes(self) -> list[list[str]]:
        return [c["params"]["market_tickers"] for c in self.commands if c["cmd"] == "subscribe"]


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Any]]:
    started: list[ScriptedExchange] = []

    async def start(on_update: Callable[[Frame, list[str]], list[Frame]]) -> ScriptedExchange:
        exchange = ScriptedExchange(on_update)
        exchange.server = await serve(exchange.handle, "127.0.0.1", 0)
        started.append(exchange)
        return exchange

    yield start
    for exchange in started:
        assert exchange.server is not None
        exchange.server.close()
        await exchange.server.wait_closed()


def client_for(url: str, credentials: Credentials, listener: Listener, markets: list[str]) -> KalshiWebSocketClient:
    return KalshiWebSocketClient(
        url=url, credentials=credentials, markets=markets, listener=listener, backoff=Backoff(initial=0.05, cap=0.2)
    )


async def running(client: KalshiWebSocketClient) -> asyncio.Task[None]:
    task = asyncio.create_task(client.run())
    await eventually(lambda: client.status is ConnectionStatus.CONNECTED and not client.stale)
    return task


async def stop(client: KalshiWebSocketClient, task: asyncio.Task[None]) -> None:
    await client.close()
    await task


def refuse_named(command: Frame, subscribed: list[str]) -> list[Frame]:
    """Kalshi's error shape naming the one ticker at fault (``msg.market_ticker``), for the whole command."""
    wanted = command["params"]["market_tickers"]
    if UNKNOWN in wanted:
        return [
            {
                "id": command["id"],
                "type": "error",
                "msg": {"code": ERROR_INVALID_PARAMETER, "msg": "Invalid parameter", "market_ticker": UNKNOWN},
            }
        ]
    full = subscribed + [t for t in wanted if t not in subscribed]
    return [
        {"id": command["id"], "sid": 1, "seq": 0, "type": "ok", "msg": {"market_tickers": full}},
        *[snapshot(1, 0, t) for t in wanted],
    ]


async def test_it_refuses_only_the_named_ticker_and_sends_the_rest_again(
    scripted: Callable[..., Any], credentials: Credentials
) -> None:
    exchange = await scripted(refuse_named)
    client = client_for(exchange.url, credentials, Listener(), [FED])
    task = await running(client)
    try:
        change = await client.add_markets([UNKNOWN, CPI], wait=5)
        assert change.done == [CPI]
        assert change.refused == {UNKNOWN: "exchange error 11: Invalid parameter"}
        assert change.pending == []
        assert client.markets == [FED, CPI]
        assert exchange.adds() == [[UNKNOWN, CPI], [CPI]]
        await eventually(lambda: not client.stale)

        # A reconnect subscribes with what the exchange accepted, never with the refused ticker.
        await exchange.connections[-1].close()
        await eventually(lambda: len(exchange.subscribes()) == 2 and not client.stale)
        assert exchange.subscribes()[-1] == [FED, CPI]
        assert client.metrics.errors_by_code[ERROR_INVALID_PARAMETER] == 1
    finally:
        await stop(client, task)


async def test_an_error_naming_no_ticker_refuses_the_whole_command(
    scripted: Callable[..., Any], credentials: Credentials
) -> None:
    def refuse(command: Frame, subscribed: list[str]) -> list[Frame]:
        return [
            {"id": command["id"], "type": "error", "msg": {"code": 26, "msg": "Subscription market limit exceeded"}}
        ]

    exchange = await scripted(refuse)
    client = client_for(exchange.url, credentials, Listener(), [FED])
    task = await running(client)
    try:
        change = await client.add_markets([CPI, NBA], wait=5)
        reason = "exchange error 26: Subscription market limit exceeded"
        assert change.done == []
        assert change.refused == {CPI: reason, NBA: reason}
        assert client.markets == [FED] and set(client.books) == {FED}
        assert exchange.adds() == [[CPI, NBA]]
    finally:
        await stop(client, task)


async def test_an_ok_that_does_not_list_the_ticker_is_a_refusal(
    scripted: Callable[..., Any], credentials: Credentials
) -> None:
    def ok_without_it(command: Frame, subscribed: list[str]) -> list[Frame]:
        return [{"id": command["id"], "sid": 1, "seq": 0, "type": "ok", "msg": {"market_tickers": subscribed}}]

    exchange = await scripted(ok_without_it)
    client = client_for(exchange.url, credentials, Listener(), [FED])
    task = await running(client)
    try:
        change = await client.add_markets([CPI], wait=5)
        assert change.refused == {CPI: "the exchange's reply does not list it"}
        assert client.markets == [FED]
    finally:
        await stop(client, task)


async def test_an_unanswered_add_stays_pending_and_a_late_ok_still_applies(
    scripted: Callable[..., Any], credentials: Credentials
) -> None:
    held: list[Frame] = []

    def hold(command: Frame, subscribed: list[str]) -> list[Frame]:
        held.append(command)
        return []

    exchange = await scripted(hold)
    client = client_for(exchange.url, credentials, Listener(), [FED])
    task = await running(client)
    try:
        change = await client.add_markets([CPI], wait=0.2)
        assert change.pending == [CPI] and change.done == [] and client.markets == [FED]
        ws = exchange.connections[-1]
        await ws.send(json.dumps({"id": held[0]["id"], "type": "ok", "msg": {"market_tickers": [FED, CPI]}}))
        await ws.send(json.dumps(snapshot(1, 2, CPI)))
        await eventually(lambda: client.markets == [FED, CPI] and not client.stale)
    finally:
        await stop(client, task)


async def test_against_the_simulator_an_unknown_ticker_never_stops_the_others(
    start_sim: StartSim, credentials: Credentials
) -> None:
    exchange: ExchangeSimulator = await start_sim(message_rate=300.0, seed=3)
    listener = Listener()
    # One unknown ticker in the initial list: refused, dropped and reported; the others go live.
    client = client_for(exchange.ws_url, credentials, listener, [FED, UNKNOWN, CPI])
    task = await running(client)
    try:
        refused = [e for e in listener.events if e.kind is FeedEventKind.REFUSED]
        assert [(e.markets, e.reason) for e in refused] == [((UNKNOWN,), "exchange error 11: Invalid parameter")]
        assert client.markets == [FED, CPI]
        assert FeedEventKind.SYNCED in listener.kinds()

        change = await client.add_markets([NBA, "KXNOPE-2"], wait=5)
        assert change.done == [NBA] and list(change.refused) == ["KXNOPE-2"]
        await eventually(lambda: not client.stale)

        exchange.drop_connections()
        await eventually(lambda: client.metrics.reconnects == 1 and not client.stale and client.uptime() is not None)
        await eventually(lambda: client.metrics.deltas_received > 100)
        assert client.metrics.errors_by_code[ERROR_INVALID_PARAMETER] == 2  # one per refusal, none after
        assert sorted(client.markets) == sorted([FED, CPI, NBA])
        assert_books_equal_the_exchange(client, exchange)

        change = await client.remove_markets([NBA, UNKNOWN], wait=5)
        assert change.done == [NBA] and change.refused == {UNKNOWN: "not subscribed"}
    finally:
        await stop(client, task)
