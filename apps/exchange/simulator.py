"""The built-in Kalshi exchange: an offline peer of Kalshi's WebSocket API v2 and a few REST endpoints.

Plain asyncio on ``websockets`` (no Django). WebSocket and REST share one port: ``process_request`` checks
the signed headers, answers REST GETs itself and lets only ``/trade-api/ws/v2`` upgrade to a WebSocket.

Protocol as in kalshi-protocol.md: fixed-point strings (``"0.4200"``, ``"12.50"``), one ``seq`` counter per
``sid`` (global across connections here, starting at 1, shared by all markets on that sid), a
``heartbeat`` Ping every ``ping_interval`` seconds, error codes from ``apps.kalshi.messages``.

Books move by a seeded random walk. After every sequenced message the exchange remembers which book
state it described, so ``book_at(ticker, sid, seq)`` gives the exact book a correct client must hold.
Faults are switched through ``sim.faults`` (see ``apps.exchange.faults``) or the methods
``drop_connections``, ``stall_data``, ``fail_subscriptions`` and ``set_exchange_status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from apps.exchange import rest
from apps.exchange.faults import Faults
from apps.exchange.market import (
    DECI_CENT,
    LINEAR_CENT,
    PRICE_LEVEL_STRUCTURES,
    TAPERED_DECI_CENT,
    Change,
    SimMarket,
)
from apps.kalshi.fixedpoint import DOLLAR
from apps.kalshi.messages import (
    CHANNEL_ORDERBOOK,
    CHANNELS,
    ERROR_ACTION_REQUIRED,
    ERROR_BUFFER_OVERFLOW,
    ERROR_CHANNEL,
    ERROR_CHANNELS_REQUIRED,
    ERROR_EXACTLY_ONE_SID,
    ERROR_INVALID_PARAMETER,
    ERROR_MARKET_TICKER_REQUIRED,
    ERROR_PARAMS_REQUIRED,
    ERROR_SIDS_REQUIRED,
    ERROR_UNABLE_TO_PROCESS,
    ERROR_UNKNOWN_CHANNEL,
    ERROR_UNKNOWN_COMMAND,
    ERROR_UNKNOWN_SID,
    ERROR_UNSUPPORTED_ACTION,
    OrderbookDelta,
    OrderbookSnapshot,
    SubscriptionInfo,
    delta_frame,
    error_frame,
    list_subscriptions_frame,
    ok_frame,
    snapshot_frame,
    subscribed_frame,
    unsubscribed_frame,
)
from apps.kalshi.orderbook import OrderBook
from apps.kalshi.signing import (
    HEADER_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    WS_PATH,
    PublicKey,
    load_public_key,
    verify,
)

__all__ = ["DEFAULT_MARKETS", "ExchangeSimulator", "Faults", "SimulatorConfig"]

logger = logging.getLogger(__name__)

DEFAULT_MARKETS: list[str] = [
    "KXFED-26DEC-T4.25",
    "KXCPI-26DEC-T0.3",
    "KXBTCD-26DEC31-T100000",
    "KXNBA-26-LAL",
    "KXETHD-26DEC31-T4000",
    "KXHIGHNY-26DEC31-T45",
]
"""Plausible tickers; KXBTCD trades in deci-cents and KXETHD in tapered deci-cents, the rest in cents."""

_DEFAULT_STRUCTURES = {
    "KXBTCD-26DEC31-T100000": DECI_CENT,
    "KXETHD-26DEC31-T4000": TAPERED_DECI_CENT,
}
_DEFAULT_CLOSE_TIMES = {
    "KXFED-26DEC-T4.25": "2026-12-09T19:00:00Z",
    "KXCPI-26DEC-T0.3": "2026-12-10T13:30:00Z",
    "KXBTCD-26DEC31-T100000": "2026-12-31T22:00:00Z",
    "KXNBA-26-LAL": "2027-06-30T23:59:00Z",
    "KXETHD-26DEC31-T4000": "2026-12-31T22:00:00Z",
    "KXHIGHNY-26DEC31-T45": "2027-01-01T04:59:00Z",
}
_FALLBACK_CLOSE_TIME = "2027-12-31T23:59:00Z"

REST_PATH_PREFIX = rest.API_PREFIX
_MAX_SEQ_LOGS = 1024
"""Ended subscriptions whose seq record is still kept for ``book_at``."""

# Malformed frames sent by the malformed_every fault, in rotation.
_MALFORMED_FRAMES = (
    '{"type":"orderbook_delta","sid":',
    '["orderbook_delta",1,2]',
    '{"type":"orderbook_delta","msg":{"side":"yes"}}',
)


@dataclass
class SimulatorConfig:
    """Everything the simulator needs; a plain dataclass so settings and the command can build it."""

    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port; read it back from ``sim.port`` after ``start()``."""
    public_key_pem: bytes = b""
    """Handshake and REST signatures are verified against this key (required)."""
    key_id: str | None = None
    """When set, KALSHI-ACCESS-KEY must equal it."""
    markets: list[str] | None = None
    """Tickers to simulate; None means DEFAULT_MARKETS."""
    message_rate: float = 50.0
    """orderbook_delta changes per second across all subscribed markets (read live; 0 pauses)."""
    ping_interval: float = 10.0
    """Seconds between heartbeat Pings (body b"heartbeat"), as Kalshi; <= 0 disables them."""
    seed: int | None = None
    """Makes books and deltas repeatable (each market has its own stream, so the k-th change of a market
    is the same whatever else is subscribed)."""
    faults: Faults = field(default_factory=Faults)
    history_size: int = 5000
    """How many past changes per market and past seqs per sid ``book_at`` can reach back."""
    outbound_limit: int = 10_000
    """Frames queued for one slow connection before its subscription gets error 25 and ends."""
    max_clock_skew: float = 60.0
    """Seconds a KALSHI-ACCESS-TIMESTAMP may differ from the exchange clock."""
    price_structures: dict[str, str] = field(default_factory=dict)
    """Ticker -> linear_cent | deci_cent | tapered_deci_cent; others use the built-in table or cents."""
    socket_send_buffer: int | None = None
    """SO_SNDBUF for accepted sockets; a small value makes slow-reader overflow show up sooner."""


class _CommandError(Exception):
    def __init__(self, code: int, market_tickers: list[str] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.market_tickers = market_tickers


class _SeqLog:
    """Per-sid seq counter, remembering the exchange event number each recent seq was issued at."""

    __slots__ = ("events", "next_seq")

    def __init__(self, size: int) -> None:
        self.events: deque[int] = deque(maxlen=max(1, size))
        self.next_seq = 1

    def issue(self, event: int) -> int:
        seq = self.next_seq
        self.events.append(event)
        self.next_seq += 1
        return seq

    def event_at(self, seq: int) -> int | None:
        first = self.next_seq - len(self.events)
        if first <= seq < self.next_seq:
            return self.events[seq - first]
        return None


class _Session:
    """One WebSocket connection: its subscriptions and its outbound queue."""

    def __init__(self, number: int, ws: ServerConnection) -> None:
        self.number = number
        self.ws = ws
        self.subs: dict[int, _Subscription] = {}
        self.outbox: deque[tuple[str, int | None]] = deque()
        self.wake = asyncio.Event()
        self.sent = 0
        self.malformed = 0
        self.closed = False


@dataclass(eq=False)
class _Subscription:
    sid: int
    channel: str
    session: _Session
    log: _SeqLog
    tickers: list[str]
    skip_ticker_ack: bool = False
    use_yes_price: bool = False
    deltas: int = 0
    active: bool = True


def _rfc3339(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def signed_request_problem(
    headers: Headers, path: str, *, public_key: PublicKey, key_id: str | None, max_clock_skew: float
) -> str | None:
    """Why the signed headers of a GET to ``path`` are not acceptable, or None when they are.

    ``key_id`` (when set) must be the KALSHI-ACCESS-KEY; the timestamp must lie within ``max_clock_skew``
    seconds of this clock.
    """
    values: dict[str, str] = {}
    for name in (HEADER_KEY, HEADER_TIMESTAMP, HEADER_SIGNATURE):
        found = headers.get_all(name)
        if len(found) != 1 or not found[0]:
            return f"missing or repeated {name} header"
        values[name] = found[0]
    if key_id is not None and values[HEADER_KEY] != key_id:
        return "unknown API key"
    timestamp = values[HEADER_TIMESTAMP]
    if not timestamp.isdigit():
        return "KALSHI-ACCESS-TIMESTAMP must be Unix milliseconds"
    if abs(time.time() * 1000 - int(timestamp)) > max_clock_skew * 1000:
        return "KALSHI-ACCESS-TIMESTAMP is too far from the exchange clock"
    if not verify(public_key, values[HEADER_SIGNATURE], timestamp, "GET", path):
        return "invalid signature"
    return None


class ExchangeSimulator:
    """A faithful offline Kalshi exchange: ``await start()``, use ``ws_url``, ``api_url``, ``await stop()``.

    Runtime switches: assign fields of ``sim.faults``; call ``drop_connections()``, ``stall_data(seconds)``,
    ``fail_subscriptions(code, sid)``, ``set_exchange_status(...)``, ``set_market_status(...)``.
    """

    def __init__(self, config: SimulatorConfig) -> None:
        if not config.public_key_pem:
            raise ValueError("SimulatorConfig.public_key_pem is required")
        self.config = config
        self._public_key = load_public_key(config.public_key_pem)
        tickers = list(config.markets) if config.markets is not None else list(DEFAULT_MARKETS)
        if not tickers or len(set(tickers)) != len(tickers):
            raise ValueError("markets must be a non-empty list of distinct tickers")
        self._markets: dict[str, SimMarket] = {}
        for ticker in tickers:
            structure = config.price_structures.get(ticker, _DEFAULT_STRUCTURES.get(ticker, LINEAR_CENT))
            if structure not in PRICE_LEVEL_STRUCTURES:
                raise ValueError(f"{ticker}: unknown price level structure {structure!r}")
            self._markets[ticker] = SimMarket(
                ticker,
                structure=structure,
                rng=self._rng(f"market:{ticker}"),
                close_time=_DEFAULT_CLOSE_TIMES.get(ticker, _FALLBACK_CLOSE_TIME),
                history_size=config.history_size,
            )
        self._schedule_rng = self._rng("schedule")
        self.exchange_active = True
        self.trading_active = True
        self._event = 0
        self._next_sid = 1
        self._next_session = 1
        self._sessions: dict[int, _Session] = {}
        self._logs: OrderedDict[int, _SeqLog] = OrderedDict()
        self._server: Server | None = None
        self._port: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stall_until = 0.0
        self._stalled_now = False
        self._stopped = False
        self._oversized_cache: tuple[int, str] | None = None
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "connections_total",
                "handshakes_rejected",
                "messages_sent",
                "snapshots_sent",
                "deltas_sent",
                "pings_sent",
                "commands",
                "rest_requests",
            ),
            0,
        )
        self._fault_counts: dict[str, int] = dict.fromkeys(
            (
                "drop",
                "skip_seq",
                "stall",
                "no_ping",
                "subscription_error",
                "buffer_overflow",
                "reject_handshake",
                "malformed",
                "oversized",
                "rest_429",
            ),
            0,
        )

    def _rng(self, name: str) -> random.Random:
        # String seeds hash deterministically (unlike hash()), so each stream is repeatable per seed.
        return random.Random(f"{self.config.seed}:{name}") if self.config.seed is not None else random.Random()

    # ------------------------------------------------------------------------------------------ lifecycle

    @property
    def faults(self) -> Faults:
        """The live fault switches; assigning a field takes effect at once."""
        return self.config.faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self.config.faults = value

    async def start(self) -> None:
        """Bind and start serving; ``port``, ``ws_url`` and ``api_url`` are valid afterwards."""
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        self._server = await serve(
            self._handle_connection,
            self.config.host,
            self.config.port,
            process_request=self._process_request,
            ping_interval=None,  # heartbeat pings are sent by _ping_loop with Kalshi's body
            compression=None,
            close_timeout=1.0,
            logger=logging.getLogger("apps.exchange.websockets"),
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="exchange-ticks"),
            asyncio.create_task(self._fault_loop(), name="exchange-faults"),
        ]

    async def stop(self) -> None:
        """Close every connection and stop all tasks. Safe to call more than once."""
        if self._server is None or self._stopped:
            return
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._server.close()
        try:
            await asyncio.wait_for(self._server.wait_closed(), timeout=3.0)
        except TimeoutError:
            for session in list(self._sessions.values()):
                session.ws.transport.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        return self._port

    @property
    def _netloc(self) -> str:
        host = self.config.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self._netloc}{WS_PATH}"

    @property
    def api_url(self) -> str:
        return f"http://{self._netloc}{REST_PATH_PREFIX}"

    @property
    def markets(self) -> list[str]:
        """The simulated tickers, in order."""
        return list(self._markets)

    def market_id(self, ticker: str) -> str:
        return self._markets[ticker].market_id

    # ------------------------------------------------------------------------------------------ books

    def true_book(self, ticker: str) -> OrderBook:
        """A copy of the exchange's current book for ``ticker`` (KeyError if unknown)."""
        market = self._markets[ticker]
        book = OrderBook(ticker)
        book.market_id = market.market_id
        book.yes = dict(market.yes)
        book.no = dict(market.no)
        return book

    def book_at(self, ticker: str, sid: int, seq: int) -> OrderBook | None:
        """The book of ``ticker`` exactly as it was when message ``seq`` of subscription ``sid`` was issued.

        That is the state a client holds after applying every message of ``sid`` up to and including
        ``seq``, whether that message was about ``ticker`` or another market on the same sid. The returned
        book has ``sid`` and ``seq`` set. None when the sid is unknown or ``seq`` is outside the retained
        window (the last ``history_size`` seqs of the sid and changes of the market; records of the last
        1024 ended subscriptions are kept). KeyError for an unknown ticker.
        """
        market = self._markets[ticker]
        log = self._logs.get(sid)
        event = log.event_at(seq) if log is not None else None
        state = market.book_at_event(event) if event is not None else None
        if state is None:
            return None
        book = OrderBook(ticker)
        book.market_id = market.market_id
        book.sid = sid
        book.seq = seq
        book.yes, book.no = state
        return book

    # ------------------------------------------------------------------------------------------ control

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: connections (open now), connections_total, handshakes_rejected, messages_sent,
        snapshots_sent, deltas_sent, pings_sent, commands, rest_requests, subscriptions (open now) and
        faults (how often each fault kind happened)."""
        stats: dict[str, Any] = dict(self._counts)
        stats["connections"] = len(self._sessions)
        stats["subscriptions"] = sum(len(s.subs) for s in self._sessions.values())
        stats["faults"] = dict(self._fault_counts)
        return stats

    def set_exchange_status(self, exchange_active: bool, trading_active: bool | None = None) -> None:
        """Open or close the exchange (GET /exchange/status). Books do not move while trading is off."""
        self.exchange_active = exchange_active
        self.trading_active = exchange_active if trading_active is None else trading_active

    def set_market_status(self, ticker: str, status: str) -> None:
        """Set a market's REST status (active, closed, finalized, ...); only active markets move."""
        if status not in rest.MARKET_STATUSES:
            raise ValueError(f"unknown market status {status!r}")
        self._markets[ticker].status = status

    def drop_connections(self) -> int:
        """Abort every open connection without a close frame; returns how many were dropped."""
        sessions = list(self._sessions.values())
        for session in sessions:
            session.ws.transport.abort()
        self._fault_counts["drop"] += len(sessions)
        return len(sessions)

    def stall_data(self, seconds: float) -> None:
        """Produce no orderbook deltas for ``seconds`` (pings and command replies continue)."""
        until = asyncio.get_running_loop().time() + seconds
        self._stall_until = max(self._stall_until, until)

    def fail_subscriptions(self, code: int = ERROR_CHANNEL, sid: int | None = None) -> int:
        """End subscriptions with a terminal error (10 or 25): one sid, or every orderbook subscription.

        Returns how many ended.
        """
        ended = 0
        for session in list(self._sessions.values()):
            for sub in list(session.subs.values()):
                if (sid is None and sub.channel == CHANNEL_ORDERBOOK) or sub.sid == sid:
                    self._end_subscription(sub, code)
                    self._fault_counts["subscription_error"] += 1
                    ended += 1
        return ended

    # ------------------------------------------------------------------------------------------ HTTP

    def _auth_problem(self, headers: Headers, path: str) -> str | None:
        """Why the signed headers of a GET to ``path`` are not acceptable, or None when they are."""
        return signed_request_problem(
            headers,
            path,
            public_key=self._public_key,
            key_id=self.config.key_id,
            max_clock_skew=self.config.max_clock_skew,
        )

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        path = parts.path
        if path == WS_PATH:
            if self.faults.reject_handshake:
                self._fault_counts["reject_handshake"] += 1
                return connection.respond(HTTPStatus.UNAUTHORIZED, "handshake rejected\n")
            problem = self._auth_problem(request.headers, path)
            if problem is not None:
                self._counts["handshakes_rejected"] += 1
                return connection.respond(HTTPStatus.UNAUTHORIZED, problem + "\n")
            return None
        if path.startswith(REST_PATH_PREFIX + "/"):
            return self._rest(connection, path, parts.query, request.headers)
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")

    def _rest(self, connection: ServerConnection, path: str, query: str, headers: Headers) -> Response:
        self._counts["rest_requests"] += 1
        faults = self.faults
        if faults.rest_429 > 0:
            faults.rest_429 -= 1
            self._fault_counts["rest_429"] += 1
            return self._json(connection, 429, rest.error_body("too_many_requests", "too many requests"))
        problem = self._auth_problem(headers, path)
        if problem is not None:
            return self._json(connection, 401, rest.error_body("unauthorized", problem))
        status, body = rest.route(
            path,
            parse_qs(query, keep_blank_values=True),
            self._markets,
            exchange_active=self.exchange_active,
            trading_active=self.trading_active,
        )
        return self._json(connection, status, body)

    @staticmethod
    def _json(connection: ServerConnection, status: int, body: dict[str, Any]) -> Response:
        response = connection.respond(status, json.dumps(body, separators=(",", ":")))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    # ------------------------------------------------------------------------------------------ connections

    async def _handle_connection(self, ws: ServerConnection) -> None:
        if self.config.socket_send_buffer:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.socket_send_buffer)
        session = _Session(self._next_session, ws)
        self._next_session += 1
        self._sessions[session.number] = session
        self._counts["connections_total"] += 1
        tasks = [asyncio.create_task(self._write_loop(session))]
        if self.config.ping_interval > 0:
            tasks.append(asyncio.create_task(self._ping_loop(session)))
        try:
            async for message in ws:
                self._on_message(session, message)
        except ConnectionClosed:
            pass
        finally:
            session.closed = True
            for sub in session.subs.values():
                sub.active = False
            session.subs.clear()
            self._sessions.pop(session.number, None)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _write_loop(self, session: _Session) -> None:
        """Send queued frames in order; a client that reads slowly makes the queue grow (see _enqueue)."""
        ws = session.ws
        try:
            while True:
                if not session.outbox:
                    session.wake.clear()
                    await session.wake.wait()
                    continue
                text, _ = session.outbox.popleft()
                await ws.send(text)
                self._counts["messages_sent"] += 1
                session.sent += 1
                faults = self.faults
                if faults.malformed_every and session.sent % faults.malformed_every == 0:
                    await ws.send(_MALFORMED_FRAMES[session.malformed % len(_MALFORMED_FRAMES)])
                    session.malformed += 1
                    self._fault_counts["malformed"] += 1
                if faults.oversized_every and session.sent % faults.oversized_every == 0:
                    await ws.send(self._oversized_frame(faults.oversized_bytes))
                    self._fault_counts["oversized"] += 1
        except ConnectionClosed:
            pass

    def _oversized_frame(self, size: int) -> str:
        if self._oversized_cache is None or self._oversized_cache[0] != size:
            head, tail = '{"type":"padding","msg":{"pad":"', '"}}'
            self._oversized_cache = (size, head + "x" * max(0, size - len(head) - len(tail)) + tail)
        return self._oversized_cache[1]

    async def _ping_loop(self, session: _Session) -> None:
        ws = session.ws
        try:
            while True:
                await asyncio.sleep(self.config.ping_interval)
                if self.faults.no_ping:
                    self._fault_counts["no_ping"] += 1
                    continue
                # Sent raw: ws.ping() refuses a second ping with the same body while a pong is pending.
                async with ws.send_context():
                    ws.protocol.send_ping(b"heartbeat")
                self._counts["pings_sent"] += 1
        except ConnectionClosed:
            pass

    def _enqueue(self, session: _Session, frame: dict[str, Any], sid: int | None = None) -> None:
        """Queue a frame. Data frames (``sid`` given) beyond ``outbound_limit`` end that subscription
        with error 25, as Kalshi does when a client does not keep up."""
        if session.closed:
            return
        if sid is not None and len(session.outbox) >= self.config.outbound_limit:
            sub = session.subs.get(sid)
            if sub is not None:
                self._fault_counts["buffer_overflow"] += 1
                self._end_subscription(sub, ERROR_BUFFER_OVERFLOW, discard_queued=True)
            return
        session.outbox.append((json.dumps(frame, separators=(",", ":")), sid))
        session.wake.set()

    def _end_subscription(self, sub: _Subscription, code: int, *, discard_queued: bool = False) -> None:
        """End a subscription server-side with a terminal error.

        On overflow (``discard_queued``) its frames still queued are lost, as a dropped buffer would be;
        otherwise everything queued before the error is still delivered.
        """
        if not sub.active:
            return
        sub.active = False
        session = sub.session
        session.subs.pop(sub.sid, None)
        if discard_queued:
            kept = [item for item in session.outbox if item[1] != sub.sid]
            session.outbox.clear()
            session.outbox.extend(kept)
        self._enqueue(session, error_frame(None, code, sid=sub.sid))

    # ------------------------------------------------------------------------------------------ commands

    def _on_message(self, session: _Session, message: str | bytes) -> None:
        self._counts["commands"] += 1
        try:
            command = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            self._enqueue(session, error_frame(None, ERROR_UNABLE_TO_PROCESS))
            return
        if not isinstance(command, dict):
            self._enqueue(session, error_frame(None, ERROR_UNABLE_TO_PROCESS))
            return
        command_id = command.get("id")
        if command_id is not None and (not _is_int(command_id) or command_id < 0):
            self._enqueue(session, error_frame(None, ERROR_UNABLE_TO_PROCESS))
            return
        handlers = {
            "subscribe": self._cmd_subscribe,
            "unsubscribe": self._cmd_unsubscribe,
            "update_subscription": self._cmd_update_subscription,
            "list_subscriptions": self._cmd_list_subscriptions,
        }
        name = command.get("cmd")
        handler = handlers.get(name) if isinstance(name, str) else None
        try:
            if handler is None:
                raise _CommandError(ERROR_UNKNOWN_COMMAND)
            handler(session, command_id, command.get("params"))
        except _CommandError as exc:
            self._enqueue(session, error_frame(command_id, exc.code, market_tickers=exc.market_tickers))
        except Exception:
            logger.exception("exchange simulator: command %r failed", name)
            self._enqueue(session, error_frame(command_id, ERROR_UNABLE_TO_PROCESS))

    def _market_tickers_param(self, params: dict[str, Any]) -> list[str] | None:
        """market_ticker or market_tickers (not both), every one a known market; None if neither given."""
        one = params.get("market_ticker")
        many = params.get("market_tickers")
        if one is not None and many is not None:
            raise _CommandError(ERROR_INVALID_PARAMETER)
        if one is not None:
            if not isinstance(one, str) or not one:
                raise _CommandError(ERROR_INVALID_PARAMETER)
            tickers = [one]
        elif many is not None:
            if not isinstance(many, list) or not many or not all(isinstance(t, str) and t for t in many):
                raise _CommandError(ERROR_INVALID_PARAMETER)
            tickers = list(dict.fromkeys(many))
        else:
            return None
        unknown = [t for t in tickers if t not in self._markets]
        if unknown:
            raise _CommandError(ERROR_INVALID_PARAMETER, unknown)
        return tickers

    @staticmethod
    def _bool_param(params: dict[str, Any], name: str) -> bool:
        value = params.get(name, False)
        if not isinstance(value, bool):
            raise _CommandError(ERROR_INVALID_PARAMETER)
        return value

    def _cmd_subscribe(self, session: _Session, command_id: int | None, params: object) -> None:
        if not isinstance(params, dict):
            raise _CommandError(ERROR_PARAMS_REQUIRED)
        channels = params.get("channels")
        if not isinstance(channels, list) or not channels:
            raise _CommandError(ERROR_CHANNELS_REQUIRED)
        if not all(isinstance(c, str) and c in CHANNELS for c in channels):
            raise _CommandError(ERROR_UNKNOWN_CHANNEL)
        tickers = self._market_tickers_param(params)
        if CHANNEL_ORDERBOOK in channels and tickers is None:
            raise _CommandError(ERROR_MARKET_TICKER_REQUIRED)
        skip_ticker_ack = self._bool_param(params, "skip_ticker_ack")
        use_yes_price = self._bool_param(params, "use_yes_price")
        for channel in dict.fromkeys(channels):
            sid = self._next_sid
            self._next_sid += 1
            log = _SeqLog(self.config.history_size)
            self._logs[sid] = log
            while len(self._logs) > _MAX_SEQ_LOGS:
                self._logs.popitem(last=False)
            sub = _Subscription(
                sid=sid,
                channel=channel,
                session=session,
                log=log,
                tickers=list(tickers or []),
                skip_ticker_ack=skip_ticker_ack,
                use_yes_price=use_yes_price,
            )
            session.subs[sid] = sub
            self._enqueue(session, subscribed_frame(command_id, channel, sid))
            if channel == CHANNEL_ORDERBOOK:
                for ticker in sub.tickers:
                    self._send_snapshot(sub, ticker, None)

    def _cmd_unsubscribe(self, session: _Session, command_id: int | None, params: object) -> None:
        if not isinstance(params, dict):
            raise _CommandError(ERROR_PARAMS_REQUIRED)
        sids = params.get("sids")
        if not isinstance(sids, list) or not sids or not all(_is_int(s) for s in sids):
            raise _CommandError(ERROR_SIDS_REQUIRED)
        # All or nothing: one unknown sid rejects the whole command.
        if any(sid not in session.subs for sid in sids):
            raise _CommandError(ERROR_UNKNOWN_SID)
        for sid in dict.fromkeys(sids):
            sub = session.subs.pop(sid)
            sub.active = False
            self._enqueue(session, unsubscribed_frame(command_id, sid, sub.log.issue(self._event)))

    def _one_sid(self, params: dict[str, Any]) -> int:
        sid = params.get("sid")
        sids = params.get("sids")
        if (sid is None) == (sids is None):
            raise _CommandError(ERROR_EXACTLY_ONE_SID)
        if sids is not None:
            if not isinstance(sids, list) or len(sids) != 1:
                raise _CommandError(ERROR_EXACTLY_ONE_SID)
            sid = sids[0]
        if not _is_int(sid):
            raise _CommandError(ERROR_EXACTLY_ONE_SID)
        assert isinstance(sid, int)
        return sid

    def _cmd_update_subscription(self, session: _Session, command_id: int | None, params: object) -> None:
        if not isinstance(params, dict):
            raise _CommandError(ERROR_PARAMS_REQUIRED)
        action = params.get("action")
        if action is None:
            raise _CommandError(ERROR_ACTION_REQUIRED)
        if action not in ("add_markets", "delete_markets", "get_snapshot"):
            raise _CommandError(ERROR_UNSUPPORTED_ACTION)
        sid = self._one_sid(params)
        sub = session.subs.get(sid)
        if sub is None:
            raise _CommandError(ERROR_UNKNOWN_SID)
        tickers = self._market_tickers_param(params)
        if tickers is None:
            raise _CommandError(ERROR_MARKET_TICKER_REQUIRED)
        if action == "get_snapshot":
            if sub.channel != CHANNEL_ORDERBOOK:
                raise _CommandError(ERROR_UNSUPPORTED_ACTION)
            missing = [t for t in tickers if t not in sub.tickers]
            if missing:
                raise _CommandError(ERROR_INVALID_PARAMETER, missing)
            for ticker in tickers:
                self._send_snapshot(sub, ticker, command_id)
            return
        if action == "add_markets":
            added = [t for t in tickers if t not in sub.tickers]
            sub.tickers.extend(added)
        else:
            added = []
            sub.tickers = [t for t in sub.tickers if t not in tickers]
        seq = sub.log.issue(self._event)
        listed = None if sub.skip_ticker_ack else list(sub.tickers)
        self._enqueue(session, ok_frame(command_id, sid=sid, seq=seq, market_tickers=listed))
        if sub.channel == CHANNEL_ORDERBOOK:
            for ticker in added:
                self._send_snapshot(sub, ticker, None)

    def _cmd_list_subscriptions(self, session: _Session, command_id: int | None, params: object) -> None:
        infos = [SubscriptionInfo(channel=s.channel, sid=s.sid) for s in session.subs.values()]
        self._enqueue(session, list_subscriptions_frame(command_id, infos))

    # ------------------------------------------------------------------------------------------ data

    def _send_snapshot(self, sub: _Subscription, ticker: str, command_id: int | None) -> None:
        market = self._markets[ticker]
        seq = sub.log.issue(self._event)
        no = sorted(market.no.items())
        if sub.use_yes_price:
            no = sorted((DOLLAR - price, size) for price, size in no)
        snapshot = OrderbookSnapshot(
            sid=sub.sid,
            seq=seq,
            market_ticker=ticker,
            market_id=market.market_id,
            yes=sorted(market.yes.items()),
            no=no,
            id=command_id,
        )
        self._counts["snapshots_sent"] += 1
        self._enqueue(sub.session, snapshot_frame(snapshot), sub.sid)

    def _send_delta(self, sub: _Subscription, market: SimMarket, change: Change, ts_ms: int) -> None:
        seq = sub.log.issue(self._event)
        sub.deltas += 1
        faults = self.faults
        if faults.skip_seq_every and sub.deltas % faults.skip_seq_every == 0:
            self._fault_counts["skip_seq"] += 1
        else:
            price = change.price
            if sub.use_yes_price and change.side == "no":
                price = DOLLAR - price
            delta = OrderbookDelta(
                sid=sub.sid,
                seq=seq,
                market_ticker=market.ticker,
                market_id=market.market_id,
                price=price,
                delta=change.delta,
                side=change.side,
                ts_ms=ts_ms,
            )
            frame = delta_frame(delta)
            frame["msg"]["ts"] = _rfc3339(ts_ms)
            self._counts["deltas_sent"] += 1
            self._enqueue(sub.session, frame, sub.sid)
        if faults.error_every and sub.deltas % faults.error_every == 0 and sub.active:
            self._fault_counts["subscription_error"] += 1
            self._end_subscription(sub, faults.error_code)

    def _active_markets(self) -> list[str]:
        wanted: set[str] = set()
        for session in self._sessions.values():
            for sub in session.subs.values():
                if sub.channel == CHANNEL_ORDERBOOK:
                    wanted.update(sub.tickers)
        # Config order, not set order, so the schedule is repeatable for a seed.
        return [t for t, m in self._markets.items() if t in wanted and m.status == "active"]

    def _produce_delta(self) -> bool:
        """Move one subscribed market by one change and fan it out; False when nothing is subscribed."""
        active = self._active_markets()
        if not active:
            return False
        market = self._markets[self._schedule_rng.choice(active)]
        self.publish_change(market.ticker, market.next_change())
        return True

    def publish_change(self, ticker: str, change: Change, ts_ms: int | None = None) -> None:
        """Apply one book change and send it to every subscriber of the market, as a generated one is.

        Public so a change decided elsewhere (a recorded session being replayed) moves the book too.
        ValueError when it would leave a negative size.
        """
        market = self._markets[ticker]
        self._event += 1
        market.apply(change, self._event)
        ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
        for session in list(self._sessions.values()):
            for sub in list(session.subs.values()):
                if sub.active and sub.channel == CHANNEL_ORDERBOOK and market.ticker in sub.tickers:
                    self._send_delta(sub, market, change, ts_ms)

    def _stalled(self, now: float) -> bool:
        stalled = self.faults.stall or now < self._stall_until
        if stalled and not self._stalled_now:
            self._fault_counts["stall"] += 1
        self._stalled_now = stalled
        return stalled

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        owed = 0.0
        while True:
            rate = self.config.message_rate
            await asyncio.sleep(min(0.05, max(0.002, 1.0 / rate)) if rate > 0 else 0.05)
            now = loop.time()
            elapsed, last = now - last, now
            if rate <= 0 or self._stalled(now) or not self.trading_active:
                owed = 0.0
                continue
            # A late wake-up must not turn into a burst of more than a quarter second's worth.
            owed = min(owed + elapsed * rate, max(1.0, rate / 4))
            while owed >= 1.0:
                owed -= 1.0
                if not self._produce_delta():
                    owed = 0.0
                    break

    async def _fault_loop(self) -> None:
        loop = asyncio.get_running_loop()
        drop_period: float | None = None
        drop_at: float | None = None
        stall_period: float | None = None
        stall_at: float | None = None
        while True:
            await asyncio.sleep(0.02)
            now = loop.time()
            faults = self.faults
            # A changed period restarts its schedule from now.
            if faults.drop_every != drop_period:
                drop_period = faults.drop_every
                drop_at = now + drop_period if drop_period else None
            if drop_at is not None and drop_period and now >= drop_at:
                self.drop_connections()
                drop_at = now + drop_period
            if faults.stall_every != stall_period:
                stall_period = faults.stall_every
                stall_at = now + stall_period if stall_period else None
            if stall_at is not None and stall_period and now >= stall_at:
                self.stall_data(faults.stall_for)
                stall_at = now + stall_period
