"""Typed V2 order requests and portfolio results (orders, positions, fills, balance, settlements), in exact units.

Shapes follow ``kalshi-trading.md`` §4. Prices are ints in 1/10,000 dollar (YES prices: V2 has one YES book),
counts ints in 1/100 contract, money ints in micro-dollars (``apps.kalshi.fixedpoint``). Parsing raises
ValueError naming the field; the trading client turns that into MalformedResponse with the request's path.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar, get_args

from apps.kalshi.fixedpoint import (
    DOLLAR,
    FixedPointError,
    format_price,
    format_size,
    money_from_cents,
    parse_money,
    parse_price,
    parse_size,
    price_from_cents,
)

BookSide = Literal["bid", "ask"]
"""``bid`` buys YES at the price; ``ask`` sells YES at it (the same as buying NO at 1 - price)."""
OutcomeSide = Literal["yes", "no"]
TimeInForce = Literal["good_till_canceled", "immediate_or_cancel", "fill_or_kill"]
SelfTradePrevention = Literal["taker_at_cross", "maker"]
OrderStatus = Literal["resting", "canceled", "executed"]

T = TypeVar("T")


def new_client_order_id() -> str:
    """A fresh client order id: the key that makes a retried create land once."""
    return str(uuid.uuid4())


# ---------------------------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """POST /portfolio/events/orders. ``count`` in 1/100 contract, ``price`` the YES price in 1/10,000 dollar.

    ``client_order_id`` is generated here, so the same request sent again (after a timeout or a 5xx) is the
    same order to Kalshi, and a strategy knows the id before the answer comes.
    """

    ticker: str
    side: BookSide
    count: int
    price: int
    time_in_force: TimeInForce = "good_till_canceled"
    self_trade_prevention_type: SelfTradePrevention = "taker_at_cross"
    client_order_id: str = field(default_factory=new_client_order_id)
    expiration_time: int | None = None
    """Unix seconds; GTC only."""
    post_only: bool = False
    reduce_only: bool = False
    cancel_order_on_pause: bool = False
    subaccount: int | None = None
    order_group_id: str | None = None
    exchange_index: int | None = None

    def __post_init__(self) -> None:
        if not self.ticker:
            raise ValueError("ticker must not be empty")
        _check_choice("side", self.side, BookSide)
        _check_choice("time_in_force", self.time_in_force, TimeInForce)
        _check_choice("self_trade_prevention_type", self.self_trade_prevention_type, SelfTradePrevention)
        _check_count("count", self.count)
        _check_price("price", self.price)
        if not self.client_order_id:
            raise ValueError("client_order_id must not be empty")

    @classmethod
    def buy_yes(cls, ticker: str, count: int, price: int, **options: Any) -> OrderRequest:
        return cls(ticker, "bid", count, price, **options)

    @classmethod
    def sell_yes(cls, ticker: str, count: int, price: int, **options: Any) -> OrderRequest:
        return cls(ticker, "ask", count, price, **options)

    @classmethod
    def buy_no(cls, ticker: str, count: int, no_price: int, **options: Any) -> OrderRequest:
        """Buying NO at q is asking YES at 1 - q."""
        return cls(ticker, "ask", count, DOLLAR - no_price, **options)

    @classmethod
    def sell_no(cls, ticker: str, count: int, no_price: int, **options: Any) -> OrderRequest:
        """Selling NO at q is bidding YES at 1 - q."""
        return cls(ticker, "bid", count, DOLLAR - no_price, **options)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ticker": self.ticker,
            "side": self.side,
            "count": format_size(self.count),
            "price": format_price(self.price),
            "time_in_force": self.time_in_force,
            "self_trade_prevention_type": self.self_trade_prevention_type,
            "client_order_id": self.client_order_id,
        }
        for name in ("post_only", "reduce_only", "cancel_order_on_pause"):
            if getattr(self, name):
                body[name] = True
        for name in ("expiration_time", "subaccount", "order_group_id", "exchange_index"):
            if (value := getattr(self, name)) is not None:
                body[name] = value
        return body


@dataclass(frozen=True, slots=True)
class AmendRequest:
    """POST /portfolio/events/orders/{id}/amend. ``count`` is the new TOTAL (filled plus wanted remaining),
    so sending the same amend twice asks for the same end state."""

    order_id: str
    ticker: str
    side: BookSide
    price: int
    count: int
    client_order_id: str | None = None
    updated_client_order_id: str | None = None
    expiration_time: int | None = None
    """Omit to keep, 0 to clear."""
    subaccount: int | None = None
    exchange_index: int | None = None

    def __post_init__(self) -> None:
        _check_order_id(self.order_id)
        _check_choice("side", self.side, BookSide)
        _check_count("count", self.count)
        _check_price("price", self.price)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ticker": self.ticker,
            "side": self.side,
            "price": format_price(self.price),
            "count": format_size(self.count),
        }
        for name in ("client_order_id", "updated_client_order_id", "expiration_time", "exchange_index"):
            if (value := getattr(self, name)) is not None:
                body[name] = value
        return body


@dataclass(frozen=True, slots=True)
class DecreaseRequest:
    """POST /portfolio/events/orders/{id}/decrease: exactly one of ``reduce_by`` / ``reduce_to`` (1/100 contract)."""

    order_id: str
    reduce_by: int | None = None
    reduce_to: int | None = None
    market_ticker: str | None = None
    exchange_index: int | None = None

    def __post_init__(self) -> None:
        _check_order_id(self.order_id)
        if (self.reduce_by is None) == (self.reduce_to is None):
            raise ValueError("give exactly one of reduce_by and reduce_to")
        if self.reduce_by is not None:
            _check_count("reduce_by", self.reduce_by)
        if self.reduce_to is not None and self.reduce_to < 0:
            raise ValueError("reduce_to must not be negative")

    @property
    def idempotent(self) -> bool:
        """``reduce_to`` names an end state; ``reduce_by`` twice takes off twice as much."""
        return self.reduce_to is not None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.reduce_by is not None:
            body["reduce_by"] = format_size(self.reduce_by)
        if self.reduce_to is not None:
            body["reduce_to"] = format_size(self.reduce_to)
        if self.market_ticker is not None:
            body["market_ticker"] = self.market_ticker
        if self.exchange_index is not None:
            body["exchange_index"] = self.exchange_index
        return body


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """One order of a batch cancel (DELETE /portfolio/events/orders/batched)."""

    order_id: str
    market_ticker: str | None = None
    subaccount: int | None = None
    exchange_index: int | None = None

    def __post_init__(self) -> None:
        _check_order_id(self.order_id)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"order_id": self.order_id}
        for name in ("market_ticker", "subaccount", "exchange_index"):
            if (value := getattr(self, name)) is not None:
                body[name] = value
        return body


def _check_choice(name: str, value: object, choices: Any) -> None:
    allowed = get_args(choices)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _check_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int of 1/100 contract; got {value!r}")


def _check_price(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < DOLLAR:
        raise ValueError(f"{name} must be an int of 1/10,000 dollar strictly between 0 and {DOLLAR}; got {value!r}")


def _check_order_id(order_id: str) -> None:
    # An empty id would turn DELETE /portfolio/events/orders/{id} into the account-wide cancel-all path.
    if not order_id or "/" in order_id:
        raise ValueError(f"order_id must be a non-empty id without '/'; got {order_id!r}")


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class OrderError:
    """Kalshi's ``{code, message, details}`` for one item of a batch."""

    code: str
    message: str = ""
    details: str = ""


@dataclass(frozen=True, slots=True)
class Placement:
    """The answer to a create (201): what filled at once and what is left resting (0 for IOC/FoK)."""

    order_id: str
    client_order_id: str | None
    fill_count: int
    remaining_count: int
    average_fill_price: int | None = None
    """Micro-dollars per contract (an average need not sit on the price grid); only when something filled."""
    average_fee_paid: int | None = None
    """Micro-dollars per contract; only when something filled."""
    ts_ms: int | None = None
    recovered: bool = False
    """True when the create's answer was lost and the order was found by its client_order_id instead."""


@dataclass(frozen=True, slots=True)
class CancelResult:
    order_id: str
    client_order_id: str | None
    reduced_by: int | None
    """The size still resting when the cancel happened (0 when a batch item failed; None when ``recovered``:
    the order no longer says)."""
    ts_ms: int | None = None
    error: OrderError | None = None
    recovered: bool = False
    """True when the cancel's answer was lost and the order was found cancelled instead."""


@dataclass(frozen=True, slots=True)
class AmendResult:
    order_id: str
    client_order_id: str | None
    remaining_count: int | None = None
    fill_count: int | None = None
    average_fill_price: int | None = None
    average_fee_paid: int | None = None
    ts_ms: int | None = None
    recovered: bool = False
    """True when the amend's answer was lost and the order was found amended instead (what the amend itself
    filled is then unknown: ``fill_count`` and the averages are None)."""


@dataclass(frozen=True, slots=True)
class DecreaseResult:
    order_id: str
    client_order_id: str | None
    remaining_count: int
    ts_ms: int | None = None
    recovered: bool = False
    """True when the decrease's answer was lost and the order was found decreased instead."""


@dataclass(frozen=True, slots=True)
class BatchPlacement:
    """One item of a batch create: its request and either the placement or Kalshi's error."""

    request: OrderRequest
    placement: Placement | None
    error: OrderError | None = None


@dataclass(frozen=True, slots=True)
class KalshiOrder:
    """An order as GET /portfolio/orders describes it. Money in micro-dollars."""

    order_id: str
    user_id: str
    client_order_id: str
    ticker: str
    outcome_side: OutcomeSide
    book_side: BookSide
    type: str
    status: OrderStatus
    yes_price: int
    no_price: int
    fill_count: int
    remaining_count: int
    initial_count: int
    taker_fill_cost: int
    maker_fill_cost: int
    taker_fees: int
    maker_fees: int
    expiration_time: str | None = None
    created_time: str | None = None
    last_update_time: str | None = None
    self_trade_prevention_type: str | None = None
    order_group_id: str | None = None
    subaccount_number: int | None = None
    exchange_index: int | None = None

    @classmethod
    def from_json(cls, raw: object) -> KalshiOrder:
        f = Fields(raw, "order")
        return cls(
            order_id=f.text("order_id"),
            user_id=f.text("user_id"),
            client_order_id=f.text("client_order_id"),
            ticker=f.text("ticker"),
            outcome_side=f.choice("outcome_side", OutcomeSide),
            book_side=f.choice("book_side", BookSide),
            type=f.text("type"),
            status=f.choice("status", OrderStatus),
            yes_price=f.price("yes_price_dollars"),
            no_price=f.price("no_price_dollars"),
            fill_count=f.count("fill_count_fp"),
            remaining_count=f.count("remaining_count_fp"),
            initial_count=f.count("initial_count_fp"),
            taker_fill_cost=f.money("taker_fill_cost_dollars"),
            maker_fill_cost=f.money("maker_fill_cost_dollars"),
            taker_fees=f.money("taker_fees_dollars"),
            maker_fees=f.money("maker_fees_dollars"),
            expiration_time=f.opt_text("expiration_time"),
            created_time=f.opt_text("created_time"),
            last_update_time=f.opt_text("last_update_time"),
            self_trade_prevention_type=f.opt_text("self_trade_prevention_type"),
            order_group_id=f.opt_text("order_group_id"),
            subaccount_number=f.opt_integer("subaccount_number"),
            exchange_index=f.opt_integer("exchange_index"),
        )

    def placement(self) -> Placement:
        """What is known of a create whose answer was lost, from the order it placed (``recovered``).

        The averages are left out: the order's fill costs do not say which leg's price they are in.
        """
        return Placement(
            order_id=self.order_id,
            client_order_id=self.client_order_id,
            fill_count=self.fill_count,
            remaining_count=self.remaining_count,
            recovered=True,
        )


@dataclass(frozen=True, slots=True)
class MarketPosition:
    """One market's position (GET /portfolio/positions). ``position`` is signed: positive YES, negative NO."""

    ticker: str
    position: int
    market_exposure: int
    realized_pnl: int
    fees_paid: int
    total_traded: int
    last_updated_ts: str | None = None
    exchange_index: int | None = None

    @classmethod
    def from_json(cls, raw: object) -> MarketPosition:
        f = Fields(raw, "market position")
        return cls(
            ticker=f.text("ticker"),
            position=f.count("position_fp"),
            market_exposure=f.money("market_exposure_dollars"),
            realized_pnl=f.money("realized_pnl_dollars"),
            fees_paid=f.money("fees_paid_dollars"),
            total_traded=f.money("total_traded_dollars"),
            last_updated_ts=f.opt_text("last_updated_ts"),
            exchange_index=f.opt_integer("exchange_index"),
        )


@dataclass(frozen=True, slots=True)
class EventPosition:
    event_ticker: str
    total_cost: int
    total_cost_shares: int
    event_exposure: int
    realized_pnl: int
    fees_paid: int

    @classmethod
    def from_json(cls, raw: object) -> EventPosition:
        f = Fields(raw, "event position")
        return cls(
            event_ticker=f.text("event_ticker"),
            total_cost=f.money("total_cost_dollars"),
            total_cost_shares=f.count("total_cost_shares_fp"),
            event_exposure=f.money("event_exposure_dollars"),
            realized_pnl=f.money("realized_pnl_dollars"),
            fees_paid=f.money("fees_paid_dollars"),
        )


@dataclass(frozen=True, slots=True)
class KalshiFill:
    """One of the account's fills (GET /portfolio/fills); REST fills carry no client_order_id."""

    fill_id: str
    order_id: str
    ticker: str
    outcome_side: OutcomeSide
    book_side: BookSide
    count: int
    yes_price: int
    no_price: int
    is_taker: bool
    fee_cost: int
    created_time: str | None = None
    exchange_index: int | None = None
    subaccount_number: int | None = None

    @classmethod
    def from_json(cls, raw: object) -> KalshiFill:
        f = Fields(raw, "fill")
        return cls(
            fill_id=f.text("fill_id"),
            order_id=f.text("order_id"),
            ticker=f.text("ticker"),
            outcome_side=f.choice("outcome_side", OutcomeSide),
            book_side=f.choice("book_side", BookSide),
            count=f.count("count_fp"),
            yes_price=f.price("yes_price_dollars"),
            no_price=f.price("no_price_dollars"),
            is_taker=f.flag("is_taker"),
            fee_cost=f.money("fee_cost"),
            created_time=f.opt_text("created_time"),
            exchange_index=f.opt_integer("exchange_index"),
            subaccount_number=f.opt_integer("subaccount_number"),
        )


@dataclass(frozen=True, slots=True)
class Balance:
    """GET /portfolio/balance in micro-dollars: ``balance`` is what is available to trade."""

    balance: int
    portfolio_value: int
    updated_ts: int | None = None
    by_exchange_index: tuple[tuple[int, int], ...] = ()
    """(exchange_index, balance) per shard, when Kalshi breaks it down."""

    @classmethod
    def from_json(cls, raw: object) -> Balance:
        f = Fields(raw, "balance")
        # balance_dollars is exact; the integer cents truncate sub-cent amounts.
        exact = f.opt_text("balance_dollars")
        balance = f.money("balance_dollars") if exact is not None else f.cents("balance")
        breakdown = []
        for index, item in enumerate(f.items("balance_breakdown")):
            row = Fields(item, f"balance_breakdown[{index}]")
            breakdown.append((row.integer("exchange_index"), row.money("balance")))
        return cls(
            balance=balance,
            portfolio_value=f.cents("portfolio_value"),
            updated_ts=f.opt_integer("updated_ts"),
            by_exchange_index=tuple(breakdown),
        )


@dataclass(frozen=True, slots=True)
class Settlement:
    """One settled market (GET /portfolio/settlements); ``revenue`` in micro-dollars (Kalshi sends cents)."""

    ticker: str
    event_ticker: str
    market_result: str
    yes_count: int
    yes_total_cost: int
    no_count: int
    no_total_cost: int
    revenue: int
    fee_cost: int
    settled_time: str | None = None
    value: int | None = None
    """What one YES contract paid, 1/10,000 dollar (Kalshi sends cents)."""
    exchange_index: int | None = None

    @classmethod
    def from_json(cls, raw: object) -> Settlement:
        f = Fields(raw, "settlement")
        value = f.opt_integer("value")
        return cls(
            ticker=f.text("ticker"),
            event_ticker=f.opt_text("event_ticker") or "",
            market_result=f.text("market_result"),
            yes_count=f.count("yes_count_fp"),
            yes_total_cost=f.money("yes_total_cost_dollars"),
            no_count=f.count("no_count_fp"),
            no_total_cost=f.money("no_total_cost_dollars"),
            revenue=f.cents("revenue"),
            fee_cost=f.money("fee_cost"),
            settled_time=f.opt_text("settled_time"),
            value=None if value is None else price_from_cents(value, "value"),
            exchange_index=f.opt_integer("exchange_index"),
        )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list endpoint; an empty ``cursor`` means it was the last."""

    items: tuple[T, ...]
    cursor: str = ""


@dataclass(frozen=True, slots=True)
class PositionsPage:
    market_positions: tuple[MarketPosition, ...]
    event_positions: tuple[EventPosition, ...]
    cursor: str = ""


def placement_from_json(raw: object, what: str = "order") -> Placement:
    """The create answer ``{order_id, client_order_id?, fill_count, remaining_count, average_*?, ts_ms}``."""
    f = Fields(raw, what)
    return Placement(
        order_id=f.text("order_id"),
        client_order_id=f.opt_text("client_order_id"),
        fill_count=f.count("fill_count"),
        remaining_count=f.count("remaining_count"),
        average_fill_price=f.opt_money("average_fill_price"),
        average_fee_paid=f.opt_money("average_fee_paid"),
        ts_ms=f.opt_integer("ts_ms"),
    )


def order_error_from_json(raw: object) -> OrderError:
    if isinstance(raw, str):
        return OrderError(code="", message=raw)
    f = Fields(raw, "error")
    return OrderError(
        code=f.opt_text("code") or "", message=f.opt_text("message") or "", details=f.opt_text("details") or ""
    )


# ---------------------------------------------------------------------------------------------- parsing


class Fields:
    """Typed reads of one JSON object; every failure is a ValueError naming the object and the field."""

    def __init__(self, raw: object, what: str) -> None:
        if not isinstance(raw, dict):
            raise ValueError(f"{what} must be an object, got {type(raw).__name__}")
        self.raw: Mapping[str, Any] = raw
        self.what = what

    def _get(self, name: str, kind: type | tuple[type, ...], required: bool) -> Any:
        value = self.raw.get(name)
        if value is None:
            if required:
                raise ValueError(f"{self.what}: {name} is missing")
            return None
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise ValueError(f"{self.what}: {name} has the wrong type ({type(value).__name__})")
        return value

    def text(self, name: str) -> str:
        value: str = self._get(name, str, True)
        return value

    def opt_text(self, name: str) -> str | None:
        value: str | None = self._get(name, str, False)
        return value

    def integer(self, name: str) -> int:
        value: int = self._get(name, int, True)
        return value

    def opt_integer(self, name: str) -> int | None:
        value: int | None = self._get(name, int, False)
        return value

    def flag(self, name: str) -> bool:
        value: bool = self._get(name, bool, True)
        return value

    def items(self, name: str) -> list[Any]:
        value: list[Any] | None = self._get(name, list, False)
        return value or []

    def choice(self, name: str, choices: Any) -> Any:
        value = self.text(name)
        if value not in get_args(choices):
            raise ValueError(f"{self.what}: {name} must be one of {', '.join(get_args(choices))}; got {value!r}")
        return value

    def _fixed(self, name: str, parse: Any, required: bool) -> Any:
        text = self._get(name, str, required)
        if text is None:
            return None
        try:
            return parse(text)
        except FixedPointError as exc:
            raise ValueError(f"{self.what}: {name}: {exc}") from None

    def price(self, name: str) -> int:
        value: int = self._fixed(name, parse_price, True)
        return value

    def count(self, name: str) -> int:
        value: int = self._fixed(name, parse_size, True)
        return value

    def opt_count(self, name: str) -> int | None:
        value: int | None = self._fixed(name, parse_size, False)
        return value

    def money(self, name: str) -> int:
        value: int = self._fixed(name, parse_money, True)
        return value

    def opt_money(self, name: str) -> int | None:
        value: int | None = self._fixed(name, parse_money, False)
        return value

    def cents(self, name: str) -> int:
        """An integer amount in cents, as micro-dollars."""
        return money_from_cents(self.integer(name), name)
