"""The exchange's trading desk: an account per API key, and their orders placed in the markets' matching books.

Plain Python (no Django, no I/O). The desk checks each order as Kalshi does (``OrderRejected`` carries the
error code, message and HTTP status), reserves cash for resting orders, places orders in the market's one
``MatchingBook`` (where the simulated liquidity rests too), books every fill to its account, and tells
its listener what changed: an order (``OrderUpdate``), a fill (``FillUpdate``), a position
(``PositionUpdate``), a market's book (``on_book``). Money is integer micro-dollars, counts 1/100
contract, prices 1/10,000 dollar (``apps.exchange.matching``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from apps.exchange.accounts import Account, AccountSettlement, Position
from apps.exchange.market import HOUSE_OWNERS, SimMarket
from apps.exchange.matching import (
    BookFill,
    BookOrder,
    BookSide,
    MatchResult,
    OrderRejected,
    SelfTradePrevention,
    TimeInForce,
    trade_fee,
)
from apps.kalshi.fixedpoint import DOLLAR
from apps.kalshi.positions import outcome_cost

DEFAULT_STARTING_BALANCE = 10_000 * 1_000_000
"""$10,000 in micro-dollars."""

OPEN_STATUS = "active"
"""The one market status that takes new orders."""
KEEP = -1
"""``amend(expiration_time=KEEP)``: leave the expiry as it is (0 clears it)."""


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class NewOrder:
    """A create request, parsed: the fields of Kalshi's CreateOrderV2Request the exchange acts on."""

    ticker: str
    side: BookSide
    count: int
    price: int
    time_in_force: TimeInForce = "good_till_canceled"
    self_trade_prevention: SelfTradePrevention = "taker_at_cross"
    client_order_id: str = ""
    expiration_time: int | None = None
    post_only: bool = False
    reduce_only: bool = False


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    order: BookOrder


@dataclass(frozen=True, slots=True)
class FillUpdate:
    fill: BookFill
    client_order_id: str
    post_position: int


@dataclass(frozen=True, slots=True)
class PositionUpdate:
    owner: str
    ticker: str
    position: Position


DeskEvent = OrderUpdate | FillUpdate | PositionUpdate


class Desk:
    """Accounts and orders of every API key on one exchange."""

    def __init__(
        self,
        markets: Mapping[str, SimMarket],
        *,
        starting_balance: int = DEFAULT_STARTING_BALANCE,
        trading_active: Callable[[], bool] = lambda: True,
        now_us: Callable[[], int] = _now_us,
    ) -> None:
        self._markets = markets
        self.starting_balance = starting_balance
        self._trading_active = trading_active
        self._now_us = now_us
        self._accounts: dict[str, Account] = {}
        self._orders: dict[str, BookOrder] = {}
        """Every user order ever placed, by id, in placement order."""
        self._open: dict[str, dict[str, BookOrder]] = {}
        """Per owner, orders that may still rest (pruned as they are found done): what reserves cash."""
        self._expiring: dict[str, BookOrder] = {}
        """Orders placed with an expiration time that may still rest."""
        self._client_ids: dict[tuple[str, str], str] = {}
        self._fills: dict[str, list[BookFill]] = {}
        self.on_event: Callable[[DeskEvent], None] = lambda event: None
        self.on_book: Callable[[str], None] = lambda ticker: None
        """Called after the desk moved a market's book (its level changes are waiting to be published)."""

    # ------------------------------------------------------------------------------------------ accounts

    def account(self, owner: str) -> Account:
        """The account of an API key, opened with the starting balance on first use."""
        account = self._accounts.get(owner)
        if account is None:
            account = self._accounts[owner] = Account(owner, self.starting_balance)
        return account

    def reserved(self, owner: str) -> int:
        """Cash held back for the owner's resting orders, micro-dollars."""
        account = self.account(owner)
        candidates = self._open.get(owner, {})
        total = 0
        # What is held can be closed once: the oldest resting orders that close it use it up first.
        closable: dict[tuple[str, BookSide], int] = {}
        for order in list(candidates.values()):
            if order.status != "resting":
                del candidates[order.order_id]
                continue
            key = (order.ticker, order.side)
            if key not in closable:
                closable[key] = _closable(account, order.ticker, order.side)
            closing = min(order.remaining_count, closable[key])
            closable[key] -= closing
            rate = self._markets[order.ticker].matching.maker_fee_rate
            total += self._opening_cost(order.side, order.remaining_count, closing, order.price, rate)
        return total

    def _free_to_close(self, owner: str, ticker: str, side: BookSide, *, besides: str = "") -> int:
        """What is held that the owner's resting ``side`` orders in ``ticker`` (other than ``besides``) do
        not already close."""
        claimed = sum(
            o.remaining_count
            for o in self._open.get(owner, {}).values()
            if o.status == "resting" and o.ticker == ticker and o.side == side and o.order_id != besides
        )
        return max(0, _closable(self.account(owner), ticker, side) - claimed)

    def available(self, owner: str) -> int:
        """Cash not held back for resting orders: what a new order may use (Kalshi's ``balance``)."""
        return self.account(owner).balance - self.reserved(owner)

    @staticmethod
    def _opening_cost(side: BookSide, count: int, closing: int, price: int, fee_rate: int) -> int:
        """What filling ``count`` at ``price`` could cost at most: the part beyond ``closing`` opens a
        position (what closes one pays out instead), and the fee is on all of it. A better fill price costs
        less, fee included."""
        opening = max(0, count - closing)
        fee = trade_fee(count, price, fee_rate) if fee_rate else 0
        return outcome_cost(side, opening, price) + fee

    # ------------------------------------------------------------------------------------------ orders

    def create(self, owner: str, new: NewOrder) -> MatchResult:
        """Check and place one order; raises OrderRejected (nothing placed) when it is refused."""
        now = self._now_us()
        self.expire(now)
        market = self._open_market(new.ticker)
        self._check_price(market, new.price)
        _check_count(new.count)
        if new.expiration_time is not None:
            if new.time_in_force == "immediate_or_cancel":
                raise OrderRejected("invalid_order", "Cannot specify both immediate_or_cancel and expiration_ts")
            if new.time_in_force != "good_till_canceled":
                raise OrderRejected("invalid_order", "expiration_time applies to good_till_canceled orders only")
            if new.expiration_time * 1_000_000 <= now:
                raise OrderRejected("invalid_order", "Expiration timestamp must be in the future")
        if new.reduce_only and new.time_in_force != "immediate_or_cancel":
            raise OrderRejected("invalid_order", "reduce_only orders must be immediate_or_cancel")
        if new.client_order_id and (owner, new.client_order_id) in self._client_ids:
            raise OrderRejected("order_already_exists", "an order with this client_order_id already exists", status=409)
        account = self.account(owner)
        rate = market.matching.taker_fee_rate
        closing = self._free_to_close(owner, new.ticker, new.side)
        if self._opening_cost(new.side, new.count, closing, new.price, rate) > self.available(owner):
            raise OrderRejected("available_balance_too_low", "available balance too low for this order")
        held = account.positions.get(new.ticker)
        order = BookOrder(
            order_id=str(uuid.uuid4()),
            owner=owner,
            ticker=new.ticker,
            side=new.side,
            price=new.price,
            initial_count=new.count,
            time_in_force=new.time_in_force,
            self_trade_prevention=new.self_trade_prevention,
            client_order_id=new.client_order_id,
            post_only=new.post_only,
            reduce_only=new.reduce_only,
            expiration_time=new.expiration_time,
        )
        placement = market.matching.submit(order, position=held.position if held else 0, now_us=now)
        self._orders[order.order_id] = order
        if order.status == "resting":
            self._open.setdefault(owner, {})[order.order_id] = order
            if order.expiration_time is not None:
                self._expiring[order.order_id] = order
        if order.client_order_id:
            self._client_ids[(owner, order.client_order_id)] = order.order_id
        market.record_trades(placement.fills)
        self._book(placement.fills, [order, *placement.cancelled])
        self.on_book(market.ticker)
        return placement

    def cancel(self, owner: str, order_id: str, *, reason: str = "") -> tuple[BookOrder, int]:
        """Cancel one resting order: (the order, the size it still had)."""
        self.expire()
        order = self._resting(owner, order_id)
        reduced_by = order.remaining_count
        self._markets[order.ticker].matching.cancel(order_id, reason=reason, now_us=self._now_us())
        self.on_event(OrderUpdate(order))
        self.on_book(order.ticker)
        return order, reduced_by

    def cancel_all(self, owner: str) -> list[BookOrder]:
        """Cancel every resting order of ``owner`` (in every market); returns them."""
        self.expire()
        resting = [o for o in self._open.get(owner, {}).values() if o.status == "resting"]
        for order in resting:
            self.cancel(owner, order.order_id)
        return resting

    def decrease(
        self, owner: str, order_id: str, *, reduce_by: int | None = None, reduce_to: int | None = None
    ) -> BookOrder:
        """Lower a resting order's remaining size by ``reduce_by`` or to ``reduce_to`` (exactly one)."""
        self.expire()
        order = self._resting(owner, order_id)
        if (reduce_by is None) == (reduce_to is None):
            raise OrderRejected("invalid_order", "give exactly one of reduce_by and reduce_to")
        remaining = order.remaining_count - reduce_by if reduce_by is not None else reduce_to
        assert remaining is not None
        if (reduce_by is not None and reduce_by <= 0) or remaining < 0:
            raise OrderRejected("invalid_order_size", "an order can only be decreased, to 0 at least")
        self._markets[order.ticker].matching.decrease(order_id, remaining, now_us=self._now_us())
        self.on_event(OrderUpdate(order))
        self.on_book(order.ticker)
        return order

    def amend(
        self,
        owner: str,
        order_id: str,
        *,
        ticker: str,
        side: BookSide,
        price: int,
        count: int,
        client_order_id: str | None = None,
        updated_client_order_id: str | None = None,
        expiration_time: int | None = KEEP,
    ) -> MatchResult:
        """Change a resting order's price and total count (filled plus the new remaining); it may cross."""
        now = self._now_us()
        self.expire(now)
        order = self._resting(owner, order_id)
        if ticker != order.ticker:
            raise OrderRejected("order_ticker_mismatch", "the ticker is not the order's")
        if side != order.side:
            raise OrderRejected("order_side_mismatch", "the side is not the order's")
        if client_order_id is not None and client_order_id != order.client_order_id:
            raise OrderRejected("order_id_and_client_order_id_mismatch", "client_order_id is not the order's")
        market = self._open_market(ticker)
        self._check_price(market, price)
        _check_count(count)
        if count <= order.fill_count:
            raise OrderRejected("invalid_order_size", "the new count must exceed what has filled")
        renamed = bool(updated_client_order_id) and updated_client_order_id != order.client_order_id
        if renamed and (owner, updated_client_order_id) in self._client_ids:
            raise OrderRejected("order_already_exists", "an order with this client_order_id already exists", status=409)
        if expiration_time not in (KEEP, None, 0) and expiration_time * 1_000_000 <= now:
            raise OrderRejected("invalid_order", "Expiration timestamp must be in the future")
        account = self.account(owner)
        rate = market.matching.taker_fee_rate
        closing = self._free_to_close(owner, ticker, side, besides=order_id)
        before = self._opening_cost(side, order.remaining_count, closing, order.price, rate)
        after = self._opening_cost(side, count - order.fill_count, closing, price, rate)
        if after - before > self.available(owner):
            raise OrderRejected("available_balance_too_low", "available balance too low for this order")
        held = account.positions.get(ticker)
        placement = market.matching.amend(
            order_id, price=price, total_count=count, position=held.position if held else 0, now_us=now
        )
        if expiration_time != KEEP:
            order.expiration_time = expiration_time or None
            if order.expiration_time is not None:
                self._expiring[order.order_id] = order
        if updated_client_order_id and updated_client_order_id != order.client_order_id:
            self._client_ids.pop((owner, order.client_order_id), None)
            order.client_order_id = updated_client_order_id
            self._client_ids[(owner, updated_client_order_id)] = order.order_id
        market.record_trades(placement.fills)
        self._book(placement.fills, [order, *placement.cancelled])
        self.on_book(ticker)
        return placement

    def expire(self, now_us: int | None = None) -> int:
        """Cancel resting orders whose expiration time has come; returns how many."""
        now = self._now_us() if now_us is None else now_us
        due = []
        for order in list(self._expiring.values()):
            if order.status != "resting" or order.expiration_time is None:
                del self._expiring[order.order_id]
            elif order.expiration_time * 1_000_000 <= now:
                del self._expiring[order.order_id]
                due.append(order)
        for order in due:
            self._markets[order.ticker].matching.cancel(order.order_id, reason="ExpiryCancel", now_us=now)
            self.on_event(OrderUpdate(order))
            self.on_book(order.ticker)
        return len(due)

    def house_fills(self, fills: Iterable[BookFill]) -> None:
        """Book the fills the simulated flow made against users' resting orders (maker fills)."""
        fills = [f for f in fills if f.owner not in HOUSE_OWNERS]
        self._book(fills, [])

    def _book(self, fills: list[BookFill], orders: list[BookOrder]) -> None:
        """Move users' cash and positions for ``fills``, then report them and every user order touched."""
        touched: dict[str, BookOrder] = {}
        for fill in fills:
            if fill.owner in HOUSE_OWNERS:
                continue
            account = self.account(fill.owner)
            position = account.apply_fill(fill)
            self._fills.setdefault(fill.owner, []).append(fill)
            order = self._orders[fill.order_id]
            touched[order.order_id] = order
            self.on_event(FillUpdate(fill, order.client_order_id, position.position))
            self.on_event(PositionUpdate(fill.owner, fill.ticker, position))
        for order in orders:
            if order.owner not in HOUSE_OWNERS:
                touched.setdefault(order.order_id, order)
        for order in touched.values():
            self.on_event(OrderUpdate(order))

    # ------------------------------------------------------------------------------------------ settlement

    def settle(self, ticker: str, result: Literal["yes", "no"]) -> list[AccountSettlement]:
        """Settle a market: its resting orders are cancelled, it is finalized, and every position in it is
        paid $1 per winning contract. KeyError for an unknown market."""
        market = self._markets[ticker]
        if result not in ("yes", "no"):
            raise ValueError("a market settles yes or no")
        now = self._now_us()
        market.status = "finalized"
        for order in list(market.matching.resting_orders()):
            market.matching.cancel(order.order_id, reason="CloseCancel", now_us=now)
            if order.owner not in HOUSE_OWNERS:
                self.on_event(OrderUpdate(order))
        self.on_book(ticker)
        settlements = []
        for owner, account in self._accounts.items():
            settlement = account.settle(ticker, result, now_us=now)
            if settlement is not None:
                settlements.append(settlement)
                self.on_event(PositionUpdate(owner, ticker, account.positions[ticker]))
        return settlements

    # ------------------------------------------------------------------------------------------ queries

    def orders(self, owner: str) -> list[BookOrder]:
        """The owner's orders, newest first."""
        self.expire()
        return [o for o in reversed(self._orders.values()) if o.owner == owner]

    def order(self, owner: str, order_id: str) -> BookOrder:
        self.expire()
        order = self._orders.get(order_id)
        if order is None or order.owner != owner:
            raise OrderRejected("not_found", "order not found", status=404)
        return order

    def order_by_client_id(self, owner: str, client_order_id: str) -> BookOrder:
        """The owner's order placed with ``client_order_id`` (404 OrderRejected when there is none)."""
        order_id = self._client_ids.get((owner, client_order_id))
        if order_id is None:
            raise OrderRejected("not_found", "order not found", status=404)
        return self.order(owner, order_id)

    def fills(self, owner: str) -> list[BookFill]:
        """The owner's fills, newest first."""
        return list(reversed(self._fills.get(owner, [])))

    def market(self, ticker: str) -> SimMarket | None:
        return self._markets.get(ticker)

    # ------------------------------------------------------------------------------------------ checks

    def _resting(self, owner: str, order_id: str) -> BookOrder:
        order = self._orders.get(order_id)
        if order is None or order.owner != owner or order.status != "resting":
            raise OrderRejected("not_found", "no resting order with this id", status=404)
        return order

    def _open_market(self, ticker: str) -> SimMarket:
        market = self._markets.get(ticker)
        if market is None:
            raise OrderRejected("market_not_found", f"market {ticker!r} not found", status=404)
        if market.status != OPEN_STATUS:
            raise OrderRejected("market_closed", f"market {ticker} is {market.status}, not open for trading")
        if not self._trading_active():
            raise OrderRejected("trading_is_paused", "trading is paused on the exchange", status=503)
        return market

    @staticmethod
    def _check_price(market: SimMarket, price: int) -> None:
        if not 0 < price < DOLLAR:
            raise OrderRejected("invalid_order", "price must lie strictly between 0 and 1")
        if price not in market.price_set:
            raise OrderRejected("invalid_order", "price is not on the market's price grid", market.structure)


def _closable(account: Account, ticker: str, side: BookSide) -> int:
    """How much of ``account``'s position in ``ticker`` a ``side`` order would close: NO for a bid, YES
    for an ask."""
    held = account.positions.get(ticker)
    position = held.position if held else 0
    return max(0, -position) if side == "bid" else max(0, position)


def _check_count(count: int) -> None:
    if count <= 0:
        raise OrderRejected("invalid_order_size", "count must be a positive multiple of 0.01")
