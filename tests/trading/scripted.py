"""A scripted stand-in for the exchange's REST side, and builders of its orders, fills and messages.

Each call takes the next answer scripted for its method: a value, an exception to raise, or an async function
of the request (to deliver messages before the answer, or to hold the answer until the test lets it go). A
call with nothing scripted fails the test, so every request the code under test makes is one the test meant.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from apps.kalshi.portfolio import (
    AmendRequest,
    AmendResult,
    Balance,
    BookSide,
    CancelResult,
    KalshiFill,
    KalshiOrder,
    MarketPosition,
    OrderRequest,
    OrderStatus,
    Placement,
)
from apps.kalshi.privatemessages import FillMessage, UserOrderMessage, UserOrderStatus
from apps.kalshi.resterrors import KalshiRestError
from apps.trader.core.trading.records import FillRecord

T = "KXTEST-26DEC-T1"
_ids = itertools.count(1)

Answer = Any
"""A value, an exception instance, or an async function of the call's argument returning the value."""


def rest_error(status: int, code: str = "", *, after_lost_answer: bool = False) -> KalshiRestError:
    return KalshiRestError(
        status, "/portfolio/events/orders", "the exchange said no", code=code, after_lost_answer=after_lost_answer
    )


class ScriptedClient:
    """OrderClient and TradingClient: answers what the test scripted, records what it was asked."""

    def __init__(self) -> None:
        self.script: dict[str, deque[Answer]] = defaultdict(deque)
        self.calls: list[tuple[str, Any]] = []
        self.fill_list: list[KalshiFill] = []
        """What ``fills()`` lists (every call, whatever the filters)."""
        self.fill_reads: list[dict[str, Any]] = []
        self.position_list: list[MarketPosition] = []
        self.balance = Balance(balance=1_000_000_000, portfolio_value=0)
        self.closed = False

    def answer(self, method: str, *answers: Answer) -> None:
        self.script[method].extend(answers)

    def asked(self, method: str) -> list[Any]:
        return [argument for name, argument in self.calls if name == method]

    async def _next(self, method: str, argument: Any) -> Any:
        self.calls.append((method, argument))
        assert self.script[method], f"{method}({argument!r}) was not expected"
        answer = self.script[method].popleft()
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return await answer(argument)
        return answer

    async def create_order(self, request: OrderRequest) -> Placement:
        result: Placement = await self._next("create_order", request)
        return result

    async def amend_order(self, request: AmendRequest) -> AmendResult:
        result: AmendResult = await self._next("amend_order", request)
        return result

    async def cancel_order(self, order_id: str) -> CancelResult:
        result: CancelResult = await self._next("cancel_order", order_id)
        return result

    async def get_order(self, order_id: str) -> KalshiOrder:
        result: KalshiOrder = await self._next("get_order", order_id)
        return result

    async def find_order_by_client_id(self, client_order_id: str, *, ticker: str | None = None) -> KalshiOrder | None:
        result: KalshiOrder | None = await self._next("find_order_by_client_id", client_order_id)
        return result

    async def fills(self, **filters: Any) -> AsyncIterator[KalshiFill]:
        self.fill_reads.append(filters)
        for fill in list(self.fill_list):
            yield fill

    async def positions(self, **filters: Any) -> AsyncIterator[MarketPosition]:
        for position in list(self.position_list):
            yield position

    async def get_balance(self) -> Balance:
        return self.balance

    async def aclose(self) -> None:
        self.closed = True


def held(answer: Answer) -> tuple[Callable[[Any], Awaitable[Any]], Callable[[], None], list[Any]]:
    """An answer that waits until ``release()``: (the scripted answer, release, the requests that arrived)."""
    gate = asyncio.Event()
    arrived: list[Any] = []

    async def waiting(argument: Any) -> Any:
        arrived.append(argument)
        await gate.wait()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return waiting, gate.set, arrived


def placement(order_id: str, *, fill_count: int = 0, remaining_count: int = 0, recovered: bool = False) -> Placement:
    return Placement(order_id, None, fill_count, remaining_count, recovered=recovered)


def order(
    order_id: str,
    client_order_id: str,
    *,
    status: OrderStatus = "resting",
    side: BookSide = "bid",
    price: int = 4000,
    initial: int = 1000,
    filled: int = 0,
    remaining: int | None = None,
    fees: int = 0,
    ticker: str = T,
) -> KalshiOrder:
    """An order as GET /portfolio/orders gives it; ``remaining`` defaults to what is not filled (0 when final)."""
    if remaining is None:
        remaining = initial - filled if status == "resting" else 0
    return KalshiOrder(
        order_id=order_id,
        user_id="user-1",
        client_order_id=client_order_id,
        ticker=ticker,
        outcome_side="yes" if side == "bid" else "no",
        book_side=side,
        type="limit",
        status=status,
        yes_price=price,
        no_price=10_000 - price,
        fill_count=filled,
        remaining_count=remaining,
        initial_count=initial,
        taker_fill_cost=0,
        maker_fill_cost=0,
        taker_fees=fees,
        maker_fees=0,
    )


def user_order(
    order_id: str,
    client_order_id: str,
    *,
    status: UserOrderStatus = "resting",
    side: BookSide = "bid",
    price: int = 4000,
    initial: int = 1000,
    filled: int = 0,
    remaining: int | None = None,
    taker_fees: int = 0,
    maker_fees: int = 0,
    ticker: str = T,
) -> UserOrderMessage:
    if remaining is None:
        remaining = initial - filled if status == "resting" else 0
    return UserOrderMessage(
        order_id=order_id,
        user_id="user-1",
        ticker=ticker,
        status=status,
        outcome_side="yes" if side == "bid" else "no",
        book_side=side,
        yes_price=price,
        fill_count=filled,
        remaining_count=remaining,
        initial_count=initial,
        taker_fill_cost=0,
        maker_fill_cost=0,
        taker_fees=taker_fees,
        maker_fees=maker_fees,
        client_order_id=client_order_id,
        created_ts_ms=0,
        exchange_index=0,
        last_update_reason="Trade" if filled else None,
    )


def fill_record(
    order_id: str,
    client_order_id: str,
    count: int,
    *,
    fee: int = 0,
    price: int = 4000,
    side: BookSide = "bid",
    trade_id: str = "",
    is_taker: bool = False,
) -> FillRecord:
    return FillRecord(
        trade_id=trade_id or f"trade-{next(_ids)}",
        order_id=order_id,
        client_order_id=client_order_id,
        ticker=T,
        side=side,
        yes_price=price,
        count=count,
        fee=fee,
        is_taker=is_taker,
        post_position=0,
        ts_ms=0,
        received_us=0,
    )


def fill_message(
    order_id: str,
    count: int,
    *,
    client_order_id: str | None = None,
    fee: int = 0,
    price: int = 4000,
    side: BookSide = "bid",
    trade_id: str = "",
    is_taker: bool = False,
    ticker: str = T,
) -> FillMessage:
    return FillMessage(
        trade_id=trade_id or f"trade-{next(_ids)}",
        order_id=order_id,
        market_ticker=ticker,
        outcome_side="yes" if side == "bid" else "no",
        book_side=side,
        yes_price=price,
        count=count,
        fee_cost=fee,
        is_taker=is_taker,
        post_position=0,
        ts_ms=0,
        exchange_index=0,
        client_order_id=client_order_id,
    )


def rest_fill(
    order_id: str, count: int, *, trade_id: str, fee: int = 0, price: int = 4000, side: BookSide = "bid"
) -> KalshiFill:
    """A fill as GET /portfolio/fills lists it (no client_order_id; ``fill_id`` is the message's trade_id)."""
    return KalshiFill(
        fill_id=trade_id,
        order_id=order_id,
        ticker=T,
        outcome_side="yes" if side == "bid" else "no",
        book_side=side,
        count=count,
        yes_price=price,
        no_price=10_000 - price,
        is_taker=False,
        fee_cost=fee,
    )
