"""The stream exchange: serves one pre-built, valid Kalshi orderbook stream as fast as the reader takes it.

Plain asyncio on ``websockets`` (no Django), for benchmarks. WebSocket and its few REST GETs share one
port: the handshake and every REST call must carry a valid RSA-PSS signature.

The stream is built before anyone connects, as pre-framed WebSocket bytes, so sending costs the exchange
next to nothing per message. A subscription to every market of the stream gets ``subscribed`` (sid 1),
one ``orderbook_snapshot`` per market (seq 1..M), then the deltas (seq M+1..) on that one sid. Books stay
uncrossed (YES and NO bids both lie in 0.01..0.45, so the best YES ask is at least 0.55) and no size
ever goes negative. Every connection that subscribes gets the whole stream from the start.

Deltas held back for the paced phase are sent only when ``pace(rate)`` is called, at ``rate`` per
second, each stamped with ``ts_ms`` at the moment it is written, so a reader can measure latency.

``python -m apps.exchange.stream`` runs it as its own process (its cost then never shares the reader's
GIL): it prints one JSON line per event on stdout and takes ``pace RATE`` lines on stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response

from apps.exchange import rest
from apps.exchange.gateway import signed_request_problem
from apps.exchange.market import event_ticker_for, market_id_for
from apps.kalshi.fixedpoint import CONTRACT, DOLLAR, format_price, format_size
from apps.kalshi.messages import (
    CHANNEL_ORDERBOOK,
    ERROR_INVALID_PARAMETER,
    ERROR_MARKET_TICKER_REQUIRED,
    ERROR_UNABLE_TO_PROCESS,
    ERROR_UNKNOWN_COMMAND,
    ERROR_UNKNOWN_SID,
    ERROR_UNSUPPORTED_ACTION,
    OrderbookDelta,
    OrderbookSnapshot,
    Side,
    SubscriptionInfo,
    delta_frame,
    error_frame,
    list_subscriptions_frame,
    snapshot_frame,
    subscribed_frame,
    unsubscribed_frame,
)
from apps.kalshi.orderbook import OrderBook
from apps.kalshi.signing import WS_PATH, load_public_key

logger = logging.getLogger(__name__)

SID = 1
"""Every connection's one orderbook subscription."""
BID_PRICES = tuple(range(DOLLAR // 100, 46 * DOLLAR // 100, DOLLAR // 100))
"""0.01..0.45 for both sides: a YES bid never reaches a YES ask (1 - NO bid >= 0.55)."""
LEVELS_PER_SIDE = 6
CHUNK_BYTES = 256 * 1024
"""Frames are written in chunks of about this size; each write waits for the socket to take the last."""
TS_DIGITS = 13
"""``ts_ms`` of a paced delta is patched in place: Unix ms has 13 digits from 2001 to 2286."""


def stream_ticker(index: int) -> str:
    return f"KXBENCH-26DEC31-M{index + 1:05d}"


def _frame_bytes(message: dict[str, Any]) -> bytes:
    payload = json.dumps(message, separators=(",", ":")).encode()
    return Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


def json_response(connection: ServerConnection, status: int, body: dict[str, Any]) -> Response:
    """A compact JSON answer with the one Content-Type Kalshi sends."""
    response = connection.respond(status, json.dumps(body, separators=(",", ":")))
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


@dataclass
class PrebuiltStream:
    """A stream as bytes ready for the socket, and the books a correct reader ends with."""

    tickers: list[str]
    flood: list[bytes]
    """Snapshots then the flood deltas, pre-framed, in chunks of about CHUNK_BYTES."""
    paced: list[tuple[bytes, int]]
    """Each paced delta as (frame, offset of its ts_ms digits)."""
    snapshots: int
    flood_deltas: int
    initial_books: dict[str, OrderBook]
    flood_books: dict[str, OrderBook]
    """Every market's book after the flood (before any paced delta)."""
    final_books: dict[str, OrderBook]
    """Every market's book after the last delta, paced ones included."""

    @property
    def flood_messages(self) -> int:
        return self.snapshots + self.flood_deltas

    @property
    def messages(self) -> int:
        return self.flood_messages + len(self.paced)


def build_stream(markets: int, deltas: int, *, paced: int = 0, seed: int = 2026) -> PrebuiltStream:
    """Build ``markets`` snapshots, ``deltas`` flood deltas and ``paced`` paced deltas, repeatably per seed."""
    if markets < 1 or deltas < 0 or paced < 0:
        raise ValueError("a stream needs at least one market and no negative message counts")
    rng = random.Random(f"stream:{seed}")
    tickers = [stream_ticker(i) for i in range(markets)]
    market_ids = [market_id_for(t) for t in tickers]
    books: list[OrderBook] = []
    initial: dict[str, OrderBook] = {}
    chunks: list[bytes] = []
    pending: list[bytes] = []
    pending_size = 0

    def add(frame: bytes) -> None:
        nonlocal pending_size
        pending.append(frame)
        pending_size += len(frame)
        if pending_size >= CHUNK_BYTES:
            chunks.append(b"".join(pending))
            pending.clear()
            pending_size = 0

    for index, ticker in enumerate(tickers):
        book = OrderBook(ticker)
        book.market_id, book.sid, book.seq = market_ids[index], SID, index + 1
        for levels in (book.yes, book.no):
            for price in rng.sample(BID_PRICES, LEVELS_PER_SIDE):
                levels[price] = rng.randint(1, 50_000)
        books.append(book)
        snapshot = OrderbookSnapshot(
            sid=SID,
            seq=index + 1,
            market_ticker=ticker,
            market_id=book.market_id,
            yes=sorted(book.yes.items()),
            no=sorted(book.no.items()),
        )
        add(_frame_bytes(snapshot_frame(snapshot)))
        initial[ticker] = book.copy()
    stamp = time.time_ns() // 1_000_000
    paced_frames: list[tuple[bytes, int]] = []
    flood_books: dict[str, OrderBook] = {}
    for number in range(deltas + paced):
        if number == deltas:
            flood_books = {book.market_ticker: book.copy() for book in books}
        index = rng.randrange(markets)
        book = books[index]
        side: Side = "yes" if rng.getrandbits(1) else "no"
        levels = book.yes if side == "yes" else book.no
        # Take from a resting level about half the time (never more than it holds), else add liquidity.
        if levels and rng.getrandbits(1):
            price = rng.choice(list(levels))
            change = -rng.randint(1, levels[price])
        else:
            price = rng.choice(BID_PRICES)
            change = rng.randint(1, 20_000)
        delta = OrderbookDelta(
            sid=SID,
            seq=markets + number + 1,
            market_ticker=book.market_ticker,
            market_id=book.market_id,
            price=price,
            delta=change,
            side=side,
            ts_ms=stamp,
        )
        book.apply_delta(delta)
        frame = _frame_bytes(delta_frame(delta))
        if number < deltas:
            add(frame)
        else:
            offset = frame.rindex(b'"ts_ms":') + len(b'"ts_ms":')
            paced_frames.append((frame, offset))
    if pending:
        chunks.append(b"".join(pending))
    return PrebuiltStream(
        tickers=tickers,
        flood=chunks,
        paced=paced_frames,
        snapshots=markets,
        flood_deltas=deltas,
        initial_books=initial,
        flood_books=flood_books or {book.market_ticker: book.copy() for book in books},
        final_books={book.market_ticker: book for book in books},
    )


def books_as_json(books: dict[str, OrderBook]) -> dict[str, Any]:
    """Books as {ticker: {"yes": [[price, size], ...], "no": [...]}} in integer units, for another process."""
    return {t: {"yes": sorted(b.yes.items()), "no": sorted(b.no.items())} for t, b in books.items()}


def books_from_json(raw: dict[str, Any]) -> dict[str, OrderBook]:
    books = {}
    for ticker, sides in raw.items():
        book = OrderBook(ticker)
        book.yes = {int(p): int(s) for p, s in sides["yes"]}
        book.no = {int(p): int(s) for p, s in sides["no"]}
        books[ticker] = book
    return books


@dataclass
class _Connection:
    number: int
    ws: ServerConnection
    streaming: asyncio.Task[None] | None = None
    flood_done: bool = False
    next_seq: int = 1
    """The seq the next sequenced message would carry (for ``unsubscribed``)."""


@dataclass
class StreamExchange:
    """Serves ``stream``: ``await start()``, connect to ``ws_url`` / ``api_url``, ``await stop()``.

    ``on_event`` hears ``flood_sent`` and ``paced_sent`` with wall-clock send times (seconds).
    """

    stream: PrebuiltStream
    public_key_pem: bytes
    key_id: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    ping_interval: float = 10.0
    """Seconds between Kalshi's ``heartbeat`` Pings, so a reader never mistakes a pause for a dead socket."""
    on_event: Callable[[dict[str, Any]], None] = lambda event: None
    max_clock_skew: float = 60.0
    _server: Server | None = field(default=None, init=False)
    _connections: dict[int, _Connection] = field(default_factory=dict, init=False)
    _next_connection: int = field(default=1, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self._public_key = load_public_key(self.public_key_pem)
        self._market_bodies = [self._market_body(i, t) for i, t in enumerate(self.stream.tickers)]
        self._known = set(self.stream.tickers)

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            ping_interval=None,  # Kalshi's own heartbeat Pings are sent by _ping_loop
            compression=None,
            max_size=2**24,  # a subscribe to 10,000 markets is a few hundred KB
            close_timeout=1.0,
            logger=logging.getLogger("apps.exchange.websockets"),
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        for task in list(self._tasks):
            task.cancel()
        self._server.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), timeout=3.0)
        self._server = None

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}{WS_PATH}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}{rest.API_PREFIX}"

    def pace(self, rate: float) -> int:
        """Send the paced deltas at ``rate`` per second on every connection whose flood is sent; returns
        how many connections start."""
        if rate <= 0:
            raise ValueError("the rate must be positive")
        started = 0
        for connection in self._connections.values():
            if connection.flood_done and connection.streaming is not None and connection.streaming.done():
                connection.streaming = self._spawn(self._send_paced(connection, rate))
                started += 1
        return started

    def _spawn(self, work: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------------------------------ HTTP

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        problem = signed_request_problem(
            request.headers,
            parts.path,
            public_key=self._public_key,
            key_id=self.key_id,
            max_clock_skew=self.max_clock_skew,
        )
        if parts.path == WS_PATH:
            return connection.respond(HTTPStatus.UNAUTHORIZED, problem + "\n") if problem else None
        if not parts.path.startswith(rest.API_PREFIX + "/"):
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        if problem:
            return json_response(connection, 401, rest.error_body("unauthorized", problem))
        status, body = self._rest(parts.path[len(rest.API_PREFIX) :].rstrip("/"), parts.query, request.headers)
        return json_response(connection, status, body)

    def _rest(self, path: str, query: str, headers: Headers) -> rest.Reply:
        if path == "/exchange/status":
            return rest.exchange_status(True, True)
        if path == "/markets":
            return self._list_markets(parse_qs(query, keep_blank_values=True))
        # Only the books at the start and the end of the stream are known here, not the one of the moment.
        return 404, rest.error_body("not_found", "the stream exchange serves /markets and /exchange/status only")

    def _list_markets(self, query: dict[str, list[str]]) -> rest.Reply:
        """GET /markets: every stream market is open and not multivariate; offset cursor paging."""
        try:
            limit = int((query.get("limit") or [str(rest.DEFAULT_LIMIT)])[-1] or 0) or rest.DEFAULT_LIMIT
            cursor = (query.get("cursor") or [""])[-1]
            offset = rest.decode_cursor(cursor) if cursor else 0
        except ValueError as exc:
            return 400, rest.error_body("bad_request", str(exc))
        if not 0 < limit <= rest.MAX_LIMIT:
            return 400, rest.error_body("bad_request", f"limit must be an integer between 0 and {rest.MAX_LIMIT}")
        status = (query.get("status") or [""])[-1]
        mve = (query.get("mve_filter") or [""])[-1]
        selected = [] if status not in ("", "open") or mve == "only" else self._market_bodies
        page = selected[offset : offset + limit]
        cursor = rest.encode_cursor(offset + limit) if offset + limit < len(selected) else ""
        return 200, {"markets": page, "cursor": cursor}

    def _market_body(self, index: int, ticker: str) -> dict[str, Any]:
        book = self.stream.initial_books[ticker]
        top = book.top()
        volume = (len(self.stream.tickers) - index) * 10 * CONTRACT  # distinct, so discovery keeps stream order
        return {
            "ticker": ticker,
            "event_ticker": event_ticker_for(ticker),
            "market_type": "binary",
            "status": "active",
            "close_time": "2026-12-31T22:00:00Z",
            "volume_fp": format_size(volume),
            "volume_24h_fp": format_size(volume),
            "open_interest_fp": format_size(volume // 2),
            "yes_bid_dollars": format_price(top.yes_bid[0] if top.yes_bid else 0),
            "yes_ask_dollars": format_price(top.yes_ask[0] if top.yes_ask else DOLLAR),
            "yes_bid_size_fp": format_size(top.yes_bid[1] if top.yes_bid else 0),
            "yes_ask_size_fp": format_size(top.yes_ask[1] if top.yes_ask else 0),
            "price_level_structure": "linear_cent",
        }

    # ------------------------------------------------------------------------------------------ WebSocket

    async def _handle(self, ws: ServerConnection) -> None:
        connection = _Connection(self._next_connection, ws)
        self._next_connection += 1
        self._connections[connection.number] = connection
        pings = self._spawn(self._ping_loop(ws)) if self.ping_interval > 0 else None
        try:
            async for message in ws:
                await self._on_command(connection, message)
        except ConnectionClosed:
            pass
        finally:
            self._connections.pop(connection.number, None)
            for task in (pings, connection.streaming):
                if task is not None:
                    task.cancel()

    async def _on_command(self, connection: _Connection, message: str | bytes) -> None:
        try:
            command = json.loads(message)
        except ValueError:
            command = None
        if not isinstance(command, dict):
            await self._reply(connection, error_frame(None, ERROR_UNABLE_TO_PROCESS))
            return
        command_id = command.get("id") if isinstance(command.get("id"), int) else None
        raw_params = command.get("params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        name = command.get("cmd")
        if name == "subscribe":
            await self._subscribe(connection, command_id, params)
        elif name == "unsubscribe":
            sids = params.get("sids")
            if connection.streaming is None or sids != [SID]:
                await self._reply(connection, error_frame(command_id, ERROR_UNKNOWN_SID))
                return
            connection.streaming.cancel()
            await self._reply(connection, unsubscribed_frame(command_id, SID, connection.next_seq))
        elif name == "list_subscriptions":
            subscriptions = [SubscriptionInfo(CHANNEL_ORDERBOOK, SID)] if connection.streaming is not None else []
            await self._reply(connection, list_subscriptions_frame(command_id, subscriptions))
        elif name == "update_subscription":
            # The stream is fixed in advance: a snapshot in the middle would need a seq it does not have.
            await self._reply(connection, error_frame(command_id, ERROR_UNSUPPORTED_ACTION))
        else:
            await self._reply(connection, error_frame(command_id, ERROR_UNKNOWN_COMMAND))

    async def _subscribe(self, connection: _Connection, command_id: int | None, params: dict[str, Any]) -> None:
        tickers = params.get("market_tickers") or ([params["market_ticker"]] if params.get("market_ticker") else [])
        if params.get("channels") != [CHANNEL_ORDERBOOK]:
            await self._reply(connection, error_frame(command_id, ERROR_INVALID_PARAMETER))
            return
        if not tickers:
            await self._reply(connection, error_frame(command_id, ERROR_MARKET_TICKER_REQUIRED))
            return
        unknown = [t for t in tickers if t not in self._known]
        if unknown:
            await self._reply(connection, error_frame(command_id, ERROR_INVALID_PARAMETER, market_tickers=unknown))
            return
        # The stream is built for all its markets on one sid, once per connection.
        if len(set(tickers)) != len(self._known) or connection.streaming is not None:
            await self._reply(connection, error_frame(command_id, ERROR_UNABLE_TO_PROCESS))
            return
        await self._reply(connection, subscribed_frame(command_id, CHANNEL_ORDERBOOK, SID))
        connection.streaming = self._spawn(self._send_flood(connection))

    async def _reply(self, connection: _Connection, frame: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionClosed):
            await connection.ws.send(json.dumps(frame, separators=(",", ":")))

    async def _send_flood(self, connection: _Connection) -> None:
        ws = connection.ws
        first = time.time()
        try:
            for chunk in self.stream.flood:
                # Whole frames per write, so Pings and replies can only fall between frames.
                async with ws.send_context():
                    ws.transport.write(chunk)
        except ConnectionClosed:
            return
        connection.flood_done = True
        connection.next_seq = self.stream.flood_messages + 1
        self.on_event(
            {
                "event": "flood_sent",
                "connection": connection.number,
                "messages": self.stream.flood_messages,
                "first_sent": first,
                "last_sent": time.time(),
            }
        )

    async def _send_paced(self, connection: _Connection, rate: float) -> None:
        ws = connection.ws
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = time.time()
        sent = 0
        total = len(self.stream.paced)
        try:
            while sent < total:
                due = min(total, int((loop.time() - started) * rate) + 1)
                if due > sent:
                    now_ms = b"%d" % (time.time_ns() // 1_000_000)
                    frames = []
                    for frame, offset in self.stream.paced[sent:due]:
                        stamped = bytearray(frame)
                        stamped[offset : offset + TS_DIGITS] = now_ms
                        frames.append(stamped)
                    async with ws.send_context():
                        ws.transport.write(b"".join(frames))
                    sent = due
                    connection.next_seq = self.stream.flood_messages + sent + 1
                await asyncio.sleep(max(0.0, started + sent / rate - loop.time()))
        except ConnectionClosed:
            return
        self.on_event(
            {
                "event": "paced_sent",
                "connection": connection.number,
                "messages": total,
                "first_sent": first,
                "last_sent": time.time(),
            }
        )

    async def _ping_loop(self, ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.ping_interval)
                async with ws.send_context():
                    ws.protocol.send_ping(b"heartbeat")


# ---------------------------------------------------------------------------------------------- process


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def _serve(options: argparse.Namespace) -> None:
    stream = build_stream(options.markets, options.messages, paced=options.paced, seed=options.seed)
    if options.books:
        books = {"flood": books_as_json(stream.flood_books), "final": books_as_json(stream.final_books)}
        options.books.write_text(json.dumps({"tickers": stream.tickers, **books}))
    exchange = StreamExchange(
        stream=stream,
        public_key_pem=options.public_key.read_bytes(),
        key_id=options.key_id,
        host=options.host,
        port=options.port,
        on_event=_emit,
    )
    await exchange.start()
    _emit(
        {
            "event": "listening",
            "ws_url": exchange.ws_url,
            "api_url": exchange.api_url,
            "messages": stream.messages,
            "flood_messages": stream.flood_messages,
        }
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := (await reader.readline()).decode().split():
            if line[0] == "pace" and len(line) == 2:
                _emit({"event": "pacing", "connections": exchange.pace(float(line[1]))})
    finally:
        await exchange.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m apps.exchange.stream",
        description="Serve one pre-built Kalshi orderbook stream as fast as the reader takes it. Prints JSON "
        "lines (listening, flood_sent, paced_sent) on stdout; 'pace RATE' on stdin sends the paced deltas; "
        "end of stdin stops it.",
    )
    parser.add_argument("--markets", type=int, default=10, help="markets in the stream (default 10)")
    parser.add_argument("--messages", type=int, default=100_000, help="flood deltas (default 100000)")
    parser.add_argument("--paced", type=int, default=0, help="deltas held back for 'pace RATE' (default 0)")
    parser.add_argument("--seed", type=int, default=2026, help="makes the stream repeatable (default 2026)")
    parser.add_argument("--public-key", type=Path, required=True, help="PEM key that signatures are checked with")
    parser.add_argument("--key-id", default=None, help="require this KALSHI-ACCESS-KEY")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default 0: any free one)")
    parser.add_argument("--books", type=Path, default=None, help="write every market's final book here (JSON)")
    options = parser.parse_args(argv)
    asyncio.run(_serve(options))


if __name__ == "__main__":
    main()
