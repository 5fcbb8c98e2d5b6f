"""The V2 trading endpoints and private-channel messages: Kalshi's wire shapes around the desk.

Plain Python (no Django, no I/O): ``route`` turns an authenticated request under ``/portfolio`` into
(HTTP status, JSON body or None), ``cost`` says what it takes from the rate-limit buckets, and
``private_message`` renders a desk event as a ``fill``, ``user_order`` or ``market_position`` message.
Field names and number formats follow kalshi-trading.md: ``*_dollars`` strings (prices with 4 decimals,
money with 6), ``*_fp`` and V2 counts with 2 decimals.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from apps.exchange.accounts import AccountSettlement, Position, format_money
from apps.exchange.desk import KEEP, Desk, DeskEvent, FillUpdate, NewOrder, OrderUpdate
from apps.exchange.market import event_ticker_for
from apps.exchange.matching import BookFill, BookOrder, BookSide, MatchResult, OrderRejected
from apps.exchange.rest import decode_cursor, encode_cursor, error_body
from apps.kalshi.fixedpoint import DOLLAR, FixedPointError, format_price, format_size, parse_price, parse_size

ORDERS = "/portfolio/events/orders"
BATCHED = ORDERS + "/batched"

Body = dict[str, Any] | None
Reply = tuple[int, Body]
Bucket = Literal["read", "write"]

TIME_IN_FORCE = ("good_till_canceled", "immediate_or_cancel", "fill_or_kill")
SELF_TRADE_PREVENTION = ("taker_at_cross", "maker")
DEFAULT_COST = 10
CHEAP_COST = 2
"""Get-order, cancel and cancel-all cost 2 tokens (``GET /account/endpoint_costs``)."""
MAX_LIMIT = 1000


class BadRequest(Exception):
    """A request whose shape is wrong (400 ``bad_request``)."""


# ---------------------------------------------------------------------------------------------- formats


_USER_ID_NAMESPACE = uuid.UUID("0b7f2d0e-5c1a-4d8e-9a63-2f4e8c1d7b55")


def user_id_for(owner: str) -> str:
    """The ``user_id`` an account shows: stable per API key, but not the key id (a secret) itself."""
    return str(uuid.uuid5(_USER_ID_NAMESPACE, owner))


def rfc3339(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _legacy(side: BookSide) -> tuple[str, str]:
    """The deprecated (side, action) pair: a bid buys YES; an ask is reported as buying NO (kalshi-trading.md
    §12.4 leaves open which pair Kalshi itself reports for a V2 ask)."""
    return ("yes", "buy") if side == "bid" else ("no", "buy")


def _per_contract(total: int, count: int, unit: int) -> str:
    """``total`` (in 1/``unit`` dollar x 1/100 contract) per contract, in dollars to 6 decimals."""
    return str((Decimal(total) * 100 / count / unit).quantize(Decimal("0.000001"), ROUND_HALF_UP))


def order_body(order: BookOrder) -> dict[str, Any]:
    """Kalshi's Order object."""
    side, action = _legacy(order.side)
    return {
        "order_id": order.order_id,
        "user_id": user_id_for(order.owner),
        "client_order_id": order.client_order_id,
        "ticker": order.ticker,
        "outcome_side": order.outcome_side,
        "book_side": order.side,
        "side": side,
        "action": action,
        "type": "limit",
        "status": order.status,
        "yes_price_dollars": format_price(order.price),
        "no_price_dollars": format_price(DOLLAR - order.price),
        "fill_count_fp": format_size(order.fill_count),
        "remaining_count_fp": format_size(order.remaining_count),
        "initial_count_fp": format_size(order.initial_count),
        "taker_fill_cost_dollars": format_money(order.taker_fill_cost),
        "maker_fill_cost_dollars": format_money(order.maker_fill_cost),
        "taker_fees_dollars": format_money(order.taker_fees),
        "maker_fees_dollars": format_money(order.maker_fees),
        "expiration_time": rfc3339(order.expiration_time * 1_000_000) if order.expiration_time else None,
        "created_time": rfc3339(order.created_us),
        "last_update_time": rfc3339(order.last_update_us),
        "self_trade_prevention_type": order.self_trade_prevention,
        "order_group_id": None,
        "cancel_order_on_pause": False,
        "subaccount_number": 0,
        "exchange_index": 0,
    }


def fill_body(fill: BookFill) -> dict[str, Any]:
    """Kalshi's Fill object (REST): no client_order_id since 2026-03-30."""
    side, action = _legacy(fill.side)
    return {
        "fill_id": fill.trade_id,
        "trade_id": fill.trade_id,
        "exchange_index": 0,
        "order_id": fill.order_id,
        "ticker": fill.ticker,
        "market_ticker": fill.ticker,
        "outcome_side": "yes" if fill.side == "bid" else "no",
        "book_side": fill.side,
        "side": side,
        "action": action,
        "count_fp": format_size(fill.count),
        "yes_price_dollars": format_price(fill.price),
        "no_price_dollars": format_price(DOLLAR - fill.price),
        "is_taker": fill.is_taker,
        "fee_cost": format_money(fill.fee),
        "created_time": rfc3339(fill.ts_us),
        "ts": fill.ts_us // 1_000_000,
        "subaccount_number": 0,
    }


def position_body(ticker: str, held: Position) -> dict[str, Any]:
    """Kalshi's MarketPosition (REST)."""
    return {
        "ticker": ticker,
        "exchange_index": 0,
        "total_traded_dollars": format_money(held.traded),
        "position_fp": format_size(held.position),
        "market_exposure_dollars": format_money(held.cost),
        "realized_pnl_dollars": format_money(held.realized_pnl),
        "fees_paid_dollars": format_money(held.fees_paid),
        "last_updated_ts": rfc3339(held.last_updated_us),
    }


def settlement_body(settlement: AccountSettlement) -> dict[str, Any]:
    yes_cost = settlement.cost if settlement.yes_count else 0
    no_cost = settlement.cost if settlement.no_count else 0
    return {
        "ticker": settlement.ticker,
        "exchange_index": 0,
        "event_ticker": event_ticker_for(settlement.ticker),
        "market_result": settlement.result,
        "yes_count_fp": format_size(settlement.yes_count),
        "yes_total_cost_dollars": format_money(yes_cost),
        "no_count_fp": format_size(settlement.no_count),
        "no_total_cost_dollars": format_money(no_cost),
        "revenue": settlement.revenue // 10_000,  # whole cents: each winning contract pays 100
        "settled_time": rfc3339(settlement.settled_us),
        "fee_cost": format_money(settlement.fees),
        "value": 100 if settlement.result == "yes" else 0,
    }


def placement_body(placement: MatchResult) -> dict[str, Any]:
    """The small answer of create and amend: what filled on placement and what is left."""
    order = placement.order
    body: dict[str, Any] = {"order_id": order.order_id}
    if order.client_order_id:
        body["client_order_id"] = order.client_order_id
    mine = [f for f in placement.fills if f.order_id == order.order_id]
    filled = sum(f.count for f in mine)
    body["fill_count"] = format_size(filled)
    body["remaining_count"] = format_size(order.remaining_count)
    if filled:
        body["average_fill_price"] = _per_contract(sum(f.price * f.count for f in mine), filled, 10_000 * 100)
        body["average_fee_paid"] = _per_contract(sum(f.fee for f in mine), filled, 1_000_000)
    body["ts_ms"] = order.last_update_us // 1000
    return body


def private_message(event: DeskEvent, now_ms: int) -> tuple[str, str, str, str, dict[str, Any]]:
    """(channel, message type, owner, ticker, msg) of a desk event on the private channels (no ``seq``)."""
    if isinstance(event, OrderUpdate):
        order = event.order
        msg = order_body(order)
        for name in ("type", "action", "no_price_dollars", "cancel_order_on_pause"):
            del msg[name]
        msg["is_yes"] = order.side == "bid"
        msg["created_ts_ms"] = order.created_us // 1000
        msg["last_updated_ts_ms"] = order.last_update_us // 1000
        msg["expiration_ts_ms"] = order.expiration_time * 1000 if order.expiration_time else None
        msg["last_update_reason"] = order.last_update_reason or None
        msg["sending_ts_ms"] = now_ms
        return "user_orders", "user_order", order.owner, order.ticker, msg
    if isinstance(event, FillUpdate):
        fill = event.fill
        side, action = _legacy(fill.side)
        msg = {
            "trade_id": fill.trade_id,
            "order_id": fill.order_id,
            "client_order_id": event.client_order_id,
            "market_ticker": fill.ticker,
            "exchange_index": 0,
            "is_taker": fill.is_taker,
            "side": side,
            "action": action,
            "purchased_side": side,
            "outcome_side": "yes" if fill.side == "bid" else "no",
            "book_side": fill.side,
            "yes_price_dollars": format_price(fill.price),
            "count_fp": format_size(fill.count),
            "fee_cost": format_money(fill.fee),
            "post_position_fp": format_size(event.post_position),
            "ts": fill.ts_us // 1_000_000,
            "ts_ms": fill.ts_us // 1000,
            "subaccount": 0,
            "sending_ts_ms": now_ms,
        }
        return "fill", "fill", fill.owner, fill.ticker, msg
    held = event.position
    msg = {
        "user_id": user_id_for(event.owner),
        "market_ticker": event.ticker,
        "position_fp": format_size(held.position),
        "position_cost_dollars": format_money(held.cost),
        "realized_pnl_dollars": format_money(held.realized_pnl),
        "fees_paid_dollars": format_money(held.fees_paid),
        "position_fee_cost_dollars": format_money(held.fees_paid),
        "volume_fp": format_size(held.volume),
        "subaccount": 0,
        "sending_ts_ms": now_ms,
    }
    return "market_positions", "market_position", event.owner, event.ticker, msg


# ---------------------------------------------------------------------------------------------- requests


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not JSON") from None
    if not isinstance(parsed, dict):
        raise BadRequest("the body must be a JSON object")
    return parsed


def _field(raw: Mapping[str, Any], name: str, kind: type | tuple[type, ...], required: bool = False) -> Any:
    value = raw.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{name} is required")
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise BadRequest(f"{name} has the wrong type")
    return value


def _choice(raw: Mapping[str, Any], name: str, choices: Sequence[str]) -> Any:
    value = _field(raw, name, str, required=True)
    if value not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}")
    return value


def _price(raw: Mapping[str, Any]) -> int:
    try:
        return parse_price(_field(raw, "price", str, required=True))
    except FixedPointError as exc:
        raise OrderRejected("invalid_order", str(exc)) from None


def _count(raw: Mapping[str, Any], name: str = "count", required: bool = True) -> int | None:
    text = _field(raw, name, str, required=required)
    if text is None:
        return None
    try:
        count = parse_size(text)
    except FixedPointError as exc:
        raise OrderRejected("invalid_order_size", str(exc)) from None
    if name == "count" and count <= 0:
        raise OrderRejected("invalid_order_size", "count must be a positive multiple of 0.01")
    return count


def parse_new_order(raw: Mapping[str, Any]) -> NewOrder:
    """A CreateOrderV2Request body as a NewOrder; BadRequest or OrderRejected when it is wrong."""
    return NewOrder(
        ticker=_field(raw, "ticker", str, required=True),
        side=_choice(raw, "side", ("bid", "ask")),
        count=_count(raw) or 0,
        price=_price(raw),
        time_in_force=_choice(raw, "time_in_force", TIME_IN_FORCE),
        self_trade_prevention=_choice(raw, "self_trade_prevention_type", SELF_TRADE_PREVENTION),
        client_order_id=_field(raw, "client_order_id", str) or "",
        expiration_time=_field(raw, "expiration_time", int),
        post_only=bool(_field(raw, "post_only", bool)),
        reduce_only=bool(_field(raw, "reduce_only", bool)),
    )


def _rejected(exc: OrderRejected) -> Reply:
    return exc.status, error_body(exc.code, exc.message, exc.details)


def _item_error(exc: Exception) -> dict[str, Any]:
    """A batch item's ``error``: the inside of Kalshi's error envelope."""
    if isinstance(exc, OrderRejected):
        return {"code": exc.code, "message": exc.message, "details": exc.details}
    return {"code": "bad_request", "message": str(exc), "details": ""}


# ---------------------------------------------------------------------------------------------- routing


def cost(method: str, path: str, body: bytes) -> tuple[Bucket, int]:
    """Which bucket a request draws on and how many tokens (Kalshi's costs; a batch costs its items)."""
    if method == "GET":
        single = path.startswith("/portfolio/orders/") and path.count("/") == 3
        return "read", CHEAP_COST if single else DEFAULT_COST
    if path == BATCHED:
        try:
            items = len(_json_object(body).get("orders") or [])
        except (BadRequest, TypeError):
            items = 1
        return "write", max(1, items) * (DEFAULT_COST if method == "POST" else CHEAP_COST)
    if method == "DELETE":
        return "write", CHEAP_COST
    return "write", DEFAULT_COST


def is_create(method: str, path: str) -> bool:
    """A request that places orders (where the order faults apply)."""
    return method == "POST" and path in (ORDERS, BATCHED)


def route(desk: Desk, owner: str, method: str, path: str, query: Mapping[str, Sequence[str]], body: bytes) -> Reply:
    """Answer one request under /portfolio (``path`` without the API prefix and query) for ``owner``."""
    try:
        handler = _handler(method, path)
        if handler is None:
            return 404, error_body("not_found", "not found")
        return handler(desk, owner, path, query, body)
    except BadRequest as exc:
        return 400, error_body("bad_request", str(exc))
    except OrderRejected as exc:
        return _rejected(exc)


Handler = Callable[[Desk, str, str, Mapping[str, Sequence[str]], bytes], Reply]


def _handler(method: str, path: str) -> Handler | None:
    parts = path.split("/")  # "", "portfolio", ...
    if method == "GET":
        reads: dict[str, Handler] = {
            "/portfolio/orders": _list_orders,
            "/portfolio/positions": _positions,
            "/portfolio/fills": _fills,
            "/portfolio/balance": _balance,
            "/portfolio/settlements": _settlements,
        }
        if path in reads:
            return reads[path]
        return _get_order if len(parts) == 4 and parts[2] == "orders" else None
    if path == ORDERS:
        return {"POST": _create, "DELETE": _cancel_all}.get(method)
    if path == BATCHED:
        return {"POST": _batch_create, "DELETE": _batch_cancel}.get(method)
    if path.startswith(ORDERS + "/"):
        rest = parts[4:]
        if method == "DELETE" and len(rest) == 1:
            return _cancel
        if method == "POST" and len(rest) == 2 and rest[1] == "amend":
            return _amend
        if method == "POST" and len(rest) == 2 and rest[1] == "decrease":
            return _decrease
    return None


def _create(desk: Desk, owner: str, path: str, query: Mapping[str, Sequence[str]], body: bytes) -> Reply:
    return 201, placement_body(desk.create(owner, parse_new_order(_json_object(body))))


def _cancel_all(desk: Desk, owner: str, path: str, query: Mapping[str, Sequence[str]], body: bytes) -> Reply:
    desk.cancel_all(owner)
    return 204, None


def _cancel_body(order: BookOrder, reduced_by: int) -> dict[str, Any]:
    body: dict[str, Any] = {"order_id": order.order_id}
    if order.client_order_id:
        body["client_order_id"] = order.client_order_id
    body["reduced_by"] = format_size(reduced_by)
    body["ts_ms"] = order.last_update_us // 1000
    return body


def _cancel(desk: Desk, owner: str, path: str, query: Mapping[str, Sequence[str]], body: bytes) -> Reply:
    return 200, _cancel_body(*desk.cancel(owner, path.split("/")[4]))


def _amend(desk: Desk, owner: str, path: str, query: Mapping[str, Sequence[str]], body: bytes) -> Reply:
    raw = _json_object(body)
    expiration = raw.get("expiration_time", KEEP)
    if expiration != KEEP and (not isinstance(expiration, int) or isinstance(expiration, bool) or expiration < 0):
        raise BadRequest("expiration_time must be unix seconds (0 clears it)")
    placement = desk.amend(
        owner,
        path.split("/")[4],
        ticker=_field(raw, "ticker", str, required=True),
        side=_choice(raw, "side", ("bid", "ask")),
        price=_price(raw),
        count=_count(raw) or 0,
        client_order_id=_field(raw, "client_order_id", str),
        updated_client_order_id=_field(raw, "updated_client_order_id", str),
        expiration_time=expiration,
    )
    return 200, placement_body(placement)


def _decrease(desk: Desk, owner: str, path: str, query: Mapping[str, Sequence[str]], body: bytes) -> Reply:
    raw = _json_object(body)
    order = desk.decrease(
        owner,
        path.split("/")[4],
        reduce_by=_count(raw, "reduce_by", required=False),
        reduce_to=_count(raw, "reduce_to", required=False),
    )
    reply: dict[str, Any] = {"order_id": order.order_id}
    if order.client_order_id:
        reply["client_order_id"] = order.client_order_id
    reply["remaining_count"] = format_size(order.remaining_count)
    reply["ts_ms"] = order.last_update_us // 1000
    return 200, reply


def _batch_create(desk: Desk, owner: str, path: str, query: Mapping[str, Sequence[str]], body: bytes) -> Reply:
    items = _json_object(body).get("orders")
    if not isinstance(items, list) or not items:
        raise BadRequest("orders must be a non-empty list")
    results = []
    for item in items:
        try:
            if not isinstance(item, dict):
                raise BadRequest("each order must be an object")
            results.append(placement_body(desk.create(owner, parse_new_order(item))))
        except (BadRequest, OrderRejected) as exc:
            result: dict[str, Any] = {"order_id": "", "error": _item_error(exc)}
            if isinstance(item, dict) and isinstance(item.get("client_order_id"), str):
                result["client_order_id"] = item["client_order_id"]
            results.append(result)
    return 201, {"orders": results}


def _batch_cancel(desk: Desk, owner: str, path: str, query: Mapping[str, Sequence[str]], body: bytes) -> Reply:
    items = _json_object(body).get("orders")
    if not isinstance(items, list) or not items:
        raise BadRequest("orders must be a non-empty list")
    results = []
    for item in items:
        order_id = item.get("order_id") if isinstance(item, dict) else None
        try:
            if not isinstance(order_id, str):
                raise BadRequest("each cancel needs an order_id")
            results.append(_cancel_body(*desk.cancel(owner, order_id)))
        except (BadRequest, OrderRejected) as exc:
            results.append({"order_id": order_id or "", "reduced_by": format_size(0), "error": _item_error(exc)})
    return 200, {"orders": results}


# ---------------------------------------------------------------------------------------------- reads


def _one(query: Mapping[str, Sequence[str]], name: str) -> str:
    values = query.get(name)
    return values[-1] if values else ""


def _ts(query: Mapping[str, Sequence[str]], name: str) -> int | None:
    raw = _one(query, name)
    if not raw:
        return None
    if not raw.isdigit():
        raise BadRequest(f"{name} must be unix seconds")
    return int(raw)


def _page(items: list[dict[str, Any]], query: Mapping[str, Sequence[str]]) -> tuple[list[dict[str, Any]], str]:
    """Cursor paging over a list: (this page, the cursor of the next, "" on the last)."""
    raw_limit = _one(query, "limit")
    if raw_limit and (not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT):
        raise BadRequest(f"limit must be an integer between 1 and {MAX_LIMIT}")
    limit = int(raw_limit) if raw_limit else 100
    cursor = _one(query, "cursor")
    try:
        offset = decode_cursor(cursor) if cursor else 0
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    page = items[offset : offset + limit]
    return page, encode_cursor(offset + limit) if offset + limit < len(items) else ""


def _in_window(us: int, query: Mapping[str, Sequence[str]]) -> bool:
    low, high = _ts(query, "min_ts"), _ts(query, "max_ts")
    return (low is None or us >= low * 1_000_000) and (high is None or us <= high * 1_000_000)


def _list_orders(desk: Desk, owner: str, path: str, query: Mapping[str, Sequence[str]], body: bytes) -> Reply:
    ticker = _one(query, "ticker")
    events = {e for e in _one(query, "event_ticker").split(",") if e}
    status = _one(query, "status")
    if status and status not in ("resting", "canceled", "executed"):
        raise BadRequest("status must be resting, canceled or executed")
    selected = [
        order_body(o)
        for o in desk.orders(owner)
        if (not ticker or o.ticker == ticker)
        and (not events or event_ticker_for(o.ticker) in events)
        and (not status or o.status == status)
        and _in_window(o.created_us, query)
    ]
    page, cursor = _page(selected, query)
    return 200, {"orders": page, "cursor": cursor}


def _get_order(desk: Desk, owner: str, path: str, query: Mapping[str, Sequence[str]], body: bytes) -> Reply:
    return 200, {"order": order_body(desk.order(owner, path.split("/")[3]))}


def _positions(desk: Desk, owner: str, path: str, query: Mapping[str, Sequence[str]], body: bytes) -> Reply:
    ticker = _one(query, "ticker")
    event = _one(query, "event_ticker")
    filters = {f for f in _one(query, "count_filter").split(",") if f}
    if filters - {"position", "total_traded"}:
        raise BadRequest("count_filter takes position and total_traded")
    settlement = _one(query, "settlement_status") or "unsettled"
    if settlement not in ("unsettled", "settled", "all"):
        raise BadRequest("settlement_status must be unsettled, settled or all")
    markets: list[dict[str, Any]] = []
    events: dict[str, dict[str, int]] = {}
    for name, held in desk.account(owner).positions.items():
        market = desk.market(name)
        settled = market is not None and market.status == "finalized"
        if (settlement == "unsettled" and settled) or (settlement == "settled" and not settled):
            continue
        if (ticker and name != ticker) or (event and event_ticker_for(name) != event):
            continue
        if ("position" in filters and not held.position) or ("total_traded" in filters and not held.volume):
            continue
        if not held.position and not held.volume:
            continue
        markets.append(position_body(name, held))
        totals = events.setdefault(event_ticker_for(name), {"cost": 0, "shares": 0, "pnl": 0, "fees": 0})
        totals["cost"] += held.cost
        totals["shares"] += abs(held.position)
        totals["pnl"] += held.realized_pnl
        totals["fees"] += held.fees_paid
    page, cursor = _page(markets, query)
    event_positions = [
        {
            "event_ticker": name,
            "total_cost_dollars": format_money(t["cost"]),
            "total_cost_shares_fp": format_size(t["shares"]),
            "event_exposure_dollars": format_money(t["cost"]),
            "realized_pnl_dollars": format_money(t["pnl"]),
            "fees_paid_dollars": format_money(t["fees"]),
        }
        for name, t in events.items()
    ]
    return 200, {"market_positions": page, "event_positions": event_positions, "cursor": cursor}


def _fills(desk: Desk, owner: str, path: str, query: Mapping[str, Sequence[str]], body: bytes) -> Reply:
    tickers = {t for t in _one(query, "ticker").split(",") if t}
    if len(tickers) > 100:
        raise BadRequest("at most 100 tickers")
    order_id = _one(query, "order_id")
    selected = [
        fill_body(f)
        for f in desk.fills(owner)
        if (not tickers or f.ticker in tickers)
        and (not order_id or f.order_id == order_id)
        and _in_window(f.ts_us, query)
    ]
    page, cursor = _page(selected, query)
    return 200, {"fills": page, "cursor": cursor}


def _balance(desk: Desk, owner: str, path: str, query: Mapping[str, Sequence[str]], body: bytes) -> Reply:
    account = desk.account(owner)
    available = desk.available(owner)
    value = sum(held.cost for held in account.positions.values())
    return 200, {
        "balance": available // 10_000,  # cents, sub-cent amounts truncated
        "balance_dollars": format_money(available),
        "portfolio_value": value // 10_000,
        "updated_ts": max((h.last_updated_us for h in account.positions.values()), default=0) // 1_000_000,
        "balance_breakdown": [{"exchange_index": 0, "balance": format_money(available)}],
    }


def _settlements(desk: Desk, owner: str, path: str, query: Mapping[str, Sequence[str]], body: bytes) -> Reply:
    ticker = _one(query, "ticker")
    event = _one(query, "event_ticker")
    selected = [
        settlement_body(s)
        for s in reversed(desk.account(owner).settlements)
        if (not ticker or s.ticker == ticker)
        and (not event or event_ticker_for(s.ticker) == event)
        and _in_window(s.settled_us, query)
    ]
    page, cursor = _page(selected, query)
    return 200, {"settlements": page, "cursor": cursor}
