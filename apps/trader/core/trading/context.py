"""A strategy's view of the trading engine: the ``StrategyContext`` it is handed, under its own name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from apps.kalshi.orderbook import OrderBook, TopOfBook
from apps.kalshi.portfolio import BookSide, TimeInForce
from apps.trader.core.trading.accountsync import AccountSync
from apps.trader.core.trading.ledger import Ledger
from apps.trader.core.trading.orders import OrderManager
from apps.trader.core.trading.records import OrderRecord, PositionRecord
from apps.trader.core.trading.risk import OrderIntent


class TradingDesk(Protocol):
    """What a strategy's context asks of the trading engine."""

    ledger: Ledger
    orders: OrderManager
    account: AccountSync
    console: Callable[..., None]

    def markets(self) -> list[str]: ...

    def top(self, ticker: str) -> TopOfBook | None: ...

    def book(self, ticker: str) -> OrderBook | None: ...

    def positions(self) -> dict[str, PositionRecord]: ...

    async def place(self, intent: OrderIntent, *, strategy: str, reason: str = "") -> OrderRecord: ...

    async def amend(
        self, order: OrderRecord, *, price: int, count: int, strategy: str, reason: str = ""
    ) -> OrderRecord: ...

    async def cancel(self, order: OrderRecord | str, *, reason: str) -> OrderRecord | None: ...


class EngineContext:
    """A strategy's view of the engine: its own orders, under its own name."""

    def __init__(self, engine: TradingDesk, name: str) -> None:
        self._engine = engine
        self._name = name

    @property
    def markets(self) -> list[str]:
        return self._engine.markets()

    @property
    def balance(self) -> int:
        balance = self._engine.account.balance
        return balance.balance if balance is not None else 0

    def top(self, ticker: str) -> TopOfBook | None:
        return self._engine.top(ticker)

    def book(self, ticker: str) -> OrderBook | None:
        return self._engine.book(ticker)

    def position(self, ticker: str) -> int:
        return self._engine.ledger.position(ticker)

    def positions(self) -> dict[str, PositionRecord]:
        return self._engine.positions()

    def open_orders(self, ticker: str | None = None) -> list[OrderRecord]:
        return self._engine.orders.working(strategy=self._name, ticker=ticker)

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
        intent = OrderIntent(
            ticker=ticker,
            side=side,
            yes_price=price,
            count=count,
            time_in_force=time_in_force,
            post_only=post_only,
            reduce_only=reduce_only,
        )
        return await self._engine.place(intent, strategy=self._name, reason=reason)

    async def amend(self, order: OrderRecord | str, *, price: int, count: int, reason: str = "") -> OrderRecord:
        record = self._own(order)
        return await self._engine.amend(record, price=price, count=count, strategy=self._name, reason=reason)

    async def cancel(self, order: OrderRecord | str, *, reason: str = "") -> OrderRecord:
        record = self._own(order)
        result = await self._engine.cancel(record, reason=reason or f"by {self._name}")
        assert result is not None
        return result

    async def cancel_all(self, ticker: str | None = None, *, reason: str = "") -> None:
        for order in self.open_orders(ticker):
            await self._engine.cancel(order, reason=reason or f"by {self._name}")

    def log(self, message: str, *, level: Literal["info", "warning", "error"] = "info") -> None:
        self._engine.console(level, f"[{self._name}] {message}")

    def _own(self, order: OrderRecord | str) -> OrderRecord:
        client_order_id = order if isinstance(order, str) else order.client_order_id
        record = self._engine.orders.get(client_order_id)
        if record is None or record.strategy != self._name:
            raise ValueError(f"order {client_order_id} is not one of {self._name}'s orders")
        return record
