"""The exchange's HTTP side: signed-request checks, the WebSocket handshake gate and REST routing.

WebSocket and REST share one port: ``Gateway.process_request`` checks the signed headers, answers REST
GETs itself and lets only ``/trade-api/ws/v2`` upgrade to a WebSocket.
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


def json_response(connection: ServerConnection, status: int, body: dict[str, Any]) -> Response:
    """A compact JSON answer with the one Content-Type Kalshi sends."""
    response = connection.respond(status, json.dumps(body, separators=(",", ":")))
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


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

    def _auth_problem(self, headers: Headers, path: str) -> str | None:
        return signed_request_problem(
            headers,
            path,
            public_key=self._public_key,
            key_id=self._config.key_id,
            max_clock_skew=self._config.max_clock_skew,
        )

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """None lets a signed WebSocket handshake through; every other request gets its answer here."""
        parts = urlsplit(request.path)
        path = parts.path
        if path == WS_PATH:
            if self._config.faults.reject_handshake:
                self._fault_counts.reject_handshake += 1
                return connection.respond(HTTPStatus.UNAUTHORIZED, "handshake rejected\n")
            problem = self._auth_problem(request.headers, path)
            if problem is not None:
                self._traffic.handshakes_rejected += 1
                return connection.respond(HTTPStatus.UNAUTHORIZED, problem + "\n")
            return None
        if path.startswith(rest.API_PREFIX + "/"):
            return self._rest(connection, path, parts.query, request.headers)
        return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")

    def _rest(self, connection: ServerConnection, path: str, query: str, headers: Headers) -> Response:
        self._traffic.rest_requests += 1
        faults = self._config.faults
        if faults.rest_429 > 0:
            faults.rest_429 -= 1
            self._fault_counts.rest_429 += 1
            return json_response(connection, 429, rest.error_body("too_many_requests", "too many requests"))
        problem = self._auth_problem(headers, path)
        if problem is not None:
            return json_response(connection, 401, rest.error_body("unauthorized", problem))
        exchange_active, trading_active = self._trading_status()
        status, body = rest.route(
            path,
            parse_qs(query, keep_blank_values=True),
            self._markets,
            exchange_active=exchange_active,
            trading_active=trading_active,
        )
        return json_response(connection, status, body)
