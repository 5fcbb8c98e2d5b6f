"""The feed's connection over real sockets: the lean path for the stream's frames, websockets for the rest."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.frames import CloseCode, Frame, Opcode

from apps.kalshi.feedconnection import FeedConnection

Exchange = Callable[[ServerConnection], Awaitable[None]]


def message(n: int) -> str:
    return json.dumps({"type": "orderbook_delta", "sid": 1, "seq": n, "msg": {"market_ticker": "KXA"}})


@asynccontextmanager
async def feed_connection(exchange: Exchange, *, max_size: int = 2**20) -> AsyncIterator[FeedConnection]:
    async with serve(exchange, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}", create_connection=FeedConnection, compression=None, max_size=max_size
        ) as ws:
            assert isinstance(ws, FeedConnection)
            yield ws


async def read_all(ws: FeedConnection) -> tuple[list[bytes], ConnectionClosed]:
    """Every message until the connection ends, and how it ended."""
    received: list[bytes] = []
    while True:
        try:
            received.append(await ws.next_frame())
        except ConnectionClosed as closed:
            return received, closed


async def test_messages_arrive_in_order_around_pings_fragments_and_the_close() -> None:
    pongs: list[float] = []
    lean_before_fragment: list[bool] = []

    async def exchange(ws: ServerConnection) -> None:
        for n in range(300):
            await ws.send(message(n))
        pongs.append(await (await ws.ping(b"still there?")))  # answered by websockets on the client's side
        for n in range(300, 600):
            await ws.send(message(n))
        await ws.recv()  # the client has read them
        await ws.send([message(600)[:10], message(600)[10:]])  # one message in two fragments
        for n in range(601, 700):
            await ws.send(message(n))
        await ws.close()

    async with feed_connection(exchange) as ws:
        assert ws.lean
        first = [await ws.next_frame() for _ in range(600)]
        lean_before_fragment.append(ws.lean)
        await ws.send("read")
        rest, closed = await read_all(ws)

    assert [m.decode() for m in first + rest] == [message(n) for n in range(700)]
    assert lean_before_fragment == [True] and not ws.lean  # the fragment went to websockets, and all after it
    assert len(pongs) == 1
    assert isinstance(closed, ConnectionClosedOK) and closed.rcvd is not None and closed.rcvd.code == 1000


async def test_frames_that_come_with_the_handshake_response_are_not_lost() -> None:
    """A server may write its 101 response and the first frames in one segment."""
    frames = b"".join(Frame(Opcode.TEXT, message(n).encode()).serialize(mask=False) for n in range(3))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        key = next(
            line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith("sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        response = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        writer.write(response + frames)
        await writer.drain()
        await reader.read()  # until the client goes

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        ws = await connect(f"ws://127.0.0.1:{port}", create_connection=FeedConnection, compression=None)
        assert isinstance(ws, FeedConnection)
        try:
            got = [await asyncio.wait_for(ws.next_frame(), 5) for _ in range(3)]
            assert ws.lean
        finally:
            ws.transport.abort()

    assert [g.decode() for g in got] == [message(n) for n in range(3)]


async def test_a_message_over_the_size_limit_closes_the_connection_with_1009() -> None:
    async def exchange(ws: ServerConnection) -> None:
        await ws.send(message(0))
        await ws.send("x" * 2_000)
        await ws.wait_closed()

    async with feed_connection(exchange, max_size=1_000) as ws:
        received, closed = await read_all(ws)

    assert received == [message(0).encode()]
    assert closed.sent is not None and closed.sent.code == CloseCode.MESSAGE_TOO_BIG


async def test_a_reader_that_falls_behind_stops_the_socket_being_read_and_loses_nothing() -> None:
    sent = 5_000  # 5 MB, more than the sockets' buffers hold

    async def exchange(ws: ServerConnection) -> None:
        for n in range(sent):
            await ws.send(message(n).ljust(1_000))
        await ws.close()

    async with feed_connection(exchange) as ws:
        ws.max_queued = 50
        # The reader takes nothing for a while: the connection queues a little, then stops reading.
        await asyncio.sleep(0.3)
        queued = len(ws.frames)
        paused = not ws.transport.is_reading()
        received, closed = await read_all(ws)

    assert paused and 50 < queued < sent
    assert [m.decode() for m in received] == [message(n).ljust(1_000) for n in range(sent)]
    assert isinstance(closed, ConnectionClosedOK)


async def test_a_reader_waiting_for_a_frame_hears_of_an_aborted_connection() -> None:
    async def exchange(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with feed_connection(exchange) as ws:
        waiting = asyncio.create_task(ws.next_frame())
        await asyncio.sleep(0.05)
        ws.transport.abort()
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(waiting, 5)
