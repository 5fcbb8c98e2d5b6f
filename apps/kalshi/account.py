"""The account as the trader knows it: open orders, positions and balance, kept from REST snapshots and the
private channels (an ``AccountListener`` for ``PrivateFeed``), for a strategy to read.

A snapshot replaces everything; a ``user_order`` message replaces its order (and removes it once it is no
longer resting); a ``market_position`` message replaces its position. Fills are kept in order as they come.
The balance changes only with a snapshot or ``set_balance``: no private channel carries it.
"""

from __future__ import annotations

from dataclasses import dataclass

from apps.kalshi.feed import FeedEvent
from apps.kalshi.portfolio import Balance, BookSide, KalshiOrder, MarketPosition
from apps.kalshi.privatemessages import FillMessage, MarketPositionMessage, PrivateMessage, UserOrderMessage
from apps.kalshi.trading import AccountSnapshot


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """A resting order: YES price in 1/10,000 dollar, counts in 1/100 contract."""

    order_id: str
    client_order_id: str
    ticker: str
    book_side: BookSide
    yes_price: int
    remaining_count: int
    fill_count: int

    @classmethod
    def from_order(cls, order: KalshiOrder | UserOrderMessage) -> OpenOrder:
        return cls(
            order_id=order.order_id,
            client_order_id=order.client_order_id,
            ticker=order.ticker,
            book_side=order.book_side,
            yes_price=order.yes_price,
            remaining_count=order.remaining_count,
            fill_count=order.fill_count,
        )


@dataclass(frozen=True, slots=True)
class Holding:
    """A market position: signed count (+ YES, - NO), realized P&L and fees in micro-dollars."""

    ticker: str
    position: int
    realized_pnl: int
    fees_paid: int

    @classmethod
    def from_position(cls, position: MarketPosition | MarketPositionMessage) -> Holding:
        ticker = position.ticker if isinstance(position, MarketPosition) else position.market_ticker
        return cls(ticker, position.position, position.realized_pnl, position.fees_paid)


class AccountState:
    """Open orders by id, holdings by ticker, the balance and the fills seen since the last snapshot."""

    def __init__(self) -> None:
        self.open_orders: dict[str, OpenOrder] = {}
        self.holdings: dict[str, Holding] = {}
        self.balance: Balance | None = None
        self.fills: list[FillMessage] = []
        self.snapshots = 0

    def orders_in(self, ticker: str) -> list[OpenOrder]:
        return [o for o in self.open_orders.values() if o.ticker == ticker]

    def position(self, ticker: str) -> int:
        holding = self.holdings.get(ticker)
        return holding.position if holding is not None else 0

    def set_balance(self, balance: Balance) -> None:
        self.balance = balance

    async def on_account_snapshot(self, snapshot: AccountSnapshot) -> None:
        self.open_orders = {o.order_id: OpenOrder.from_order(o) for o in snapshot.open_orders if o.status == "resting"}
        self.holdings = {p.ticker: Holding.from_position(p) for p in snapshot.positions}
        self.balance = snapshot.balance
        self.fills = []
        self.snapshots += 1

    async def on_private_message(self, message: PrivateMessage) -> None:
        if isinstance(message, UserOrderMessage):
            if message.status == "resting" and message.remaining_count > 0:
                self.open_orders[message.order_id] = OpenOrder.from_order(message)
            else:
                self.open_orders.pop(message.order_id, None)
        elif isinstance(message, MarketPositionMessage):
            self.holdings[message.market_ticker] = Holding.from_position(message)
        else:
            self.fills.append(message)

    async def on_feed_event(self, event: FeedEvent) -> None:
        """Connection news changes nothing here: the snapshot after the reconnect does."""
