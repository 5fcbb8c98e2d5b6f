"""The exchange's HTTP side: signed-request checks, the WebSocket handshake gate and REST routing.

``Gateway.process_request`` guards the WebSocket port: only a signed ``/trade-api/ws/v2`` handshake may
upgrade. ``Gateway.rest`` answers the REST port (``apps.exchange.httpserver``), where every method and
request bodies are possible; each request is signed over its method and path. The signing key id picks
the account: ``/portfolio`` requests go to the desk (``apps.exchange.portfolio``) for that key, through
its rate-limit buckets and the order faults. ``POST /sim/markets/{ticker}/settle`` (signed too) is the
control call that settles a market.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from apps.exchange import portfolio, rest
from apps.exchange.config import SimulatorConfig
from apps.exchange.counts import FaultCounts, TrafficCounts
from apps.exchange.desk import Desk
from apps.exchange.httpserver import HttpRequest, HttpResponse
from apps.exchange.market import HOUSE_OWNERS, SimMarket
from apps.kalshi.signing import (
    HEADER_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    WS_PATH,
    PublicKey,
    verify,
)
from apps.kalshi.tokenbucket import TokenBucket

TradingStatus = Callable[[], tuple[bool, bool]]
"""() -> (exchange_active, trading_active), as GET /exchange/status reports them."""
Settle = Callable[[str, str], int]
"""(ticker, result) -> how many positions were settled; KeyError for an unknown market."""
CONTROL_PREFIX = "/sim/markets/"
READ_BURST_SECONDS = 3.0
WRITE_BURST_SECONDS = 1.0
"""Bucket capacities in seconds of refill, as Kalshi's Basic tier (kalshi-trading.md §5)."""


def signed_request_problem(
    headers: Headers,
    path: str,
    *,
    method: str = "GET",
    public_key: PublicKey,
    key_id: str | None,
    max_clock_skew: float,
) -> str | None:
    """Why the signed headers of a ``method`` request to ``path`` are not acceptable, or None when they are.

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
    if not verify(public_key, values[HEADER_SIGNATURE], timestamp, method, path):
        return "invalid signature"
    return None


class Gateway:
    """Answers every HTTP request of the simulator before websockets would upgrade it."""

    def __init__(
        self,
        config: SimulatorConfig,
        *,
        public_key: PublicKey,
        markets: Mapping[str, SimMarket],
        trading_status: TradingStatus,
        traffic: TrafficCounts,
        fault_counts: FaultCounts,
        desk: Desk,
        settle: Settle,
    ) -> None:
        self._config = config
        self._public_key = public_key
        self._markets = markets
        self._trading_status = trading_status
        self._traffic = traffic
        self._fault_counts = fault_counts
        self._desk = desk
        self._settle = settle
        self.keys: dict[str, PublicKey] = {}
        """More API keys by key id (``ExchangeSimulator.register_key``), each an account of its own."""
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def _auth_problem(self, headers: Headers, path: str, method: str = "GET") -> str | None:
        found = headers.get_all(HEADER_KEY)
        extra = self.keys.get(found[0]) if len(found) == 1 else None
        return signed_request_problem(
            headers,
            path,
            method=method,
            public_key=extra or self._public_key,
            key_id=found[0] if extra else self._config.key_id,
            max_clock_skew=self._config.max_clock_skew,
        )

    def _bucket(self, owner: str, kind: str) -> TokenBucket:
        bucket = self._buckets.get((owner, kind))
        if bucket is None:
            if kind == "read":
                rate, burst = self._config.read_rate, READ_BURST_SECONDS
            else:
                rate, burst = self._config.write_rate, WRITE_BURST_SECONDS
            bucket = self._buckets[(owner, kind)] = TokenBucket(rate * burst, rate)
        return bucket

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """None lets a signed WebSocket handshake through; every other request on this port is refused."""
        path = urlsplit(request.path).path
        if path != WS_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found: this port serves only the WebSocket API\n")
        if self._config.faults.reject_handshake:
            self._fault_counts.reject_handshake += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, "handshake rejected\n")
        problem = self._auth_problem(request.headers, path)
        if problem is not None:
            self._traffic.handshakes_rejected += 1
            return connection.respond(HTTPStatus.UNAUTHORIZED, problem + "\n")
        return None

    async def rest(self, request: HttpRequest) -> HttpResponse:
        """Answer one request on the REST port."""
        self._traffic.rest_requests += 1
        faults = self._config.faults
        if faults.rest_429 > 0:
            faults.rest_429 -= 1
            self._fault_counts.rest_429 += 1
            return _json(429, rest.TOO_MANY_REQUESTS)
        control = request.path.startswith(CONTROL_PREFIX)
        if not request.path.startswith(rest.API_PREFIX + "/") and not control:
            return _json(404, rest.error_body("not_found", "not found"))
        problem = self._auth_problem(request.headers, request.path, request.method)
        if problem is not None:
            return _json(401, rest.error_body("unauthorized", problem))
        if control:
            return self._control(request)
        path = request.path[len(rest.API_PREFIX) :].rstrip("/")
        if path.startswith("/portfolio/") and (request.method == "GET" or path.startswith(portfolio.ORDERS)):
            return await self._portfolio(request, path)
        if request.method != "GET":
            return _json(*rest.route_write(request.method, request.path))
        exchange_active, trading_active = self._trading_status()
        status, body = rest.route(
            request.path,
            parse_qs(request.query, keep_blank_values=True),
            self._markets,
            exchange_active=exchange_active,
            trading_active=trading_active,
        )
        return _json(status, body)

    async def _portfolio(self, request: HttpRequest, path: str) -> HttpResponse:
        """A trading request for the account of its signing key."""
        owner = request.headers[HEADER_KEY]
        if owner in HOUSE_OWNERS:
            return _json(401, rest.error_body("unauthorized", "this key id is reserved"))
        kind, tokens = portfolio.cost(request.method, path, request.body)
        if not self._bucket(owner, kind).take(tokens):
            self._traffic.rate_limited += 1
            return _json(429, rest.TOO_MANY_REQUESTS)
        faults = self._config.faults
        creating = portfolio.is_create(request.method, path)
        if request.method != "GET" and faults.order_delay > 0:
            self._fault_counts.order_delay += 1
            await asyncio.sleep(faults.order_delay)
        if creating and faults.reject_orders > 0:
            faults.reject_orders -= 1
            self._fault_counts.reject_orders += 1
            return _json(400, rest.error_body("invalid_order", "order rejected", "rejected by fault injection"))
        status, body = portfolio.route(
            self._desk, owner, request.method, path, parse_qs(request.query, keep_blank_values=True), request.body
        )
        if creating and status == 201:
            self._traffic.orders_placed += 1
        if request.method != "GET" and 200 <= status < 300 and faults.accept_then_5xx > 0:
            # What was asked stands; only the answer is lost, as when a gateway times out behind it.
            faults.accept_then_5xx -= 1
            self._fault_counts.accept_then_5xx += 1
            return _json(500, rest.error_body("internal_server_error", "internal server error"))
        return _json(status, body) if body is not None else HttpResponse(status)

    def _control(self, request: HttpRequest) -> HttpResponse:
        """``POST /sim/markets/{ticker}/settle`` with ``{"result": "yes" | "no"}``."""
        ticker, _, action = request.path[len(CONTROL_PREFIX) :].partition("/")
        if request.method != "POST" or action != "settle":
            return _json(404, rest.error_body("not_found", "not found"))
        try:
            result = json.loads(request.body or b"{}").get("result")
        except (ValueError, AttributeError):
            result = None
        if result not in ("yes", "no"):
            return _json(400, rest.error_body("bad_request", 'the body must be {"result": "yes" | "no"}'))
        try:
            settled = self._settle(unquote(ticker), result)
        except KeyError:
            return _json(404, rest.error_body("not_found", "market not found"))
        return _json(200, {"ticker": unquote(ticker), "market_result": result, "positions_settled": settled})


def _json(status: int, body: dict[str, Any]) -> HttpResponse:
    return HttpResponse(status, json.dumps(body, separators=(",", ":")).encode())
