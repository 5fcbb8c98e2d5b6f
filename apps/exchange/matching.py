"""Order matching for the built-in exchange: one YES book per market, price-time priority, Kalshi's V2 rules.

Kalshi keeps a single YES book (``kalshi-trading.md`` §8): a ``bid`` buys YES at its price, an ``ask`` sells
YES at its price (the same as buying NO at 1 - price). An incoming order takes liquidity at the resting
orders' prices, best price first and oldest first at a price, then follows its time in force: the rest
rests (GTC), is cancelled (IOC), or nothing fills unless everything can (FoK). ``post_only`` that would
cross is refused; ``reduce_only`` never grows a position; self-trade prevention is ``taker_at_cross`` (the
incoming order stops where it would meet its owner's own order) or ``maker`` (that resting order is
cancelled and matching goes on).

Everything is an integer: prices in 1/10,000 dollar, counts in 1/100 contract (``apps.kalshi.fixedpoint``),
money in micro-dollars (1/1,000,000 dollar: a count times a price is exactly that). No Django, no I/O:
the simulator's connections and REST layer drive it.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from apps.kalshi.fixedpoint import DOLLAR
from apps.kalshi.messages import Side
from apps.kalshi.positions import outcome_cost

BookSide = Literal["bid", "ask"]
TimeInForce = Literal["good_till_canceled", "immediate_or_cancel", "fill_or_kill"]
SelfTradePrevention = Literal["taker_at_cross", "maker"]
OrderStatus = Literal["resting", "canceled", "executed"]

TAKER_FEE_RATE = 700
"""Kalshi's general taker schedule, 0.07, in 1/10,000."""
MAKER_FEE_RATE_CHARGED = 175
"""0.0175 (a quarter of the taker rate), on series whose fee type charges makers; 0 elsewhere."""


def trade_fee(count: int, price: int, rate: int) -> int:
    """``rate x C x P x (1 - P)`` in micro-dollars, rounded up to the next micro-dollar (Kalshi's rounding).

    ``rate`` in 1/10,000, ``count`` in 1/100 contract, ``price`` in 1/10,000 dollar: the product is in
    1/10^14 dollar, so 10^8 of it make a micro-dollar.
    """
    return -(-rate * count * price * (DOLLAR - price) // 100_000_000)


class OrderRejected(Exception):
    """An order the exchange refuses, in Kalshi's error shape (``{"error": {"code", "message", "details"}}``)."""

    def __init__(self, code: str, message: str, details: str = "", *, status: int = 400) -> None:
        super().__init__(f"{code}: {message}" + (f" ({details})" if details else ""))
        self.code = code
        self.message = message
        self.details = details
        self.status = status


@dataclass(slots=True)
class BookOrder:
    """One order and what has happened to it; fields follow Kalshi's Order object."""

    order_id: str
    owner: str
    """The account (API key) it belongs to; the simulated liquidity has its own."""
    ticker: str
    side: BookSide
    price: int
    initial_count: int
    time_in_force: TimeInForce = "good_till_canceled"
    self_trade_prevention: SelfTradePrevention = "taker_at_cross"
    client_order_id: str = ""
    post_only: bool = False
    reduce_only: bool = False
    expiration_time: int | None = None
    """Unix seconds (GTC only)."""
    created_us: int = 0
    status: OrderStatus = "resting"
    fill_count: int = 0
    remaining_count: int = 0
    taker_fill_cost: int = 0
    maker_fill_cost: int = 0
    taker_fees: int = 0
    maker_fees: int = 0
    last_update_us: int = 0
    last_update_reason: str = ""
    queue_seq: int = 0
    """Time priority at its price: lower goes first. A price change or a size increase takes a new one."""

    def __post_init__(self) -> None:
        if not self.remaining_count and self.status == "resting":
            self.remaining_count = self.initial_count

    @property
    def outcome_side(self) -> Side:
        return "yes" if self.side == "bid" else "no"


@dataclass(frozen=True, slots=True)
class BookFill:
    """One side of a trade: the order it filled, how much, at what YES price, and the fee."""

    trade_id: str
    order_id: str
    owner: str
    ticker: str
    side: BookSide
    price: int
    count: int
    is_taker: bool
    fee: int
    """Micro-dollars."""
    ts_us: int


@dataclass(frozen=True, slots=True)
class PublicLevelChange:
    """A change of the public book as ``orderbook_delta`` carries it: YES bids on ``yes``, asks as NO bids
    at 1 - price on ``no``."""

    side: Side
    price: int
    delta: int


@dataclass(slots=True)
class MatchResult:
    """What submitting (or amending into a cross) did: the fills, in trade order, and the order after."""

    order: BookOrder
    fills: list[BookFill] = field(default_factory=list)
    cancelled: list[BookOrder] = field(default_factory=list)
    """Resting orders of the same owner that ``maker`` self-trade prevention cancelled."""


class MatchingBook:
    """One market's YES book of resting orders, with matching."""

    def __init__(self, ticker: str, *, taker_fee_rate: int = TAKER_FEE_RATE, maker_fee_rate: int = 0) -> None:
        self.ticker = ticker
        self.taker_fee_rate = taker_fee_rate
        self.maker_fee_rate = maker_fee_rate
        self._levels: dict[BookSide, dict[int, deque[BookOrder]]] = {"bid": {}, "ask": {}}
        self._prices: dict[BookSide, list[int]] = {"bid": [], "ask": []}
        """Each side's prices with resting orders, ascending."""
        self._orders: dict[str, BookOrder] = {}
        """Resting orders by id."""
        self._queue = itertools.count(1)
        self._trades = itertools.count(1)
        self.changes: list[PublicLevelChange] = []
        """Public level changes since the caller last took them (``take_changes``)."""

    # ------------------------------------------------------------------------------------------ reading

    def resting(self, order_id: str) -> BookOrder | None:
        return self._orders.get(order_id)

    def resting_orders(self, owner: str | None = None) -> Iterator[BookOrder]:
        return (o for o in self._orders.values() if owner is None or o.owner == owner)

    def best(self, side: BookSide) -> int | None:
        prices = self._prices[side]
        if not prices:
            return None
        return prices[-1] if side == "bid" else prices[0]

    def depth(self, side: BookSide, owner: str | None = None) -> dict[int, int]:
        """Resting size per price on one side (only ``owner``'s orders when given; levels without any left out)."""
        depth = {}
        for price, queue in self._levels[side].items():
            size = sum(o.remaining_count for o in queue if owner is None or o.owner == owner)
            if size:
                depth[price] = size
        return depth

    def orders_at(self, side: BookSide, price: int) -> list[BookOrder]:
        """The queue at one price, oldest first (a copy)."""
        return list(self._levels[side].get(price, ()))

    def take_changes(self) -> list[PublicLevelChange]:
        changes, self.changes = self.changes, []
        return changes

    # ------------------------------------------------------------------------------------------ orders

    def submit(self, order: BookOrder, *, position: int = 0, now_us: int = 0) -> MatchResult:
        """Match ``order`` against the book and rest, cancel or refuse what is left by its time in force.

        ``position``: its owner's signed position in this market (positive YES), for ``reduce_only``.
        Raises ``OrderRejected`` for a ``post_only`` order that would cross (the book is unchanged).
        """
        if not 0 < order.price < DOLLAR:
            raise OrderRejected("invalid_order", "price must lie strictly between 0 and 1")
        if order.initial_count <= 0:
            raise OrderRejected("invalid_order_size", "count must be positive")
        if order.post_only and self._crosses(order.side, order.price):
            raise OrderRejected("invalid_order", "post only cross", "post only cross")
        order.remaining_count = order.initial_count
        order.created_us = order.created_us or now_us
        order.last_update_us = now_us
        placement = MatchResult(order)
        if order.reduce_only:
            # Only what closes the position may trade: a bid closes NO (position < 0), an ask closes YES.
            closable = -position if order.side == "bid" else position
            if closable <= 0:
                self._finish(order, "canceled", "ReduceOnlyCancel", now_us)
                return placement
            order.remaining_count = min(order.remaining_count, closable)
        if order.time_in_force == "fill_or_kill" and self._fillable(order) < order.remaining_count:
            self._finish(order, "canceled", "", now_us)
            return placement
        self._match(order, placement, now_us)
        if order.status == "canceled":
            pass  # self-trade prevention stopped it
        elif order.remaining_count == 0:
            self._finish(order, "executed", "Trade", now_us)
        elif order.time_in_force != "good_till_canceled":
            self._finish(order, "canceled", order.last_update_reason, now_us)
        else:
            order.queue_seq = next(self._queue)
            self._rest(order)
        return placement

    def rest(self, order: BookOrder, *, now_us: int = 0) -> None:
        """Put ``order`` on the book as it is, without matching: liquidity replayed from a recorded stream,
        which is consistent by itself (a moment's cross while a snapshot is rebuilt must not trade)."""
        order.remaining_count = order.initial_count
        order.created_us = order.last_update_us = now_us
        order.queue_seq = next(self._queue)
        self._rest(order)

    def cancel(self, order_id: str, *, reason: str = "", now_us: int = 0) -> BookOrder:
        """Take a resting order off the book; raises KeyError if it is not resting."""
        order = self._orders[order_id]
        self._unrest(order)
        order.remaining_count = 0
        self._finish(order, "canceled", reason, now_us)
        return order

    def decrease(self, order_id: str, remaining: int, *, now_us: int = 0) -> BookOrder:
        """Lower a resting order's remaining count, keeping its place in the queue; 0 cancels it."""
        order = self._orders[order_id]
        if not 0 <= remaining <= order.remaining_count:
            raise OrderRejected("invalid_order_size", "an order can only be decreased")
        if remaining == 0:
            return self.cancel(order_id, reason="Decrease", now_us=now_us)
        self._change_level(order.side, order.price, remaining - order.remaining_count)
        order.remaining_count = remaining
        order.last_update_us = now_us
        order.last_update_reason = "Decrease"
        return order

    def amend(self, order_id: str, *, price: int, total_count: int, position: int = 0, now_us: int = 0) -> MatchResult:
        """Change a resting order's price and total count (filled plus the new remaining). Reducing the size
        keeps its queue place; a new price or a larger size goes to the back, and may cross and fill."""
        order = self._orders[order_id]
        remaining = total_count - order.fill_count
        if remaining <= 0:
            raise OrderRejected("invalid_order_size", "the new count must exceed what has filled")
        if price == order.price and remaining <= order.remaining_count:
            self.decrease(order_id, remaining, now_us=now_us)
            order.last_update_reason = "Amend"
            return MatchResult(order)
        if order.post_only and self._crosses(order.side, price):
            raise OrderRejected("invalid_order", "post only cross", "post only cross")
        self._unrest(order)
        order.price = price
        order.initial_count = total_count
        order.remaining_count = remaining
        order.last_update_us = now_us
        order.last_update_reason = "Amend"
        placement = MatchResult(order)
        self._match(order, placement, now_us)
        if order.status == "canceled":
            pass  # self-trade prevention stopped it
        elif order.remaining_count == 0:
            self._finish(order, "executed", "Trade", now_us)
        else:
            order.queue_seq = next(self._queue)
            self._rest(order)
        return placement

    # ------------------------------------------------------------------------------------------ matching

    def _crosses(self, side: BookSide, price: int) -> bool:
        opposite = self.best("ask" if side == "bid" else "bid")
        return opposite is not None and (opposite <= price if side == "bid" else opposite >= price)

    def _crossing_levels(self, order: BookOrder) -> Iterator[deque[BookOrder]]:
        """The opposite side's queues the order crosses, best price first (a live view: levels emptied
        while iterating are skipped)."""
        opposite: BookSide = "ask" if order.side == "bid" else "bid"
        prices = list(self._prices[opposite])
        if opposite == "bid":
            prices.reverse()
        for price in prices:
            if (price > order.price) if opposite == "ask" else (price < order.price):
                return
            queue = self._levels[opposite].get(price)
            if queue:
                yield queue

    def _fillable(self, order: BookOrder) -> int:
        """How much other owners' resting orders could fill of ``order`` (for fill-or-kill)."""
        total = 0
        for queue in self._crossing_levels(order):
            total += sum(o.remaining_count for o in queue if o.owner != order.owner)
            if total >= order.remaining_count:
                break
        return total

    def _match(self, order: BookOrder, placement: MatchResult, now_us: int) -> None:
        for queue in self._crossing_levels(order):
            while queue and order.remaining_count:
                resting = queue[0]
                if resting.owner == order.owner:
                    if order.self_trade_prevention == "maker":
                        placement.cancelled.append(
                            self.cancel(resting.order_id, reason="SelfTradeCancel", now_us=now_us)
                        )
                        continue
                    order.remaining_count = 0
                    self._finish(order, "canceled", "SelfTradeCancel", now_us)
                    return
                self._trade(order, resting, placement, now_us)
            if not order.remaining_count:
                return

    def _trade(self, taker: BookOrder, maker: BookOrder, placement: MatchResult, now_us: int) -> None:
        count = min(taker.remaining_count, maker.remaining_count)
        price = maker.price  # trades happen at the resting order's price
        trade_id = f"{self.ticker}-T{next(self._trades)}"
        taker_fee = trade_fee(count, price, self.taker_fee_rate)
        maker_fee = trade_fee(count, price, self.maker_fee_rate) if self.maker_fee_rate else 0
        taker.remaining_count -= count
        taker.fill_count += count
        taker.taker_fill_cost += outcome_cost(taker.side, count, price)
        taker.taker_fees += taker_fee
        maker.remaining_count -= count
        maker.fill_count += count
        maker.maker_fill_cost += outcome_cost(maker.side, count, price)
        maker.maker_fees += maker_fee
        maker.last_update_us = now_us
        maker.last_update_reason = "Trade"
        self._change_level(maker.side, price, -count)
        if maker.remaining_count == 0:
            self._unrest(maker, level_changed=True)
            self._finish(maker, "executed", "Trade", now_us)
        placement.fills.append(
            BookFill(
                trade_id, taker.order_id, taker.owner, self.ticker, taker.side, price, count, True, taker_fee, now_us
            )
        )
        placement.fills.append(
            BookFill(
                trade_id, maker.order_id, maker.owner, self.ticker, maker.side, price, count, False, maker_fee, now_us
            )
        )

    # ------------------------------------------------------------------------------------------ the book

    def _rest(self, order: BookOrder) -> None:
        levels, prices = self._levels[order.side], self._prices[order.side]
        queue = levels.get(order.price)
        if queue is None:
            queue = levels[order.price] = deque()
            bisect.insort(prices, order.price)
        queue.append(order)
        self._orders[order.order_id] = order
        self._change_level(order.side, order.price, order.remaining_count)

    def _unrest(self, order: BookOrder, *, level_changed: bool = False) -> None:
        """Take a resting order out of its queue (``level_changed``: its size already left the level)."""
        levels, prices = self._levels[order.side], self._prices[order.side]
        queue = levels[order.price]
        queue.remove(order)
        del self._orders[order.order_id]
        if not level_changed and order.remaining_count:
            self._change_level(order.side, order.price, -order.remaining_count)
        if not queue:
            del levels[order.price]
            prices.pop(bisect.bisect_left(prices, order.price))

    def _change_level(self, side: BookSide, price: int, delta: int) -> None:
        if delta:
            if side == "bid":
                self.changes.append(PublicLevelChange("yes", price, delta))
            else:
                self.changes.append(PublicLevelChange("no", DOLLAR - price, delta))

    @staticmethod
    def _finish(order: BookOrder, status: OrderStatus, reason: str, now_us: int) -> None:
        order.status = status
        if status == "canceled":
            order.remaining_count = 0
        order.last_update_reason = reason
        order.last_update_us = now_us
