"""Strategies the tests run through the whole trader: plain and predictable, unlike the examples."""

from __future__ import annotations

from apps.kalshi.orderbook import TopOfBook
from apps.trader.core.trading.strategy import CONTRACT, DOLLAR, Strategy, StrategyContext

FED = "KXFED-26DEC-T4.25"
"""The first market of the built-in exchange."""


def under_the_book(ctx: StrategyContext, ticker: str) -> int:
    """A bid price 0.09 under the best bid: inside the default price band, out of the random walk's reach."""
    top = ctx.top(ticker)
    best = top.yes_bid[0] if top is not None and top.yes_bid is not None else DOLLAR // 2
    return max(DOLLAR // 100, best - 9 * DOLLAR // 100)


class RestingBids(Strategy):
    """One bid per market well under the book, so it rests and does not fill; ``size`` contracts each."""

    name = "resting-bids"

    async def on_start(self, ctx: StrategyContext) -> None:
        size = int(self.params.get("size", "1")) * CONTRACT
        for ticker in ctx.markets:
            if not ctx.open_orders(ticker):
                price = under_the_book(ctx, ticker)
                await ctx.place(ticker, "bid", price=price, count=size, reason="resting bid")


class Exploding(Strategy):
    """Rests a bid, then raises on the first book it sees."""

    name = "exploding"

    async def on_start(self, ctx: StrategyContext) -> None:
        if not ctx.open_orders():
            price = under_the_book(ctx, FED)
            await ctx.place(FED, "bid", price=price, count=CONTRACT, reason="before the bug")

    async def on_book(self, ctx: StrategyContext, ticker: str, top: TopOfBook) -> None:
        raise RuntimeError("the strategy has a bug")


class TakeOnce(Strategy):
    """Buys one contract of the first market at its best ask, immediate-or-cancel, once."""

    name = "take-once"

    async def on_start(self, ctx: StrategyContext) -> None:
        top = ctx.top(FED)
        if ctx.position(FED) == 0 and top is not None and top.yes_ask is not None:
            await ctx.place(FED, "bid", price=top.yes_ask[0], count=CONTRACT, time_in_force="immediate_or_cancel")
