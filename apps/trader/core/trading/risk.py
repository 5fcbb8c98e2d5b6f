"""Risk limits every order of this trader passes before it leaves the process.

``RiskGate.check`` looks at one order a strategy asks for (a create, or the new shape of an amend) against
the limits, the market's position, this trader's working orders, the book and the session's P&L, and
returns the first rule it breaks as a ``Refusal`` (rule name and one line for a person), or None. Only an
order that passes takes a token from the orders-per-second bucket. Cancels are never checked: taking risk
off must always be possible. For the same reason an order that only reduces a position (filled completely,
with the same side's working orders, it leaves a smaller position of the same sign) passes the position and
exposure limits even above them.

Units as everywhere in the trader: prices in 1/10,000 dollar, counts 1/100 contract, money micro-dollars.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Literal

from apps.kalshi.fixedpoint import (
    CONTRACT,
    MICRO_DOLLAR,
    FixedPointError,
    format_money,
    format_price,
    format_size,
    parse_money,
    parse_price,
    parse_size,
)
from apps.kalshi.orderbook import TopOfBook
from apps.kalshi.portfolio import BookSide, TimeInForce
from apps.kalshi.positions import outcome_cost
from apps.trader.core.trading.records import OrderRecord

Unit = Literal["count", "price", "money", "number"]

_UNITS: dict[str, Unit] = {
    "max_position": "count",
    "max_open_orders": "number",
    "max_order_size": "count",
    "max_exposure": "money",
    "max_orders_per_second": "number",
    "price_band": "price",
    "max_session_loss": "money",
}
_EXAMPLES: dict[Unit, str] = {
    "count": 'a contract count such as "10" or "2.50"',
    "price": 'a dollar price such as "0.10"',
    "money": 'a dollar amount such as "100" or "25.50"',
    "number": 'a whole number such as "10"',
}
_PARSERS: dict[Unit, Callable[[object], int]] = {
    "count": parse_size,
    "price": parse_price,
    "money": parse_money,
}
_FORMATS: dict[Unit, Callable[[int], str]] = {
    "count": format_size,
    "price": format_price,
    "money": format_money,
    "number": str,
}
_WHOLE = re.compile(r"^\d+$")

TRADING_STOPPED = "trading_stopped"
NO_BOOK = "no_book"


@dataclass(frozen=True, kw_only=True)
class RiskLimits:
    """The limits, with safe defaults. A limit of 0 refuses what it limits; none means "unlimited"."""

    max_position: int = 10 * CONTRACT
    """|position| per market once the order (and the same side's working orders) filled completely."""
    max_open_orders: int = 10
    """Working orders of this trader, all markets."""
    max_order_size: int = 5 * CONTRACT
    max_exposure: int = 100 * MICRO_DOLLAR
    """What the positions cost plus the worst-case cost of the working orders, micro-dollars."""
    max_orders_per_second: int = 5
    """Creates and amends, as a token bucket whose burst is the rate."""
    price_band: int = 1000
    """How far past the touch an order's price may be: within [best bid - band, best ask + band]."""
    max_session_loss: int = 25 * MICRO_DOLLAR
    """Session P&L (realized + unrealized - fees) below minus this stops trading."""

    def __post_init__(self) -> None:
        for name in _UNITS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"risk limit {name} must be a non-negative int; got {value!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> RiskLimits:
        """Limits from names to strings ("max_position": "5", "price_band": "0.10", "max_exposure": "100"),
        the defaults for the rest. Counts are contracts, prices and money dollars, parsed exactly; a JSON
        integer is taken as its string. ValueError naming the limit for an unknown name or a bad value."""
        parsed: dict[str, int] = {}
        for raw_name, raw in values.items():
            name = raw_name.lower()
            unit = _UNITS.get(name)
            if unit is None:
                raise ValueError(f"unknown risk limit {raw_name!r} (known: {', '.join(_UNITS)})")
            text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
            if not isinstance(text, str):
                raise ValueError(f"risk limit {name} must be {_EXAMPLES[unit]} in a string; got {raw!r}")
            text = text.strip()
            if text.startswith("-"):
                raise ValueError(f"risk limit {name} must not be negative; got {text!r}")
            if unit == "number":
                if not _WHOLE.match(text):
                    raise ValueError(f"risk limit {name} must be {_EXAMPLES[unit]}; got {text!r}")
                parsed[name] = int(text)
                continue
            try:
                parsed[name] = _PARSERS[unit](text)
            except FixedPointError as exc:
                raise ValueError(f"risk limit {name} must be {_EXAMPLES[unit]}: {exc}") from None
        return cls(**parsed)

    def describe(self) -> dict[str, str]:
        """Each limit for a person, in its unit: "10.00" contracts, "0.1000" $, "100.000000" $, "5"."""
        return {f.name: _FORMATS[_UNITS[f.name]](getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an order did not leave the process."""

    rule: str
    """The limit's field name, or "trading_stopped" / "no_book"."""
    message: str
    """One line a person understands, starting with the rule."""


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """What a strategy asks for: a create, or the new shape of an amend."""

    ticker: str
    side: BookSide
    yes_price: int
    count: int
    """The order's size; for an amend the new total, filled included (as Kalshi's amend takes it)."""
    time_in_force: TimeInForce = "good_till_canceled"
    post_only: bool = False
    reduce_only: bool = False
    replaces: OrderRecord | None = None
    """An amend: the order being changed, whose own count and exposure do not count twice."""

    @property
    def remaining(self) -> int:
        """What may still fill once placed: the count, less what the amended order has filled."""
        filled = self.replaces.fill_count if self.replaces is not None else 0
        return max(0, self.count - filled)


def worst_case_cost(side: BookSide, remaining: int, yes_price: int) -> int:
    """What a working order could still cost if it filled completely, micro-dollars."""
    return outcome_cost(side, remaining, yes_price)


class RiskGate:
    """The limits, applied to each order before it is sent; it stops trading for good on the loss limit."""

    def __init__(self, limits: RiskLimits, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._monotonic = monotonic
        self._tokens = float(limits.max_orders_per_second)
        self._refilled = monotonic()
        self._stopped: Refusal | None = None

    @property
    def stopped(self) -> Refusal | None:
        """Why trading was stopped (the loss limit, or ``stop``); None while it goes on."""
        return self._stopped

    def stop(self, reason: str) -> None:
        """Refuse every further order with rule "trading_stopped" (a kill switch); the first reason stays."""
        if self._stopped is None:
            self._stopped = Refusal(TRADING_STOPPED, f"{TRADING_STOPPED}: {reason}")

    def check(
        self,
        intent: OrderIntent,
        *,
        position: int,
        working: Sequence[OrderRecord],
        top: TopOfBook | None,
        positions_cost: int,
        session_pnl: int | None,
    ) -> Refusal | None:
        """The first broken rule, or None — and then (only then) it takes a rate token.

        ``position`` is the market's (signed), ``working`` every working order of this trader in every
        market (an amended order among them is set aside), ``positions_cost`` what all open positions cost,
        ``session_pnl`` the session's P&L (None when it cannot be marked: the loss limit then waits).
        """
        stopped = self._stopped
        if stopped is not None:
            return (
                stopped
                if stopped.rule == TRADING_STOPPED
                else Refusal(TRADING_STOPPED, f"{TRADING_STOPPED}: {stopped.message}")
            )
        refusal = self.session_loss(session_pnl)
        if refusal is not None:
            return refusal
        others = [o for o in working if not _same_order(o, intent.replaces)]
        refusal = (
            self._price_band(intent, top)
            or self._order_size(intent)
            or self._open_orders(others)
            or self._position_and_exposure(intent, position, others, positions_cost)
        )
        if refusal is not None:
            return refusal
        if not self._take_token():
            rate = self.limits.max_orders_per_second
            return Refusal("max_orders_per_second", f"max_orders_per_second: more than {rate} orders in a second")
        return None

    def session_loss(self, session_pnl: int | None) -> Refusal | None:
        """The loss limit on its own (after fills, on a timer): the refusal while the session's P&L is below
        minus the limit, and trading stops (later checks refuse with "trading_stopped")."""
        limit = self.limits.max_session_loss
        if session_pnl is None or session_pnl >= -limit:
            return None
        refusal = Refusal(
            "max_session_loss",
            f"max_session_loss: session P&L {format_money(session_pnl)} $ is below -{format_money(limit)} $",
        )
        if self._stopped is None:
            self._stopped = refusal
        return refusal

    def exposure(self, positions_cost: int, working: Sequence[OrderRecord]) -> int:
        """What the positions cost plus what the working orders could cost if they all filled, micro-dollars."""
        return positions_cost + sum(worst_case_cost(o.side, o.remaining_count, o.yes_price) for o in working)

    # ------------------------------------------------------------------------------------------ rules

    def _price_band(self, intent: OrderIntent, top: TopOfBook | None) -> Refusal | None:
        if top is None or (top.yes_bid is None and top.yes_ask is None):
            return Refusal(NO_BOOK, f"{NO_BOOK}: no book for {intent.ticker} to check the price against")
        band = self.limits.price_band
        bid = top.yes_bid[0] if top.yes_bid is not None else None
        ask = top.yes_ask[0] if top.yes_ask is not None else None
        # With one side only, the band is around that side.
        low = (bid if bid is not None else _present(ask)) - band
        high = (ask if ask is not None else _present(bid)) + band
        if low <= intent.yes_price <= high:
            return None
        touch = f"bid {_price(bid)} ask {_price(ask)}"
        return Refusal(
            "price_band",
            f"price_band: {_verb(intent.side)} {intent.ticker} at {format_price(intent.yes_price)} is outside "
            f"{format_price(max(0, low))}..{format_price(high)} ({touch}, band {format_price(band)})",
        )

    def _order_size(self, intent: OrderIntent) -> Refusal | None:
        limit = self.limits.max_order_size
        if intent.count <= limit:
            return None
        return Refusal(
            "max_order_size",
            f"max_order_size: {_verb(intent.side)} {format_size(intent.count)} in {intent.ticker} "
            f"(limit {format_size(limit)})",
        )

    def _open_orders(self, others: Sequence[OrderRecord]) -> Refusal | None:
        limit = self.limits.max_open_orders
        if len(others) + 1 <= limit:
            return None
        return Refusal(
            "max_open_orders",
            f"max_open_orders: {len(others)} orders working already, one more would be {len(others) + 1} "
            f"(limit {limit})",
        )

    def _position_and_exposure(
        self, intent: OrderIntent, position: int, others: Sequence[OrderRecord], positions_cost: int
    ) -> Refusal | None:
        direction = 1 if intent.side == "bid" else -1
        remaining = intent.remaining
        queued = sum(o.remaining_count for o in others if o.ticker == intent.ticker and o.side == intent.side)
        if intent.reduce_only:
            # The exchange fills a reduce-only order only as far as it closes what is held.
            remaining = min(remaining, max(0, -direction * position - queued))
        after = position + direction * (queued + remaining)
        reduces = position != 0 and abs(after) < abs(position) and after * position >= 0
        if reduces:
            return None
        limit = self.limits.max_position
        if abs(after) > limit:
            return Refusal(
                "max_position",
                f"max_position: {_verb(intent.side)} {format_size(remaining)} would hold {format_size(after)} "
                f"in {intent.ticker} (limit {format_size(limit)})",
            )
        total = self.exposure(positions_cost, others) + worst_case_cost(intent.side, remaining, intent.yes_price)
        if total > self.limits.max_exposure:
            return Refusal(
                "max_exposure",
                f"max_exposure: {_verb(intent.side)} {format_size(remaining)} in {intent.ticker} would bring "
                f"exposure to {format_money(total)} $ (limit {format_money(self.limits.max_exposure)} $)",
            )
        return None

    def _take_token(self) -> bool:
        rate = self.limits.max_orders_per_second
        now = self._monotonic()
        self._tokens = min(float(rate), self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        # A hair below 1 counts as a whole token: the refill is float arithmetic on clock readings.
        if self._tokens < 1 - 1e-9:
            return False
        self._tokens = max(0.0, self._tokens - 1)
        return True


def _same_order(order: OrderRecord, replaced: OrderRecord | None) -> bool:
    if replaced is None:
        return False
    if replaced.client_order_id and order.client_order_id == replaced.client_order_id:
        return True
    return bool(replaced.order_id) and order.order_id == replaced.order_id


def _verb(side: BookSide) -> str:
    return "buying" if side == "bid" else "selling"


def _present(price: int | None) -> int:
    assert price is not None  # one side of a book that is not empty
    return price


def _price(price: int | None) -> str:
    return "none" if price is None else format_price(price)
