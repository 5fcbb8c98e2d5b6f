"""Client-side helpers for talking to the simulator over real loopback sockets."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

from apps.exchange.market import Change
from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.signing import WS_PATH, Credentials, PrivateKey
from tests import keys

Frame_ = dict[str, Any]


def now_ms() -> int:
    return int(time.time() * 1000)


class PingRecordingConnection(ClientConnection):
    """A client connection that remembers the body of every Ping it receives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pings: list[bytes] = []

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.pings.append(bytes(event.data))
        super().process_event(event)


async def open_ws(
    sim: ExchangeSimulator,
    credentials: Credentials,
    *,
    headers: dict[str, str] | None = None,
    url: str | None = None,
    **kwargs: Any,
) -> PingRecordingConnection:
    """Open a signed WebSocket to the simulator (headers signed over GET /trade-api/ws/v2)."""
    if headers is None:
        headers = credentials.headers("GET", WS_PATH, now_ms())
    # An unbounded receive queue keeps the client reading, so closing a busy connection is quick.
    kwargs.setdefault("max_queue", None)
    ws = await connect(
        url or sim.ws_url,
        additional_headers=headers,
        create_connection=PingRecordingConnection,
        open_timeout=5,
        close_timeout=1,
        **kwargs,
    )
    assert isinstance(ws, PingRecordingConnection)
    return ws


async def send(ws: ClientConnection, command: dict[str, Any] | str) -> None:
    await ws.send(command if isinstance(command, str) else json.dumps(command))


async def recv(ws: ClientConnection, within: float = 30.0) -> Frame_:
    """The next frame; ``within`` is a failing run's ceiling (drain passes its own quiet time)."""
    frame = json.loads(await asyncio.wait_for(ws.recv(), within))
    assert isinstance(frame, dict)
    return frame


async def recv_until(ws: ClientConnection, predicate: Callable[[Frame_], bool], within: float = 30.0) -> list[Frame_]:
    """Every frame up to and including the first one matching ``predicate``; ``within`` is a failing run's ceiling
    (a busy machine can leave tens of thousands of frames queued ahead of the one awaited)."""
    frames: list[Frame_] = []
    deadline = asyncio.get_running_loop().time() + within
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError(f"no matching frame among {len(frames)} received")
        frame = await recv(ws, remaining)
        frames.append(frame)
        if predicate(frame):
            return frames


async def recv_n(ws: ClientConnection, count: int, within: float = 30.0) -> list[Frame_]:
    return [await recv(ws, within) for _ in range(count)]


async def drain(ws: ClientConnection, quiet: float = 0.2) -> list[Frame_]:
    """Read until nothing arrives for ``quiet`` seconds."""
    frames: list[Frame_] = []
    while True:
        try:
            frames.append(await recv(ws, quiet))
        except TimeoutError:
            return frames


async def subscribe(
    ws: ClientConnection,
    tickers: list[str],
    command_id: int = 1,
    channels: tuple[str, ...] = ("orderbook_delta",),
) -> tuple[list[int], list[Frame_]]:
    """Subscribe and read the replies and snapshots; returns (sids, frames read)."""
    await send(
        ws,
        {
            "id": command_id,
            "cmd": "subscribe",
            "params": {"channels": list(channels), "market_tickers": tickers},
        },
    )
    snapshots = len(tickers) if "orderbook_delta" in channels else 0
    frames: list[Frame_] = []
    sids: list[int] = []
    while len(sids) < len(channels) or sum(f["type"] == "orderbook_snapshot" for f in frames) < snapshots:
        frame = await recv(ws)
        frames.append(frame)
        if frame["type"] == "subscribed":
            sids.append(frame["msg"]["sid"])
    return sids, frames


async def http_get(
    sim: ExchangeSimulator,
    path_and_query: str,
    credentials: Credentials | None,
    *,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: bytes = b"",
    port: int | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """A minimal HTTP/1.1 request over a raw socket, to the REST port unless ``port`` says otherwise:
    (status, lower-cased headers, body)."""
    if headers is None:
        headers = credentials.headers(method, urlsplit(path_and_query).path, now_ms()) if credentials else {}
    port = sim.rest_port if port is None else port
    reader, writer = await asyncio.open_connection(sim.config.host, port, family=socket.AF_INET)
    lines = [f"{method} {path_and_query} HTTP/1.1", f"Host: {sim.config.host}:{port}", "Connection: close"]
    if body or method != "GET":
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return parse_response(raw)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    response_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        response_headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), response_headers, body


async def http_json(sim: ExchangeSimulator, path_and_query: str, credentials: Credentials) -> tuple[int, Any]:
    status, _, body = await http_get(sim, path_and_query, credentials)
    return status, json.loads(body)


async def api(
    sim: ExchangeSimulator, credentials: Credentials, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    """A signed request to ``/trade-api/v2`` + ``path`` (JSON ``body`` if given): (status, parsed JSON or None)."""
    raw = json.dumps(body).encode() if body is not None else b""
    status, _, answer = await http_get(sim, "/trade-api/v2" + path, credentials, method=method, body=raw)
    return status, json.loads(answer) if answer else None


ACCOUNT_KEYS = 4
_account_key_turns = itertools.count()


def _account_key() -> tuple[PrivateKey, bytes]:
    """The next of ACCOUNT_KEYS key pairs (private key, public PEM), in turn: the accounts of one test each get a
    key of their own, unlike each other's and the suite's."""
    name = f"account-{next(_account_key_turns) % ACCOUNT_KEYS}"
    return keys.private_key(name), keys.key_pair(name)[1]


def another_account(sim: ExchangeSimulator, key_id: str) -> Credentials:
    """Credentials of a new API key the simulator accepts: an account of its own."""
    private_key, public_pem = _account_key()
    sim.register_key(key_id, public_pem)
    return Credentials(key_id, private_key)


def clear_book(sim: ExchangeSimulator, ticker: str) -> None:
    """Withdraw all the simulated liquidity of a market, so a test's own orders are all that rest."""
    book = sim.true_book(ticker)
    for side, levels in (("yes", book.yes), ("no", book.no)):
        for price, size in list(levels.items()):
            sim.publish_change(ticker, Change(side, price, -size))  # type: ignore[arg-type]
