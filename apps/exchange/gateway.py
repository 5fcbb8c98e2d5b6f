"""The exchange's HTTP side: signed-request checks, the WebSocket handshake gate and REST routing.

``Gateway.process_request`` guards the WebSocket port: only a signed ``/trade-api/ws/v2`` handshake may
upgrade. ``Gateway.rest`` answers the REST port (``apps.exchange.httpserver``), where every method and
request bodies are possible; each request is signed over its method and path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from apps.exchange import rest
from apps.exchange.config import SimulatorConfig
from apps.exchange.counts import FaultCounts, TrafficCounts
from apps.exchange.httpserver import HttpRequest, HttpResponse
from apps.exchange.market import SimMarket
from apps.kalshi.signing import (
    HEADER_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    WS_PATH,
    PublicKey,
    verify,
)

TradingStatus = Callable[[], tuple[bool, bool]]
"""() -> (exchange_active, trading_active), as GET /exchange/status reports them."""


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
    ) -> None:
        self._config = config
        self._public_key = public_key
        self._markets = markets
        self._trading_status = trading_status
        self._traffic = traffic
        self._fault_counts = fault_counts

    def _auth_problem(self, headers: Headers, path: str, method: str = "GET") -> str | None:
        return signed_request_problem(
            headers,
            path,
            method=method,
            public_key=self._public_key,
            key_id=self._config.key_id,
            max_clock_skew=self._config.max_clock_skew,
        )

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
        if not request.path.startswith(rest.API_PREFIX + "/"):
            return _json(404, rest.error_body("not_found", "not found"))
        problem = self._auth_problem(request.headers, request.path, request.method)
        if problem is not None:
            return _json(401, rest.error_body("unauthorized", problem))
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


def _json(status: int, body: dict[str, Any]) -> HttpResponse:
    return HttpResponse(status, json.dumps(body, separators=(",", ":")).encode())
