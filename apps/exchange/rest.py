"""The few Kalshi REST endpoints the trader uses, answered from the simulator's state.

Plain Python (no Django, no I/O): ``route`` turns a GET path and query into (HTTP status, JSON body).
Shapes follow Kalshi's OpenAPI: fixed-point ``*_dollars`` price strings and ``*_fp`` count strings.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

from apps.exchange.market import SimMarket, price_ranges
from apps.kalshi.fixedpoint import DOLLAR, format_price, format_size
from apps.kalshi.messages import wire_levels

API_PREFIX = "/trade-api/v2"

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_DEPTH = 100

# The status filter's values differ from the status a market reports (kalshi-protocol.md §8).
STATUS_FILTER = {
    "unopened": frozenset({"initialized"}),
    "open": frozenset({"active"}),
    "paused": frozenset({"inactive"}),
    "closed": frozenset({"closed"}),
    "settled": frozenset({"determined", "finalized", "amended", "disputed"}),
}
MARKET_STATUSES = frozenset(
    {"initialized", "inactive", "active", "closed", "determined", "disputed", "amended", "finalized"}
)

Reply = tuple[int, dict[str, Any]]


def error_body(code: str, message: str, details: str = "") -> dict[str, Any]:
    """Kalshi's REST error envelope."""
    return {"error": {"code": code, "message": message, "details": details}}


TOO_MANY_REQUESTS: dict[str, Any] = {"error": "too many requests"}
"""A 429's body: unlike other errors, a bare string."""

_READ_ONLY_PATHS = ("/markets", "/exchange/status")


def route_write(method: str, path: str) -> Reply:
    """Answer a request that is not a GET under /trade-api/v2 (``path`` without query string).

    The legacy order mutations (create, cancel, amend, decrease, batch under ``/portfolio/orders``) get what
    Kalshi has been reported to send since June 2026: an error body naming the V2 endpoints, with a 2xx
    status and no order, so a client must not take a 2xx alone for success.
    """
    rest = path[len(API_PREFIX) :].rstrip("/")
    if rest == "/portfolio/orders" or rest.startswith("/portfolio/orders/"):
        return 200, error_body(
            "deprecated_v1_order_endpoint",
            "Please switch to the V2 endpoints",
            "https://docs.kalshi.com/api-reference/orders/create-order-v2",
        )
    if rest in _READ_ONLY_PATHS or rest.startswith("/markets/"):
        return 405, error_body("method_not_allowed", f"{method} is not allowed on {path}")
    return 404, error_body("not_found", "not found")


def _bad_request(message: str) -> Reply:
    return 400, error_body("bad_request", message)


def _single(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _int_param(query: Mapping[str, Sequence[str]], name: str, default: int, low: int, high: int) -> int:
    raw = _single(query, name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ValueError(f"{name} must be an integer between {low} and {high}")
    return int(raw)


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("invalid cursor") from None
    if not text.startswith("o:") or not text[2:].isdigit():
        raise ValueError("invalid cursor")
    return int(text[2:])


def market_body(market: SimMarket) -> dict[str, Any]:
    """One entry of GET /markets."""
    best_yes = market.best("yes")
    best_no = market.best("no")
    last = market.last_price if market.last_price is not None else 0
    return {
        "ticker": market.ticker,
        "event_ticker": market.event_ticker,
        "market_type": "binary",
        "status": market.status,
        "close_time": market.close_time,
        "volume_fp": format_size(market.volume),
        "volume_24h_fp": format_size(market.volume),
        "open_interest_fp": format_size(market.open_interest),
        "yes_bid_dollars": format_price(best_yes if best_yes is not None else 0),
        "yes_ask_dollars": format_price(DOLLAR - best_no if best_no is not None else DOLLAR),
        "no_bid_dollars": format_price(best_no if best_no is not None else 0),
        "no_ask_dollars": format_price(DOLLAR - best_yes if best_yes is not None else DOLLAR),
        "yes_bid_size_fp": format_size(market.yes[best_yes] if best_yes is not None else 0),
        "yes_ask_size_fp": format_size(market.no[best_no] if best_no is not None else 0),
        "last_price_dollars": format_price(last),
        "price_level_structure": market.structure,
        "price_ranges": price_ranges(market.structure),
        "fractional_trading_enabled": True,
    }


def list_markets(markets: Sequence[SimMarket], query: Mapping[str, Sequence[str]]) -> Reply:
    """GET /markets: filters, then cursor paging in the exchange's market order.

    ``limit=0`` is accepted and, like an absent limit, means the default page size of 100.
    """
    try:
        limit = _int_param(query, "limit", DEFAULT_LIMIT, 0, MAX_LIMIT) or DEFAULT_LIMIT
        cursor = _single(query, "cursor") or ""
        offset = decode_cursor(cursor) if cursor else 0
    except ValueError as exc:
        return _bad_request(str(exc))
    selected = list(markets)
    status = _single(query, "status")
    if status:
        if status not in STATUS_FILTER:
            return _bad_request(f"status must be one of {', '.join(STATUS_FILTER)}")
        selected = [m for m in selected if m.status in STATUS_FILTER[status]]
    tickers = _single(query, "tickers")
    if tickers:
        wanted = {t.strip() for t in tickers.split(",") if t.strip()}
        selected = [m for m in selected if m.ticker in wanted]
    event_ticker = _single(query, "event_ticker")
    if event_ticker:
        selected = [m for m in selected if m.event_ticker == event_ticker]
    series_ticker = _single(query, "series_ticker")
    if series_ticker:
        selected = [m for m in selected if m.series_ticker == series_ticker]
    mve_filter = _single(query, "mve_filter")
    if mve_filter:
        if mve_filter not in ("only", "exclude"):
            return _bad_request("mve_filter must be only or exclude")
        if mve_filter == "only":
            selected = []  # no simulated market is multivariate
    page = selected[offset : offset + limit]
    next_cursor = encode_cursor(offset + limit) if offset + limit < len(selected) else ""
    return 200, {"markets": [market_body(m) for m in page], "cursor": next_cursor}


def orderbook(market: SimMarket, query: Mapping[str, Sequence[str]]) -> Reply:
    """GET /markets/{ticker}/orderbook: the best ``depth`` bids per side (0 = all), in ascending price."""
    try:
        depth = _int_param(query, "depth", 0, 0, MAX_DEPTH)
    except ValueError as exc:
        return _bad_request(str(exc))
    sides: dict[str, list[list[str]]] = {}
    for side, levels in (("yes_dollars", market.yes), ("no_dollars", market.no)):
        best_first = sorted(levels.items(), reverse=True)
        if depth:
            best_first = best_first[:depth]
        sides[side] = wire_levels(reversed(best_first))
    return 200, {"orderbook_fp": sides}


def exchange_status(exchange_active: bool, trading_active: bool) -> Reply:
    return 200, {
        "exchange_active": exchange_active,
        "trading_active": trading_active,
        "exchange_estimated_resume_time": None,
    }


def route(
    path: str,
    query: Mapping[str, Sequence[str]],
    markets: Mapping[str, SimMarket],
    *,
    exchange_active: bool,
    trading_active: bool,
) -> Reply:
    """Answer a GET under /trade-api/v2 (``path`` without query string)."""
    if not path.startswith(API_PREFIX + "/"):
        return 404, error_body("not_found", "not found")
    rest = path[len(API_PREFIX) :].rstrip("/")
    if rest == "/markets":
        return list_markets(list(markets.values()), query)
    if rest == "/exchange/status":
        return exchange_status(exchange_active, trading_active)
    parts = rest.split("/")
    if len(parts) == 4 and parts[1] == "markets" and parts[3] == "orderbook":
        market = markets.get(unquote(parts[2]))
        if market is None:
            return 404, error_body("not_found", "market not found")
        return orderbook(market, query)
    if len(parts) == 3 and parts[1] == "markets":
        market = markets.get(unquote(parts[2]))
        if market is None:
            return 404, error_body("not_found", "market not found")
        return 200, {"market": market_body(market)}
    return 404, error_body("not_found", "not found")
