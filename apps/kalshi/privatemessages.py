"""Typed messages of Kalshi's private WebSocket channels ``fill``, ``user_orders`` and ``market_positions``.

Current field names only (kalshi-trading.md §7): ``*_dollars`` and ``*_fp`` strings, no integer cents or
counts, and no ``seq`` (these channels have none: what a lost message hides, only a REST reconcile can
repair). Deprecated mirrors (``side``, ``action``, ``is_yes``, ``purchased_side``, ``ts``...) are not read.
Prices are ints in 1/10,000 dollar, counts in 1/100 contract, money in micro-dollars.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from apps.kalshi.messages import MalformedMessage
from apps.kalshi.portfolio import BookSide, Fields, OutcomeSide

CHANNEL_FILL = "fill"
CHANNEL_USER_ORDERS = "user_orders"
CHANNEL_MARKET_POSITIONS = "market_positions"
PRIVATE_CHANNELS = (CHANNEL_FILL, CHANNEL_USER_ORDERS, CHANNEL_MARKET_POSITIONS)

UserOrderStatus = Literal["resting", "canceled", "executed", "unknown"]


@dataclass(frozen=True, slots=True)
class FillMessage:
    """One of the account's trades (``type: fill``). ``post_position`` is the signed position after it."""

    trade_id: str
    order_id: str
    market_ticker: str
    outcome_side: OutcomeSide
    book_side: BookSide
    yes_price: int
    count: int
    fee_cost: int
    is_taker: bool
    post_position: int
    ts_ms: int
    exchange_index: int
    client_order_id: str | None = None
    subaccount: int | None = None
    sid: int | None = None
    sending_ts_ms: int | None = None


@dataclass(frozen=True, slots=True)
class UserOrderMessage:
    """An order's whole current state (``type: user_order``), sent on every change to it."""

    order_id: str
    user_id: str
    ticker: str
    status: UserOrderStatus
    outcome_side: OutcomeSide
    book_side: BookSide
    yes_price: int
    fill_count: int
    remaining_count: int
    initial_count: int
    taker_fill_cost: int
    maker_fill_cost: int
    taker_fees: int
    maker_fees: int
    client_order_id: str
    created_ts_ms: int
    exchange_index: int
    last_update_reason: str | None = None
    last_updated_ts_ms: int | None = None
    expiration_ts_ms: int | None = None
    order_group_id: str | None = None
    self_trade_prevention_type: str | None = None
    subaccount_number: int | None = None
    sid: int | None = None
    sending_ts_ms: int | None = None


@dataclass(frozen=True, slots=True)
class MarketPositionMessage:
    """A market position's current state (``type: market_position``); ``position`` signed, + YES / - NO."""

    user_id: str
    market_ticker: str
    position: int
    position_cost: int
    """The current cost basis."""
    realized_pnl: int
    fees_paid: int
    position_fee_cost: int
    volume: int
    subaccount: int | None = None
    sid: int | None = None
    sending_ts_ms: int | None = None


PrivateMessage = FillMessage | UserOrderMessage | MarketPositionMessage
PRIVATE_TYPES = frozenset({"fill", "user_order", "market_position"})


def parse_private_frame(frame: dict[str, Any]) -> PrivateMessage | None:
    """The typed message of a decoded private-channel frame; None when the frame is of another type.

    MalformedMessage names the field when a private frame does not have the documented shape.
    """
    kind = frame.get("type")
    if kind not in PRIVATE_TYPES:
        return None
    try:
        sid = Fields(frame, kind).opt_integer("sid")
        f = Fields(frame.get("msg"), f"{kind}.msg")
        # Every message carries sending_ts_ms since 2026-10-01; where it sits is read leniently.
        sending = Fields(frame, kind).opt_integer("sending_ts_ms")
        sending = sending if sending is not None else f.opt_integer("sending_ts_ms")
        if kind == "fill":
            return FillMessage(
                trade_id=f.text("trade_id"),
                order_id=f.text("order_id"),
                market_ticker=f.text("market_ticker"),
                outcome_side=f.choice("outcome_side", OutcomeSide),
                book_side=f.choice("book_side", BookSide),
                yes_price=f.price("yes_price_dollars"),
                count=f.count("count_fp"),
                fee_cost=f.money("fee_cost"),
                is_taker=f.flag("is_taker"),
                post_position=f.count("post_position_fp"),
                ts_ms=f.integer("ts_ms"),
                exchange_index=f.integer("exchange_index"),
                client_order_id=f.opt_text("client_order_id"),
                subaccount=f.opt_integer("subaccount"),
                sid=sid,
                sending_ts_ms=sending,
            )
        if kind == "user_order":
            return UserOrderMessage(
                order_id=f.text("order_id"),
                user_id=f.text("user_id"),
                ticker=f.text("ticker"),
                status=f.choice("status", UserOrderStatus),
                outcome_side=f.choice("outcome_side", OutcomeSide),
                book_side=f.choice("book_side", BookSide),
                yes_price=f.price("yes_price_dollars"),
                fill_count=f.count("fill_count_fp"),
                remaining_count=f.count("remaining_count_fp"),
                initial_count=f.count("initial_count_fp"),
                taker_fill_cost=f.money("taker_fill_cost_dollars"),
                maker_fill_cost=f.money("maker_fill_cost_dollars"),
                taker_fees=f.money("taker_fees_dollars"),
                maker_fees=f.money("maker_fees_dollars"),
                client_order_id=f.text("client_order_id"),
                created_ts_ms=f.integer("created_ts_ms"),
                exchange_index=f.integer("exchange_index"),
                last_update_reason=f.opt_text("last_update_reason"),
                last_updated_ts_ms=f.opt_integer("last_updated_ts_ms"),
                expiration_ts_ms=f.opt_integer("expiration_ts_ms"),
                order_group_id=f.opt_text("order_group_id"),
                self_trade_prevention_type=f.opt_text("self_trade_prevention_type"),
                subaccount_number=f.opt_integer("subaccount_number"),
                sid=sid,
                sending_ts_ms=sending,
            )
        return MarketPositionMessage(
            user_id=f.text("user_id"),
            market_ticker=f.text("market_ticker"),
            position=f.count("position_fp"),
            position_cost=f.money("position_cost_dollars"),
            realized_pnl=f.money("realized_pnl_dollars"),
            fees_paid=f.money("fees_paid_dollars"),
            position_fee_cost=f.money("position_fee_cost_dollars"),
            volume=f.count("volume_fp"),
            subaccount=f.opt_integer("subaccount"),
            sid=sid,
            sending_ts_ms=sending,
        )
    except ValueError as exc:
        raise MalformedMessage(str(exc)) from None


def subscribe_private_command(command_id: int, market_tickers: list[str] | None = None) -> dict[str, Any]:
    """Subscribe to the three private channels: every market of the account unless ``market_tickers``."""
    params: dict[str, Any] = {"channels": list(PRIVATE_CHANNELS)}
    if market_tickers:
        params["market_tickers"] = list(market_tickers)
    return {"id": command_id, "cmd": "subscribe", "params": params}
