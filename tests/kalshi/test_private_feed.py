"""The private feed: subscribes to the account's channels, reconciles from REST after every (re)connect and on
demand, and hands messages on after the snapshot, in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from apps.kalshi.backoff import Backoff
from apps.kalshi.environments import Environment, TradingPermission, TradingRefused
from apps.kalshi.feed import FeedEvent, FeedEventKind
from apps.kalshi.portfolio import OrderRequest
from apps.kalshi.privatefeed import PrivateFeed
from apps.kalshi.privatemessages import FillMessage, PrivateMessage, UserOrderMessage
from apps.kalshi.signing import HEADER_SIGNATURE, HEADER_TIMESTAMP, WS_PATH, Credentials, load_private_key, verify
from apps.kalshi.trading import AccountSnapshot, KalshiTradingClient
from tests.kalshi.fakekalshi import FakeKalshi
from tests.kalshi.test_private_messages import fill_frame, user_order_frame
from tests.support import eventually

SIM = TradingPermission(Environment.SIM)
FED = "KXFED-26DEC-T4.00"


class PrivateServer:
    """The private half of Kalshi's WebSocket: checks the signed handshake, answers a subscribe with one
    ``subscribed`` per channel, and sends what the test gives it on the newest connection."""

    def __init__(self, fake: FakeKalshi) -> None:
        self.fake = fake
        self.connections: list[ServerConnection] = []
        self.commands: list[dict[str, Any]] = []
        self.server: Server | None = None
        self.confirm: list[str] | None = None
        """The channels a subscribe is confirmed for; None: all it names."""

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}{WS_PATH}"

    async def handle(self, ws: ServerConnection) -> None:
        headers = ws.request.headers if ws.request is not None else {}
        if not verify(self.fake.public_key, headers[HEADER_SIGNATURE], headers[HEADER_TIMESTAMP], "GET", WS_PATH):
            await ws.close(4001, "bad signature")
            return
        self.connections.append(ws)
        async for raw in ws:
            command = json.loads(raw)
            self.commands.append(command)
            channels = command["params"]["channels"]
            for sid, channel in enumerate(channels if self.confirm is None else self.confirm, start=1):
                await ws.send(
                    json.dumps({"type": "subscribed", "id": command["id"], "msg": {"channel": channel, "sid": sid}})
                )

    async def send(self, frame: dict[str, Any]) -> None:
        await self.connections[-1].send(json.dumps(frame))


class Recorder:
    def __init__(self) -> None:
        self.seen: list[AccountSnapshot | PrivateMessage] = []
        self.events: list[FeedEvent] = []

    async def on_account_snapshot(self, snapshot: AccountSnapshot) -> None:
        self.seen.append(snapshot)

    async def on_private_message(self, message: PrivateMessage) -> None:
        self.seen.append(message)

    async def on_feed_event(self, event: FeedEvent) -> None:
        self.events.append(event)

    def snapshots(self) -> list[AccountSnapshot]:
        return [s for s in self.seen if isinstance(s, AccountSnapshot)]


@pytest.fixture
def fake(key_pair: tuple[bytes, bytes]) -> FakeKalshi:
    return FakeKalshi(load_private_key(key_pair[0]).public_key())


@pytest.fixture
async def server(fake: FakeKalshi) -> AsyncIterator[PrivateServer]:
    private = PrivateServer(fake)
    async with serve(private.handle, "127.0.0.1", 0) as running:
        private.server = running
        yield private


def trading_client(credentials: Credentials, transport: httpx.AsyncBaseTransport) -> KalshiTradingClient:
    return KalshiTradingClient("http://127.0.0.1:9/trade-api/v2", credentials, SIM, backoff=fast(), transport=transport)


def fast() -> Backoff:
    return Backoff(initial=0.001, cap=0.005)


async def run_feed(feed: PrivateFeed) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(feed.run())


async def stop(feed: PrivateFeed, task: asyncio.Task[None]) -> None:
    await feed.close()
    await asyncio.wait_for(task, 5)


async def test_it_subscribes_reconciles_then_passes_messages_on(
    server: PrivateServer, fake: FakeKalshi, credentials: Credentials
) -> None:
    recorder = Recorder()
    async with trading_client(credentials, fake.transport()) as trading:
        resting = await trading.create_order(OrderRequest.buy_yes(FED, 1000, 3500))
        feed = PrivateFeed(
            url=server.url, credentials=credentials, permission=SIM, trading=trading, listener=recorder, backoff=fast()
        )
        task = await run_feed(feed)
        await eventually(lambda: len(recorder.seen) == 1, what="the first snapshot")
        assert server.commands == [
            {"id": 1, "cmd": "subscribe", "params": {"channels": ["fill", "user_orders", "market_positions"]}}
        ]
        (snapshot,) = recorder.snapshots()
        assert [o.order_id for o in snapshot.open_orders] == [resting.order_id]
        await server.send(fill_frame())
        await eventually(lambda: len(recorder.seen) == 2, what="the fill")
        assert isinstance(recorder.seen[1], FillMessage)
        assert recorder.seen[1].count == 27_800
        assert [e.kind for e in recorder.events] == [FeedEventKind.CONNECTED]
        await stop(feed, task)


async def test_messages_that_arrive_during_the_reconcile_follow_the_snapshot(
    server: PrivateServer, fake: FakeKalshi, credentials: Credentials
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_orders(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/portfolio/orders"):
            started.set()
            await release.wait()
        return fake.handle(request)

    recorder = Recorder()
    async with trading_client(credentials, httpx.MockTransport(slow_orders)) as trading:
        feed = PrivateFeed(
            url=server.url, credentials=credentials, permission=SIM, trading=trading, listener=recorder, backoff=fast()
        )
        task = await run_feed(feed)
        await eventually(started.is_set, what="the reconcile to start")
        await server.send(user_order_frame())
        await server.send(fill_frame())
        await eventually(lambda: feed.counters.messages_received == 2, what="both messages to arrive")
        assert recorder.seen == []
        release.set()
        await eventually(lambda: len(recorder.seen) == 3, what="the snapshot and both messages")
        assert [type(s) for s in recorder.seen] == [AccountSnapshot, UserOrderMessage, FillMessage]
        await stop(feed, task)


async def test_after_a_dropped_connection_it_subscribes_and_reconciles_again(
    server: PrivateServer, fake: FakeKalshi, credentials: Credentials
) -> None:
    recorder = Recorder()
    async with trading_client(credentials, fake.transport()) as trading:
        resting = await trading.create_order(OrderRequest.buy_yes(FED, 1000, 3500))
        feed = PrivateFeed(
            url=server.url, credentials=credentials, permission=SIM, trading=trading, listener=recorder, backoff=fast()
        )
        task = await run_feed(feed)
        await eventually(lambda: len(recorder.snapshots()) == 1, what="the first snapshot")
        server.connections[-1].transport.abort()
        # While the socket is down the order is cancelled; its user_order message is lost with the connection.
        fake.orders[resting.order_id].update(status="canceled", remaining_count_fp="0.00")
        await eventually(lambda: len(recorder.snapshots()) == 2, what="the snapshot after reconnecting")
        assert recorder.snapshots()[1].open_orders == ()
        assert len(server.commands) == 2
        assert feed.counters.reconnects == 1
        assert [e.kind for e in recorder.events] == [
            FeedEventKind.CONNECTED,
            FeedEventKind.DISCONNECTED,
            FeedEventKind.CONNECTED,
        ]
        await stop(feed, task)


async def test_a_reconcile_on_demand_reads_rest_again(
    server: PrivateServer, fake: FakeKalshi, credentials: Credentials
) -> None:
    recorder = Recorder()
    async with trading_client(credentials, fake.transport()) as trading:
        feed = PrivateFeed(
            url=server.url, credentials=credentials, permission=SIM, trading=trading, listener=recorder, backoff=fast()
        )
        task = await run_feed(feed)
        await eventually(lambda: len(recorder.snapshots()) == 1, what="the first snapshot")
        placed = await trading.create_order(OrderRequest.sell_yes(FED, 100, 6500))
        snapshot = await feed.reconcile()
        assert [o.order_id for o in snapshot.open_orders] == [placed.order_id]
        assert recorder.snapshots()[-1] == snapshot
        assert feed.counters.reconciles == 2
        await server.send(fill_frame())
        await eventually(lambda: isinstance(recorder.seen[-1], FillMessage), what="messages to flow again")
        await stop(feed, task)


async def test_a_failed_reconcile_drops_the_connection_and_tries_again(
    server: PrivateServer, fake: FakeKalshi, credentials: Credentials
) -> None:
    fake.fail_next("GET", "/portfolio/balance", response=httpx.Response(401, json={"error": {"code": "unauthorized"}}))
    recorder = Recorder()
    async with trading_client(credentials, fake.transport()) as trading:
        feed = PrivateFeed(
            url=server.url, credentials=credentials, permission=SIM, trading=trading, listener=recorder, backoff=fast()
        )
        task = await run_feed(feed)
        await eventually(lambda: len(recorder.snapshots()) == 1, what="a snapshot on the second connection")
        assert len(server.connections) == 2
        assert any("reconcile failed" in e.reason and "401" in e.reason for e in recorder.events)
        await stop(feed, task)


def test_no_feed_is_built_where_the_rules_forbid_trading(fake: FakeKalshi, credentials: Credentials) -> None:
    trading = trading_client(credentials, fake.transport())
    for permission, url in (
        (TradingPermission(Environment.PAPER), "ws://127.0.0.1:8007/trade-api/ws/v2"),
        (TradingPermission(Environment.PAPER), "wss://external-api-ws.kalshi.com/trade-api/ws/v2"),
        (TradingPermission(Environment.LOCAL), "wss://external-api-ws.kalshi.com/trade-api/ws/v2"),
        (SIM, "wss://demo-api.kalshi.co/trade-api/ws/v2"),
    ):
        with pytest.raises(TradingRefused):
            PrivateFeed(url=url, credentials=credentials, permission=permission, trading=trading, listener=Recorder())


async def test_the_rules_are_checked_before_every_connect(
    server: PrivateServer, fake: FakeKalshi, credentials: Credentials
) -> None:
    recorder = Recorder()
    async with trading_client(credentials, fake.transport()) as trading:
        feed = PrivateFeed(
            url=server.url, credentials=credentials, permission=SIM, trading=trading, listener=recorder, backoff=fast()
        )
        task = await run_feed(feed)
        await eventually(lambda: len(recorder.snapshots()) == 1, what="the first snapshot")
        feed.permission = TradingPermission(Environment.LOCAL)
        server.connections[-1].transport.abort()
        with pytest.raises(TradingRefused, match="local is market data only"):
            await asyncio.wait_for(task, 5)
        assert len(server.connections) == 1


async def test_a_subscription_never_confirmed_is_dropped_and_tried_again(
    server: PrivateServer, fake: FakeKalshi, credentials: Credentials
) -> None:
    server.confirm = ["fill", "user_orders"]
    recorder = Recorder()
    async with trading_client(credentials, fake.transport()) as trading:
        feed = PrivateFeed(
            url=server.url,
            credentials=credentials,
            permission=SIM,
            trading=trading,
            listener=recorder,
            backoff=fast(),
            subscribe_timeout=0.2,
        )
        task = await run_feed(feed)
        await eventually(lambda: len(server.connections) == 2, what="a second connection")
        server.confirm = None
        await eventually(lambda: len(recorder.snapshots()) == 1, what="a snapshot once every channel is confirmed")
        dropped = next(e for e in recorder.events if e.kind is FeedEventKind.DISCONNECTED)
        assert dropped.reason == "the exchange did not confirm the subscription to market_positions within 0.2 s"
        await stop(feed, task)
