"""The private feed against a scripted server, for what the built-in exchange never does: hold a reconcile
open while messages arrive, or leave a subscription unconfirmed. The rest of the feed's behaviour is tested
against the exchange in test_trading_against_exchange.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from apps.kalshi.backoff import Backoff
from apps.kalshi.environments import Environment, TradingPermission
from apps.kalshi.feed import FeedEvent, FeedEventKind
from apps.kalshi.privatefeed import PrivateFeed
from apps.kalshi.privatemessages import FillMessage, PrivateMessage, UserOrderMessage
from apps.kalshi.signing import HEADER_SIGNATURE, HEADER_TIMESTAMP, WS_PATH, Credentials, verify
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
def fake(credentials: Credentials) -> FakeKalshi:
    return FakeKalshi(credentials.private_key.public_key())


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
