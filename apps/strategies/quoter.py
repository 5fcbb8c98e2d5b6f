"""A two-sided quoter: one post-only bid and one post-only ask around each market's mid, skewed by inventory.

Parameters (strings, exact): ``spread`` full width of the quote (default "0.04"), ``size`` contracts per
quote ("1"), ``max_position`` the side that would take the position past it is not quoted ("5"), ``skew``
the shift of both quotes per contract held ("0.01": long YES moves both quotes lower, short moves them
higher), ``requote`` the least difference worth moving a quote for ("0.01"), ``unwind_above`` a position
(either way) past which the quoter takes liquidity to come back to it (off by default), and optionally
``markets`` (a list of tickers; every market of the trader by default).

Unwinding sends an immediate-or-cancel, reduce-only order at the best price of the rest of the book for
the part of the position above ``unwind_above``: the skew waits for the market to come to the quotes, an
unwind pays the spread to shed inventory at once.

The mid is taken from the book without the quoter's own resting quotes: otherwise the quotes would set
the mid they are placed around, and the skew would walk them across the book. Quotes sit on whole cents
(valid on every Kalshi price grid), within 0.01..0.99, and never cross the rest of the book. A quote moves
by amend, not cancel and place; the quoter keeps no order state of its own, so after a reconnect it finds
its quotes in ``ctx.open_orders()`` and places none twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from apps.kalshi.fixedpoint import format_price, format_size
from apps.kalshi.orderbook import TopOfBook
from apps.trader.core.trading.strategy import (
    CONTRACT,
    DOLLAR,
    BookSide,
    FillRecord,
    OrderRecord,
    Strategy,
    StrategyContext,
    StrategyParameterError,
    check_known,
    count,
    price,
    tickers,
)

TICK = DOLLAR // 100
"""Quotes are whole cents."""
LOWEST, HIGHEST = TICK, DOLLAR - TICK

RETRY_AFTER = 1.0
"""Seconds a side waits after a refused or rejected quote, so a standing refusal is not retried per book."""

_FINAL = frozenset({"executed", "canceled", "rejected", "refused"})


class Quoter(Strategy):
    name = "quoter"
    timer_interval = 1.0

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        check_known(params, ("spread", "size", "max_position", "skew", "requote", "unwind_above", "markets"))
        self.spread = price(params, "spread", "0.04")
        self.size = count(params, "size", "1")
        self.max_position = count(params, "max_position", "5")
        self.skew = price(params, "skew", "0.01")
        self.requote = price(params, "requote", "0.01")
        self.unwind_above = count(params, "unwind_above") if "unwind_above" in params else None
        self.markets = tickers(params)
        if self.spread == 0:
            raise StrategyParameterError("parameter 'spread' must be more than 0")
        if self.size == 0:
            raise StrategyParameterError("parameter 'size' must be more than 0")
        if self.max_position < self.size:
            raise StrategyParameterError("parameter 'max_position' must be at least 'size'")
        self.clock: Callable[[], float] = time.monotonic
        self._retry_at: dict[tuple[str, str], float] = {}
        """When a market's side (or its unwind) may try again after a refusal, by (ticker, side or "unwind")."""

    def describe(self) -> dict[str, str]:
        shown = {key: format_price(getattr(self, key)) for key in ("spread", "skew", "requote")}
        shown |= {key: format_size(getattr(self, key)) for key in ("size", "max_position")}
        if self.unwind_above is not None:
            shown["unwind_above"] = format_size(self.unwind_above)
        if self.markets is not None:
            shown["markets"] = ", ".join(self.markets)
        return shown

    async def on_start(self, ctx: StrategyContext) -> None:
        for ticker in self._markets(ctx):
            await self.requote_market(ctx, ticker)

    async def on_book(self, ctx: StrategyContext, ticker: str, top: TopOfBook) -> None:
        if self.markets is None or ticker in self.markets:
            await self.requote_market(ctx, ticker)

    async def on_fill(self, ctx: StrategyContext, fill: FillRecord) -> None:
        # The position moved: the skew and the max_position sides with it.
        await self.requote_market(ctx, fill.ticker)

    async def on_order(self, ctx: StrategyContext, order: OrderRecord) -> None:
        if order.status in _FINAL:
            await self.requote_market(ctx, order.ticker)

    async def on_timer(self, ctx: StrategyContext) -> None:
        for ticker in self._markets(ctx):
            await self.requote_market(ctx, ticker)

    def _markets(self, ctx: StrategyContext) -> list[str]:
        return self.markets if self.markets is not None else ctx.markets

    def wanted(self, ctx: StrategyContext, ticker: str) -> tuple[int | None, int | None, str] | None:
        """The bid and ask to quote (None for a side not to quote) and why; None when the book gives no mid."""
        others = self._others_top(ctx, ticker)
        if others is None:
            return None
        best_bid, best_ask = others
        mid = (best_bid + best_ask) // 2
        position = ctx.position(ticker)
        center = mid - self.skew * position // CONTRACT
        half = self.spread // 2
        # Post-only quotes that would cross are refused by the exchange: keep behind the rest of the book.
        bid = min(_clamp(_down(center - half)), _down(best_ask - TICK))
        ask = max(_clamp(_up(center + self.spread - half)), _up(best_bid + TICK))
        quote_bid = bid >= LOWEST and position + self.size <= self.max_position
        quote_ask = ask <= HIGHEST and position - self.size >= -self.max_position
        why = f"mid {format_price(mid)}, position {format_size(position)} of at most {format_size(self.max_position)}"
        return (bid if quote_bid else None), (ask if quote_ask else None), why

    async def requote_market(self, ctx: StrategyContext, ticker: str) -> None:
        """Bring ``ticker``'s quotes to where they should be: place, amend or cancel, each only if needed."""
        wanted = self.wanted(ctx, ticker)
        if wanted is None:
            return
        bid, ask, why = wanted
        await self._unwind(ctx, ticker)
        orders = ctx.open_orders(ticker)
        await self._quote(ctx, ticker, "bid", bid, [o for o in orders if o.side == "bid"], why)
        await self._quote(ctx, ticker, "ask", ask, [o for o in orders if o.side == "ask"], why)

    async def _quote(
        self, ctx: StrategyContext, ticker: str, side: BookSide, wanted: int | None, mine: list[OrderRecord], why: str
    ) -> None:
        for extra in mine[1:]:
            if extra.status == "resting":
                await ctx.cancel(extra, reason=f"quoter: one {side} quote in {ticker}")
        quote = mine[0] if mine else None
        if wanted is None:
            if quote is not None and quote.status == "resting":
                await ctx.cancel(quote, reason=f"quoter: no {side} wanted in {ticker} ({why})")
            return
        if self.clock() < self._retry_at.get((ticker, side), float("-inf")):
            return
        if quote is None:
            answer = await ctx.place(
                ticker,
                side,
                price=wanted,
                count=self.size,
                post_only=True,
                reason=f"quoter: {side} {format_price(wanted)} ({why})",
            )
        elif quote.status != "resting" or quote.yes_price == wanted or abs(quote.yes_price - wanted) < self.requote:
            # Not answered yet (nothing to amend), or close enough.
            return
        else:
            answer = await ctx.amend(
                quote,
                price=wanted,
                count=quote.fill_count + self.size,
                reason=f"quoter: {side} {format_price(quote.yes_price)} -> {format_price(wanted)} ({why})",
            )
        if answer.status in ("refused", "rejected"):
            self._retry_at[(ticker, side)] = self.clock() + RETRY_AFTER

    async def _unwind(self, ctx: StrategyContext, ticker: str) -> None:
        """Take the rest of the book for the part of the position above ``unwind_above``."""
        position = ctx.position(ticker)
        if self.unwind_above is None or abs(position) <= self.unwind_above:
            return
        if self.clock() < self._retry_at.get((ticker, "unwind"), float("-inf")):
            return
        others = self._others_top(ctx, ticker)
        if others is None:
            return
        best_bid, best_ask = others
        # Long YES sells YES into the best bid; short (long NO) buys YES at the best ask.
        side: BookSide = "ask" if position > 0 else "bid"
        at = best_bid if position > 0 else best_ask
        excess = abs(position) - self.unwind_above
        self._retry_at[(ticker, "unwind")] = self.clock() + RETRY_AFTER
        await ctx.place(
            ticker,
            side,
            price=at,
            count=excess,
            time_in_force="immediate_or_cancel",
            reduce_only=True,
            reason=f"quoter: unwind {format_size(excess)} of {format_size(position)} above "
            f"{format_size(self.unwind_above)} at {format_price(at)}",
        )

    def _others_top(self, ctx: StrategyContext, ticker: str) -> tuple[int, int] | None:
        """The best YES bid and ask of everyone but this quoter; None unless both sides have some."""
        book = ctx.book(ticker)
        if book is None:
            return None
        yes, no = dict(book.yes), dict(book.no)
        for order in ctx.open_orders(ticker):
            if order.status != "resting":
                continue
            # An ask sells YES at p: it rests as a NO bid at 1 - p.
            levels, level = (yes, order.yes_price) if order.side == "bid" else (no, DOLLAR - order.yes_price)
            # The book may not show the order yet (or any more): never below nothing.
            left = levels.get(level, 0) - order.remaining_count
            if left > 0:
                levels[level] = left
            else:
                levels.pop(level, None)
        if not yes or not no:
            return None
        return max(yes), DOLLAR - max(no)


def _down(value: int) -> int:
    return value - value % TICK


def _up(value: int) -> int:
    return -_down(-value)


def _clamp(value: int) -> int:
    return min(max(value, LOWEST), HIGHEST)
