"""What the client counts of the frames it reads."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.server import ServerConnection, serve

from apps.kalshi.client import KalshiWebSocketClient
from apps.kalshi.feed import FeedEvent, MarketMessage
from apps.kalshi.orderbook import OrderBook
from apps.kalshi.signing import Credentials
from tests.support import eventually


class Listener:
    def __init__(self) -> None:
        self.applied: list[MarketMessage] = []

    async def on_feed_event(self, event: FeedEvent) -> None:
        pass

    async def on_market_message(self, message: MarketMessage, book: OrderBook) -> None:
        self.applied.append(message)


async def test_bytes_received_counts_utf8_bytes_not_characters(credentials: Credentials) -> None:
    market_id = "march\u00e9-\u20ac"
    frames = [
        json.dumps({"type": "subscribed", "id": 1, "msg": {"channel": "orderbook_delta", "sid": 3}}),
        json.dumps(
            {
                "type": "orderbook_snapshot",
                "sid": 3,
                "seq": 1,
                "msg": {"market_ticker": "KXA", "market_id": market_id, "yes_dollars_fp": [["0.4200", "1.00"]]},
            },
            ensure_ascii=False,
        ),
    ]

    async def exchange(ws: ServerConnection) -> None:
        await ws.recv()  # the subscribe command
        for frame in frames:
            await ws.send(frame)
        await ws.wait_closed()

    listener = Listener()
    async with serve(exchange, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = KalshiWebSocketClient(
            url=f"ws://127.0.0.1:{port}/trade-api/ws/v2", credentials=credentials, markets=["KXA"], listener=listener
        )
        task = asyncio.create_task(client.run())
        try:
            await eventually(lambda: len(listener.applied) == 1)
        finally:
            await client.close()
            await task

    sent = sum(len(frame.encode()) for frame in frames)
    assert sent > sum(len(frame) for frame in frames)  # the snapshot has characters of 2 and 3 bytes
    assert client.metrics.bytes_received == sent
    assert listener.applied[0].market_id == market_id


async def test_a_resync_that_gets_no_answer_on_a_quiet_socket_ends_in_a_resubscribe(credentials: Credentials) -> None:
    """No frame arrives after the gap, so nothing but the client's own timer can notice the deadline."""
    commands: list[dict[str, object]] = []
    snapshot = {"yes_dollars_fp": [["0.4200", "1.00"]]}

    async def exchange(ws: ServerConnection) -> None:
        async for text in ws:
            command = json.loads(text)
            commands.append(command)
            if len(commands) == 1:
                subscribed = {"channel": "orderbook_delta", "sid": 3}
                await ws.send(json.dumps({"type": "subscribed", "id": command["id"], "msg": subscribed}))
                for seq, ticker in ((1, "KXA"), (2, "KXB")):
                    msg = {"market_ticker": ticker, **snapshot}
                    await ws.send(json.dumps({"type": "orderbook_snapshot", "sid": 3, "seq": seq, "msg": msg}))
                gap = {"market_ticker": "KXA", "price_dollars": "0.4200", "delta_fp": "1.00", "side": "yes"}
                await ws.send(json.dumps({"type": "orderbook_delta", "sid": 3, "seq": 5, "msg": gap}))
            # get_snapshot and everything after it go unanswered; websockets' pings keep the socket alive.

    events: list[FeedEvent] = []

    class Recording(Listener):
        async def on_feed_event(self, event: FeedEvent) -> None:
            events.append(event)

    async with serve(exchange, "127.0.0.1", 0, ping_interval=0.1) as server:
        port = server.sockets[0].getsockname()[1]
        client = KalshiWebSocketClient(
            url=f"ws://127.0.0.1:{port}/trade-api/ws/v2",
            credentials=credentials,
            markets=["KXA", "KXB"],
            listener=Recording(),
            resync_timeout=0.3,
        )
        task = asyncio.create_task(client.run())
        try:
            await eventually(lambda: [c["cmd"] for c in commands][-2:] == ["unsubscribe", "subscribe"])
        finally:
            await client.close()
            await task

    assert [c["cmd"] for c in commands] == ["subscribe", "update_subscription", "unsubscribe", "subscribe"]
    assert client.metrics.resubscribes == 1
    assert any("did not arrive in 0.3 s" in event.reason for event in events)
