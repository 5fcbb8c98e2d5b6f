"""Typed Kalshi WebSocket v2 messages: parsing server frames, building commands and server frames.

Parsing works from the current fixed-point schema (``*_dollars`` / ``*_fp`` strings). The integer-cent
fields removed on 2026-03-12 are accepted only as a fallback, so old recordings still load.
Both the client and the built-in exchange use this module, so the wire shape is defined once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec

from apps.kalshi.fixedpoint import (
    FixedPointError,
    format_price,
    format_size,
    parse_price,
    parse_size,
    price_field,
    price_from_cents,
    size_field,
    size_from_contracts,
)

Side = Literal["yes", "no"]
Level = tuple[int, int]
"""(price in 1/10,000 dollar, size in 1/100 contract)."""

CHANNEL_ORDERBOOK = "orderbook_delta"
CHANNELS = (
    "orderbook_delta",
    "ticker",
    "trade",
    "fill",
    "market_positions",
    "market_lifecycle_v2",
    "multivariate_market_lifecycle",
    "communications",
    "order_group_updates",
    "user_orders",
    "cfbenchmarks_value",
    "cfbenchmarks_value_5hz",
    "pyth_value",
)

# Error codes (kalshi-protocol.md §4). 10 and 25 end the subscription: the client must resubscribe.
ERROR_UNABLE_TO_PROCESS = 1
ERROR_PARAMS_REQUIRED = 2
ERROR_CHANNELS_REQUIRED = 3
ERROR_SIDS_REQUIRED = 4
ERROR_UNKNOWN_COMMAND = 5
ERROR_UNKNOWN_SID = 7
ERROR_UNKNOWN_CHANNEL = 8
ERROR_AUTH_REQUIRED = 9
ERROR_CHANNEL = 10
ERROR_INVALID_PARAMETER = 11
ERROR_EXACTLY_ONE_SID = 12
ERROR_UNSUPPORTED_ACTION = 13
ERROR_MARKET_TICKER_REQUIRED = 14
ERROR_ACTION_REQUIRED = 15
ERROR_BUFFER_OVERFLOW = 25
TERMINAL_ERROR_CODES = frozenset({ERROR_CHANNEL, ERROR_BUFFER_OVERFLOW})

ERROR_TEXT = {
    1: "Unable to process message",
    2: "Params required",
    3: "Channels required",
    4: "Subscription IDs required",
    5: "Unknown command",
    7: "Unknown subscription ID",
    8: "Unknown channel name",
    9: "Authentication required",
    10: "Channel error",
    11: "Invalid parameter",
    12: "Exactly one subscription ID is required",
    13: "Unsupported action",
    14: "Market Ticker required",
    15: "Action required",
    18: "Command timeout",
    25: "Subscription buffer overflow",
    26: "Subscription market limit exceeded",
    27: "Too many requests",
}


class MalformedMessage(ValueError):
    """A frame that is not a valid Kalshi message. The text says what is wrong with it."""


# ---------------------------------------------------------------------------------------------- messages


@dataclass(slots=True)
class OrderbookSnapshot:
    sid: int
    seq: int
    market_ticker: str
    market_id: str
    yes: list[Level]
    no: list[Level]
    id: int | None = None
    type: Literal["orderbook_snapshot"] = "orderbook_snapshot"


@dataclass(slots=True)
class OrderbookDelta:
    sid: int
    seq: int
    market_ticker: str
    market_id: str
    price: int
    delta: int
    side: Side
    ts_ms: int | None = None
    client_order_id: str | None = None
    type: Literal["orderbook_delta"] = "orderbook_delta"


@dataclass(slots=True)
class Subscribed:
    id: int | None
    channel: str
    sid: int
    type: Literal["subscribed"] = "subscribed"


@dataclass(slots=True)
class SubscriptionInfo:
    channel: str
    sid: int


@dataclass(slots=True)
class Ok:
    id: int | None
    sid: int | None = None
    seq: int | None = None
    market_tickers: list[str] | None = None
    subscriptions: list[SubscriptionInfo] | None = None
    """Set when this is the reply to list_subscriptions (``msg`` is a list)."""
    type: Literal["ok"] = "ok"


@dataclass(slots=True)
class Unsubscribed:
    id: int | None
    sid: int
    seq: int
    type: Literal["unsubscribed"] = "unsubscribed"


@dataclass(slots=True)
class ErrorReply:
    id: int | None
    code: int
    msg: str
    sid: int | None = None
    seq: int | None = None
    market_tickers: list[str] = field(default_factory=list)
    type: Literal["error"] = "error"

    @property
    def terminal(self) -> bool:
        return self.code in TERMINAL_ERROR_CODES


@dataclass(slots=True)
class OtherMessage:
    """A well-formed message of a type this client does not act on (ticker, trade, ...)."""

    type: str
    sid: int | None
    seq: int | None
    raw: dict[str, Any]


ServerMessage = OrderbookSnapshot | OrderbookDelta | Subscribed | Ok | Unsubscribed | ErrorReply | OtherMessage


# ---------------------------------------------------------------------------------------------- parsing


def _int(obj: dict[str, Any], key: str, *, required: bool = True, minimum: int = 0) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise MalformedMessage(f"missing {key!r}")
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise MalformedMessage(f"{key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _str(obj: dict[str, Any], key: str, *, required: bool = True) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise MalformedMessage(f"missing {key!r}")
        return None
    if not isinstance(value, str):
        raise MalformedMessage(f"{key!r} must be a string, got {value!r}")
    return value


def _msg(frame: dict[str, Any]) -> dict[str, Any]:
    msg = frame.get("msg")
    if not isinstance(msg, dict):
        raise MalformedMessage("'msg' must be an object")
    return msg


def _levels(msg: dict[str, Any], key: str, legacy_key: str) -> list[Level]:
    raw = msg.get(key)
    if raw is None:
        legacy = msg.get(legacy_key)
        if legacy is None:
            return []  # Kalshi omits a side with no resting orders.
        return _legacy_levels(legacy, legacy_key)
    if not isinstance(raw, list):
        raise MalformedMessage(f"{key!r} must be a list of [price, size] pairs")
    levels: list[Level] = []
    for pair in raw:
        if not isinstance(pair, list) or len(pair) != 2:
            raise MalformedMessage(f"{key!r} entries must be [price, size] pairs, got {pair!r}")
        price = pair[0]
        try:
            # Snapshots repeat the same few price strings: their parsed values are shared, not rebuilt.
            units = _PRICES.get(price) if type(price) is str else None
            if units is None:
                units = parse_price(price)
                _remember(_PRICES, price, units)
            levels.append((units, parse_size(pair[1])))
        except FixedPointError as exc:
            raise MalformedMessage(f"{key!r}: {exc}") from exc
    return levels


def _legacy_levels(raw: Any, key: str) -> list[Level]:
    if not isinstance(raw, list):
        raise MalformedMessage(f"{key!r} must be a list of [cents, count] pairs")
    levels: list[Level] = []
    for pair in raw:
        if isinstance(pair, list) and len(pair) == 2:
            with contextlib.suppress(FixedPointError):
                levels.append((price_from_cents(pair[0]), size_from_contracts(pair[1])))
                continue
        raise MalformedMessage(f"{key!r} entries must be [cents, count] integer pairs, got {pair!r}")
    return levels


def _parse_snapshot(frame: dict[str, Any]) -> OrderbookSnapshot:
    msg = _msg(frame)
    return OrderbookSnapshot(
        sid=_int(frame, "sid", minimum=1),
        seq=_int(frame, "seq", minimum=1),
        market_ticker=_str(msg, "market_ticker"),
        market_id=_str(msg, "market_id", required=False) or "",
        yes=_levels(msg, "yes_dollars_fp", "yes"),
        no=_levels(msg, "no_dollars_fp", "no"),
        id=_int(frame, "id", required=False),
    )


def _parse_delta(frame: dict[str, Any]) -> OrderbookDelta:
    msg = _msg(frame)
    side = msg.get("side")
    if side not in ("yes", "no"):
        raise MalformedMessage(f"'side' must be 'yes' or 'no', got {side!r}")
    try:
        price = price_field(msg, "price_dollars", "price")
        delta = size_field(msg, "delta_fp", "delta")
    except FixedPointError as exc:
        raise MalformedMessage(str(exc)) from exc
    if price is None:
        raise MalformedMessage("missing 'price_dollars'")
    if delta is None:
        raise MalformedMessage("missing 'delta_fp'")
    return OrderbookDelta(
        sid=_int(frame, "sid", minimum=1),
        seq=_int(frame, "seq", minimum=1),
        market_ticker=_str(msg, "market_ticker"),
        market_id=_str(msg, "market_id", required=False) or "",
        price=price,
        delta=delta,
        side=side,
        ts_ms=_int(msg, "ts_ms", required=False),
        client_order_id=_str(msg, "client_order_id", required=False),
    )


def _parse_ok(frame: dict[str, Any]) -> Ok:
    msg = frame.get("msg")
    reply = Ok(
        id=_int(frame, "id", required=False),
        sid=_int(frame, "sid", required=False),
        seq=_int(frame, "seq", required=False),
    )
    if isinstance(msg, list):
        subscriptions = []
        for item in msg:
            if not isinstance(item, dict):
                raise MalformedMessage("list_subscriptions entries must be objects")
            subscriptions.append(SubscriptionInfo(channel=_str(item, "channel"), sid=_int(item, "sid", minimum=1)))
        reply.subscriptions = subscriptions
    elif isinstance(msg, dict):
        tickers = msg.get("market_tickers")
        if tickers is not None:
            if not isinstance(tickers, list) or not all(isinstance(t, str) for t in tickers):
                raise MalformedMessage("'market_tickers' must be a list of strings")
            reply.market_tickers = tickers
    elif msg is not None:
        raise MalformedMessage("'msg' of an ok reply must be an object or a list")
    return reply


def _parse_error(frame: dict[str, Any]) -> ErrorReply:
    msg = _msg(frame)
    tickers = msg.get("market_tickers") or ([msg["market_ticker"]] if isinstance(msg.get("market_ticker"), str) else [])
    return ErrorReply(
        id=_int(frame, "id", required=False),
        code=_int(msg, "code"),
        msg=_str(msg, "msg"),
        sid=_int(frame, "sid", required=False),
        seq=_int(frame, "seq", required=False),
        market_tickers=[t for t in tickers if isinstance(t, str)],
    )


def parse_frame(frame: dict[str, Any]) -> ServerMessage:
    """Turn a decoded JSON object into a typed message, or raise MalformedMessage saying why."""
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise MalformedMessage("missing 'type'")
    try:
        if kind == "orderbook_delta":
            return _parse_delta(frame)
        if kind == "orderbook_snapshot":
            return _parse_snapshot(frame)
        if kind == "subscribed":
            msg = _msg(frame)
            return Subscribed(
                id=_int(frame, "id", required=False),
                channel=_str(msg, "channel"),
                sid=_int(msg, "sid", minimum=1),
            )
        if kind == "ok":
            return _parse_ok(frame)
        if kind == "unsubscribed":
            return Unsubscribed(
                id=_int(frame, "id", required=False),
                sid=_int(frame, "sid", minimum=1),
                seq=_int(frame, "seq", minimum=1),
            )
        if kind == "error":
            return _parse_error(frame)
    except MalformedMessage as exc:
        raise MalformedMessage(f"{kind}: {exc}") from None
    return OtherMessage(
        type=kind, sid=_int(frame, "sid", required=False), seq=_int(frame, "seq", required=False), raw=frame
    )


class _DeltaFields(msgspec.Struct):
    """The ``msg`` of a current-schema ``orderbook_delta``, as the typed decoder reads it."""

    market_ticker: str
    price_dollars: str
    delta_fp: str
    side: Side
    market_id: str | None = None
    ts_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    client_order_id: str | None = None


class _DeltaFrame(msgspec.Struct, tag_field="type", tag="orderbook_delta"):
    """A current-schema ``orderbook_delta`` frame: what nearly every frame is."""

    sid: Annotated[int, msgspec.Meta(ge=1)]
    seq: Annotated[int, msgspec.Meta(ge=1)]
    msg: _DeltaFields


class _SnapshotFields(msgspec.Struct):
    """The ``msg`` of an ``orderbook_snapshot``, as the typed decoder reads it."""

    market_ticker: str
    market_id: str | None = None
    yes_dollars_fp: list[tuple[str, str]] | None = None
    no_dollars_fp: list[tuple[str, str]] | None = None
    yes: Any = None
    """The pre-2026 integer-cent side: when it is the only one, the frame is parsed field by field."""
    no: Any = None


class _SnapshotFrame(msgspec.Struct, tag_field="type", tag="orderbook_snapshot"):
    sid: Annotated[int, msgspec.Meta(ge=1)]
    seq: Annotated[int, msgspec.Meta(ge=1)]
    msg: _SnapshotFields
    id: Annotated[int, msgspec.Meta(ge=0)] | None = None


_decode_book_frame = msgspec.json.Decoder(_DeltaFrame | _SnapshotFrame).decode
JSON_LIBRARY = "msgspec"
decode_json = msgspec.json.Decoder().decode
"""The plain decoder (JSON into Python objects) for every frame that is not a current-schema book message."""


def _fast_book_message(data: str | bytes) -> OrderbookDelta | OrderbookSnapshot | None:
    """The current-schema ``orderbook_delta`` (nearly every frame) or ``orderbook_snapshot``, decoded straight
    into typed fields.

    None when the frame is anything else or anything is unusual (another type, legacy fields only, a wrong
    type, a missing key, not JSON): ``parse_frame`` then parses it field by field and says what is wrong.
    Accepts only what ``_parse_delta`` and ``_parse_snapshot`` accept.
    """
    try:
        frame = _decode_book_frame(data)
    except msgspec.DecodeError:  # ValidationError included
        return None
    try:
        if isinstance(frame, _DeltaFrame):
            msg = frame.msg
            return OrderbookDelta(
                frame.sid,
                frame.seq,
                msg.market_ticker,
                msg.market_id or "",
                _price(msg.price_dollars),
                parse_size(msg.delta_fp),
                msg.side,
                msg.ts_ms,
                msg.client_order_id,
            )
        fields = frame.msg
        yes, no = fields.yes_dollars_fp, fields.no_dollars_fp
        if (yes is None and fields.yes is not None) or (no is None and fields.no is not None):
            return None
        return OrderbookSnapshot(
            frame.sid,
            frame.seq,
            fields.market_ticker,
            fields.market_id or "",
            [(_price(price), parse_size(size)) for price, size in yes or ()],
            [(_price(price), parse_size(size)) for price, size in no or ()],
            frame.id,
        )
    except FixedPointError:
        return None


def _price(text: str) -> int:
    price = _PRICES.get(text)
    return price if price is not None else _remember(_PRICES, text, parse_price(text))


# A book's prices are a few hundred strings that come again and again: their parsed values are kept (up to a
# bound). Sizes are not: they take tens of thousands of values, and a table that large, looked up once per
# delta, cost more than parsing the string (benchtrader, 10 markets on PostgreSQL, six rounds: 10.5 us of CPU a
# message on average with a 65,536-entry table of sizes, 10.05 us without, and 6 MB less resident).
_PRICES: dict[str, int] = {}
_REMEMBERED_AT_MOST = 65_536


def _remember(parsed: dict[str, int], text: str, units: int) -> int:
    if len(parsed) < _REMEMBERED_AT_MOST:
        parsed[text] = units
    return units


def parse_message(data: str | bytes) -> ServerMessage:
    """Parse one WebSocket frame: UTF-8 JSON, as bytes (cheapest: no decoding to str first) or str.

    msgspec decodes a delta or snapshot frame straight into typed fields, without building a dict first:
    0.44 us against orjson's 0.64 us for a delta's dict alone, 1.5 us against 2.1 us for the whole delta.
    Any other frame is decoded into plain objects and parsed field by field. Both read integers exactly and
    reject what is not strict JSON (NaN, invalid UTF-8) as malformed.
    """
    message = _fast_book_message(data)
    if message is not None:
        return message
    try:
        frame = decode_json(data)
    except msgspec.DecodeError as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if type(frame) is not dict:
        raise MalformedMessage("a message must be a JSON object")
    return parse_frame(frame)


# ---------------------------------------------------------------------------------------------- commands


def subscribe_command(
    command_id: int, market_tickers: list[str], channels: tuple[str, ...] = (CHANNEL_ORDERBOOK,)
) -> dict[str, Any]:
    return {
        "id": command_id,
        "cmd": "subscribe",
        "params": {"channels": list(channels), "market_tickers": list(market_tickers)},
    }


def unsubscribe_command(command_id: int, sids: list[int]) -> dict[str, Any]:
    return {"id": command_id, "cmd": "unsubscribe", "params": {"sids": list(sids)}}


def update_subscription_command(command_id: int, sid: int, action: str, market_tickers: list[str]) -> dict[str, Any]:
    return {
        "id": command_id,
        "cmd": "update_subscription",
        "params": {"sids": [sid], "market_tickers": list(market_tickers), "action": action},
    }


# ---------------------------------------------------------------------------------------------- server frames


def wire_levels(levels: Iterable[Level]) -> list[list[str]]:
    """Levels as Kalshi writes them: [["0.4200", "12.50"], ...], in the order given."""
    return [[format_price(price), format_size(size)] for price, size in levels]


def snapshot_frame(snapshot: OrderbookSnapshot) -> dict[str, Any]:
    msg: dict[str, Any] = {"market_ticker": snapshot.market_ticker, "market_id": snapshot.market_id}
    if snapshot.yes:
        msg["yes_dollars_fp"] = wire_levels(snapshot.yes)
    if snapshot.no:
        msg["no_dollars_fp"] = wire_levels(snapshot.no)
    frame: dict[str, Any] = {
        "type": "orderbook_snapshot",
        "sid": snapshot.sid,
        "seq": snapshot.seq,
        "msg": msg,
    }
    if snapshot.id is not None:
        frame["id"] = snapshot.id
    return frame


def delta_frame(delta: OrderbookDelta) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "market_ticker": delta.market_ticker,
        "market_id": delta.market_id,
        "price_dollars": format_price(delta.price),
        "delta_fp": format_size(delta.delta),
        "side": delta.side,
    }
    if delta.ts_ms is not None:
        msg["ts_ms"] = delta.ts_ms
    return {"type": "orderbook_delta", "sid": delta.sid, "seq": delta.seq, "msg": msg}


def subscribed_frame(command_id: int | None, channel: str, sid: int) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "subscribed", "msg": {"channel": channel, "sid": sid}}
    if command_id:
        frame["id"] = command_id
    return frame


def error_frame(
    command_id: int | None,
    code: int,
    *,
    sid: int | None = None,
    seq: int | None = None,
    market_tickers: list[str] | None = None,
) -> dict[str, Any]:
    msg: dict[str, Any] = {"code": code, "msg": ERROR_TEXT.get(code, "Error")}
    if market_tickers:
        msg["market_tickers"] = market_tickers
    frame: dict[str, Any] = {"type": "error", "msg": msg}
    if command_id:
        frame["id"] = command_id
    if sid is not None:
        frame["sid"] = sid
    if seq is not None:
        frame["seq"] = seq
    return frame


def ok_frame(
    command_id: int | None,
    *,
    sid: int | None = None,
    seq: int | None = None,
    market_tickers: list[str] | None = None,
) -> dict[str, Any]:
    """An ``ok`` reply, e.g. to update_subscription: msg.market_tickers is the full set after the update."""
    frame: dict[str, Any] = {"type": "ok"}
    if command_id:
        frame["id"] = command_id
    if sid is not None:
        frame["sid"] = sid
    if seq is not None:
        frame["seq"] = seq
    if market_tickers is not None:
        frame["msg"] = {"market_tickers": market_tickers}
    return frame


def list_subscriptions_frame(command_id: int | None, subscriptions: list[SubscriptionInfo]) -> dict[str, Any]:
    """The list_subscriptions reply: an ``ok`` whose msg is a list of {channel, sid}."""
    listed = [{"channel": s.channel, "sid": s.sid} for s in subscriptions]
    frame: dict[str, Any] = {"type": "ok", "msg": listed}
    if command_id:
        frame["id"] = command_id
    return frame


def unsubscribed_frame(command_id: int | None, sid: int, seq: int) -> dict[str, Any]:
    """One ``unsubscribed`` reply per sid; it has sid and seq but no msg."""
    frame: dict[str, Any] = {"type": "unsubscribed", "sid": sid, "seq": seq}
    if command_id:
        frame["id"] = command_id
    return frame
