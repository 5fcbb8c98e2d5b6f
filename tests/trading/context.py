"""An in-memory StrategyContext for strategy tests: books and positions the test sets, orders it records.

Resting orders sit in the book as an exchange's would (an ask at p as a NO bid at 1 - p), and a post-only
order that would cross is rejected, so a strategy's view of the book includes its own quotes.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Literal

from apps.kalshi.fixedpoint import DOLLAR
from apps.kalshi.orderbook import OrderBook, TopOfBook
from apps.kalshi.portfolio import BookSide, TimeInForce
from apps.trader.core.trading.records import OrderRecord, OrderState, PositionRecord

WORKING = frozenset({"submitted", "resting", "unknown"})


class MemoryContext:
    def __init__(self, markets: list[str]) -> None:
        self._markets = list(markets)
        self.books: dict[str, OrderBook] = {}
        self.held: dict[str, int] = {}
        self.orders: dict[str, OrderRecord] = {}
        """Every order by client order id, as it stands now; insertion order is placement order."""
        self.calls: list[tuple[str, OrderRecord]] = []
        """("place" | "amend" | "cancel", the order as answered), in the order they were made."""
        self.lines: list[tuple[str, str]] = []
        self.answer: OrderState | None = None
        """When set, every place and amend is answered with this status instead of resting."""
        self._ids = itertools.count(1)

    # -- what the test sets ---------------------------------------------------------------------------------

    def set_book(self, ticker: str, *, bids: dict[int, int], asks: dict[int, int]) -> None:
        """Someone else's YES bids and asks ({price: size}); the context's resting orders are added on top."""
        book = OrderBook(ticker)
        book.yes = dict(bids)
        book.no = {DOLLAR - p: size for p, size in asks.items()}
        for order in self.orders.values():
            if order.ticker == ticker and order.status == "resting":
                self._rest(book, order, order.remaining_count)
        self.books[ticker] = book

    def set_position(self, ticker: str, position: int) -> None:
        self.held[ticker] = position

    def add_resting(self, ticker: str, side: BookSide, price: int, count: int) -> OrderRecord:
        """An order already working when the strategy starts (as after a reconnect)."""
        order = self._record(ticker, side, price, count, "good_till_canceled", "resting", "found on the exchange")
        self.orders[order.client_order_id] = order
        if ticker in self.books:
            self._rest(self.books[ticker], order, count)
        return order

    def made(self, kind: str) -> list[OrderRecord]:
        return [order for call, order in self.calls if call == kind]

    # -- StrategyContext ------------------------------------------------------------------------------------

    @property
    def markets(self) -> list[str]:
        return list(self._markets)

    @property
    def balance(self) -> int:
        return 1_000_000_000

    def top(self, ticker: str) -> TopOfBook | None:
        book = self.books.get(ticker)
        return book.top() if book is not None else None

    def book(self, ticker: str) -> OrderBook | None:
        book = self.books.get(ticker)
        return book.copy() if book is not None else None

    def position(self, ticker: str) -> int:
        return self.held.get(ticker, 0)

    def positions(self) -> dict[str, PositionRecord]:
        return {
            ticker: PositionRecord(ticker, held, 0, 0, 0, None, None, 0) for ticker, held in self.held.items() if held
        }

    def open_orders(self, ticker: str | None = None) -> list[OrderRecord]:
        return [o for o in self.orders.values() if o.status in WORKING and (ticker is None or o.ticker == ticker)]

    async def place(
        self,
        ticker: str,
        side: BookSide,
        *,
        price: int,
        count: int,
        time_in_force: TimeInForce = "good_till_canceled",
        post_only: bool = False,
        reduce_only: bool = False,
        reason: str = "",
    ) -> OrderRecord:
        status: OrderState = self.answer or "resting"
        book = self.books.get(ticker)
        if status == "resting" and post_only and book is not None and self._crosses(book.top(), side, price):
            status = "rejected"
        elif status == "resting" and time_in_force != "good_till_canceled":
            status = "canceled"
        order = self._record(ticker, side, price, count, time_in_force, status, reason)
        self.orders[order.client_order_id] = order
        if status == "resting" and book is not None:
            self._rest(book, order, count)
        self.calls.append(("place", order))
        return order

    async def amend(self, order: OrderRecord | str, *, price: int, count: int, reason: str = "") -> OrderRecord:
        current = self.orders[order if isinstance(order, str) else order.client_order_id]
        assert current.status == "resting", f"amend of a {current.status} order"
        if self.answer is not None:
            answered = replace(current, status=self.answer, reason=reason)
            self.calls.append(("amend", answered))
            return answered
        book = self.books.get(current.ticker)
        if book is not None:
            self._rest(book, current, -current.remaining_count)
        moved = replace(
            current, yes_price=price, initial_count=count, remaining_count=count - current.fill_count, reason=reason
        )
        if book is not None:
            self._rest(book, moved, moved.remaining_count)
        self.orders[moved.client_order_id] = moved
        self.calls.append(("amend", moved))
        return moved

    async def cancel(self, order: OrderRecord | str, *, reason: str = "") -> OrderRecord:
        current = self.orders[order if isinstance(order, str) else order.client_order_id]
        book = self.books.get(current.ticker)
        if book is not None and current.status == "resting":
            self._rest(book, current, -current.remaining_count)
        cancelled = replace(current, status="canceled", remaining_count=0, reason=reason)
        self.orders[cancelled.client_order_id] = cancelled
        self.calls.append(("cancel", cancelled))
        return cancelled

    async def cancel_all(self, ticker: str | None = None, *, reason: str = "") -> None:
        for order in self.open_orders(ticker):
            await self.cancel(order, reason=reason)

    def log(self, message: str, *, level: Literal["info", "warning", "error"] = "info") -> None:
        self.lines.append((level, message))

    # -- the exchange's part --------------------------------------------------------------------------------

    def _record(
        self, ticker: str, side: BookSide, price: int, count: int, tif: TimeInForce, status: OrderState, reason: str
    ) -> OrderRecord:
        number = next(self._ids)
        return OrderRecord(
            client_order_id=f"c{number}",
            order_id=f"o{number}" if status not in ("refused",) else "",
            ticker=ticker,
            side=side,
            yes_price=price,
            initial_count=count,
            fill_count=0,
            remaining_count=count if status in WORKING else 0,
            time_in_force=tif,
            status=status,
            fees=0,
            reason=reason,
            strategy="test",
            at_us=0,
            error_code="max_open_orders" if status == "refused" else "",
        )

    @staticmethod
    def _rest(book: OrderBook, order: OrderRecord, delta: int) -> None:
        levels, level = (book.yes, order.yes_price) if order.side == "bid" else (book.no, DOLLAR - order.yes_price)
        size = levels.get(level, 0) + delta
        if size > 0:
            levels[level] = size
        else:
            levels.pop(level, None)

    @staticmethod
    def _crosses(top: TopOfBook, side: BookSide, price: int) -> bool:
        if side == "bid":
            return top.yes_ask is not None and price >= top.yes_ask[0]
        return top.yes_bid is not None and price <= top.yes_bid[0]


def cents(value: int) -> int:
    """A price in whole cents, in 1/10,000 dollar."""
    return value * DOLLAR // 100


def describe(orders: list[OrderRecord]) -> list[tuple[str, int, int]]:
    """(side, price, count) of each order, for readable assertions."""
    return [(o.side, o.yes_price, o.initial_count) for o in orders]
