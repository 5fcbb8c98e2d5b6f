"""A Kalshi V2 trading account behind httpx.MockTransport, for the answers the built-in exchange never gives:
creates, decreases and the reads of a reconcile in real shapes (kalshi-trading.md §4), every request kept and
its signature checked, and scripted faults (answer the next matching request with something else, before or
after doing what it asked)."""

from __future__ import annotations

import base64
import itertools
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx

from apps.kalshi.fixedpoint import DOLLAR, format_price, format_size, parse_price, parse_size
from apps.kalshi.signing import HEADER_SIGNATURE, HEADER_TIMESTAMP, PublicKey, verify

BASE = "/trade-api/v2"
ORDERS = f"{BASE}/portfolio/events/orders"


def kalshi_error(status: int, code: str, message: str, details: str = "") -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message, "details": details}})


@dataclass
class Fault:
    """What happens to the next request for (method, path): ``response`` replaces the answer, or ``exception``
    is raised; with ``after`` the request is executed first (accepted, then the answer is lost)."""

    method: str
    path: str
    response: httpx.Response | None = None
    exception: Exception | None = None
    after: bool = False


@dataclass
class FakeKalshi:
    public_key: PublicKey
    user_id: str = "user-5e1f"
    requests: list[httpx.Request] = field(default_factory=list)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: deque[Fault] = field(default_factory=deque)
    positions: list[dict[str, Any]] = field(default_factory=list)
    balance: dict[str, Any] = field(
        default_factory=lambda: {"balance": 1000000, "balance_dollars": "10000.000000", "portfolio_value": 0}
    )
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def fail_next(self, method: str, path: str, **kwargs: Any) -> None:
        self.faults.append(Fault(method, BASE + path, **kwargs))

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and r.url.path == BASE + path]

    # ------------------------------------------------------------------------------------------ handling

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        headers = request.headers
        if not verify(
            self.public_key, headers[HEADER_SIGNATURE], headers[HEADER_TIMESTAMP], request.method, request.url.path
        ):
            return kalshi_error(401, "authentication_error", "invalid signature")
        fault = next((f for f in self.faults if f.method == request.method and f.path == request.url.path), None)
        if fault is not None:
            self.faults.remove(fault)
            if fault.after:
                self.route(request)
            if fault.exception is not None:
                raise fault.exception
            assert fault.response is not None
            return fault.response
        return self.route(request)

    def route(self, request: httpx.Request) -> httpx.Response:
        method, path = request.method, request.url.path
        body = json.loads(request.content) if request.content else {}
        query = dict(request.url.params)
        if method == "POST" and path == ORDERS:
            return self.create(body)
        if method == "POST" and path.endswith("/decrease"):
            order = self.orders[path.removeprefix(ORDERS + "/").removesuffix("/decrease")]
            remaining = parse_size(order["remaining_count_fp"])
            if "reduce_by" in body:
                remaining = max(0, remaining - parse_size(body["reduce_by"]))
            else:
                remaining = min(remaining, parse_size(body["reduce_to"]))
            order["remaining_count_fp"] = format_size(remaining)
            return httpx.Response(
                200, json={"order_id": order["order_id"], "remaining_count": format_size(remaining), "ts_ms": 1}
            )
        if method == "GET" and path == f"{BASE}/portfolio/orders":
            found = [
                o
                for o in self.orders.values()
                if query.get("ticker") in (None, o["ticker"]) and query.get("status") in (None, o["status"])
            ]
            return self.page("orders", found, query)
        if method == "GET" and path == f"{BASE}/portfolio/positions":
            answer = self.page("market_positions", self.positions, query)
            return httpx.Response(200, json={**answer.json(), "event_positions": []})
        if method == "GET" and path == f"{BASE}/portfolio/balance":
            return httpx.Response(200, json=self.balance)
        return kalshi_error(404, "not_found", f"no route {method} {path}")

    def page(self, key: str, items: list[dict[str, Any]], query: dict[str, str]) -> httpx.Response:
        limit = int(query.get("limit", "100"))
        start = int(base64.b64decode(query["cursor"])) if query.get("cursor") else 0
        end = start + limit
        cursor = base64.b64encode(str(end).encode()).decode() if end < len(items) else ""
        return httpx.Response(200, json={key: items[start:end], "cursor": cursor})

    def create(self, body: dict[str, Any]) -> httpx.Response:
        client_order_id = body.get("client_order_id")
        if any(o["client_order_id"] == client_order_id for o in self.orders.values()):
            return kalshi_error(409, "duplicate_client_order_id", "an order with this client_order_id exists")
        order_id = f"ord-{next(self._ids):04d}"
        price = parse_price(body["price"])
        self.orders[order_id] = {
            "order_id": order_id,
            "user_id": self.user_id,
            "client_order_id": client_order_id,
            "ticker": body["ticker"],
            "outcome_side": "yes" if body["side"] == "bid" else "no",
            "book_side": body["side"],
            "side": "yes" if body["side"] == "bid" else "no",
            "action": "buy",
            "type": "limit",
            "status": "resting",
            "yes_price_dollars": format_price(price),
            "no_price_dollars": format_price(DOLLAR - price),
            "fill_count_fp": "0.00",
            "remaining_count_fp": format_size(parse_size(body["count"])),
            "initial_count_fp": format_size(parse_size(body["count"])),
            "taker_fill_cost_dollars": "0.000000",
            "maker_fill_cost_dollars": "0.000000",
            "taker_fees_dollars": "0.000000",
            "maker_fees_dollars": "0.000000",
            "created_time": "2026-12-02T05:00:00Z",
            "last_update_time": "2026-12-02T05:00:00Z",
            "self_trade_prevention_type": body["self_trade_prevention_type"],
            "exchange_index": 0,
        }
        return httpx.Response(
            201,
            json={
                "order_id": order_id,
                "client_order_id": client_order_id,
                "fill_count": "0.00",
                "remaining_count": format_size(parse_size(body["count"])),
                "ts_ms": 1767225600000 + len(self.orders),
            },
        )

    def placed(self) -> int:
        """Orders this account ever accepted."""
        return len(self.orders)
