"""A taker: crosses the spread with an immediate-or-cancel order when a market's price reaches a threshold.

Parameters: ``buy_below`` buys YES when the best ask is at or below it, ``sell_above`` sells YES when the
best bid is at or above it (both required, dollar strings, ``buy_below`` under ``sell_above``), ``size``
contracts per order ("1"), ``max_position`` no order that would take the position past it ("5"),
``cooldown`` seconds between orders in one market ("2"), and optionally ``markets`` (a list of tickers;
every market of the trader by default).

The order takes the best price only: an immediate-or-cancel order at the best ask (or bid) fills what
rests there, and the exchange cancels the rest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from apps.kalshi.fixedpoint import format_price, format_size
from apps.kalshi.orderbook import TopOfBook
from apps.trader.core.trading.strategy import (
    BookSide,
    Strategy,
    StrategyContext,
    StrategyParameterError,
    check_known,
    count,
    price,
    tickers,
)


class Taker(Strategy):
    name = "taker"
    timer_interval = None

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        check_known(params, ("buy_below", "sell_above", "size", "max_position", "cooldown", "markets"))
        self.buy_below = price(params, "buy_below")
        self.sell_above = price(params, "sell_above")
        self.size = count(params, "size", "1")
        self.max_position = count(params, "max_position", "5")
        self.cooldown = _seconds(params, "cooldown", "2")
        self.markets = tickers(params)
        if self.buy_below >= self.sell_above:
            raise StrategyParameterError("parameter 'buy_below' must be under 'sell_above'")
        if self.size == 0:
            raise StrategyParameterError("parameter 'size' must be more than 0")
        self.clock: Callable[[], float] = time.monotonic
        self._quiet_until: dict[str, float] = {}

    def describe(self) -> dict[str, str]:
        shown = {
            "buy_below": format_price(self.buy_below),
            "sell_above": format_price(self.sell_above),
            "size": format_size(self.size),
            "max_position": format_size(self.max_position),
            "cooldown": f"{self.cooldown:g}",
        }
        if self.markets is not None:
            shown["markets"] = ", ".join(self.markets)
        return shown

    async def on_book(self, ctx: StrategyContext, ticker: str, top: TopOfBook) -> None:
        if self.markets is not None and ticker not in self.markets:
            return
        now = self.clock()
        if now < self._quiet_until.get(ticker, -math.inf):
            return
        position = ctx.position(ticker)
        side: BookSide
        if top.yes_ask is not None and top.yes_ask[0] <= self.buy_below and position + self.size <= self.max_position:
            side, at, why = (
                "bid",
                top.yes_ask[0],
                f"ask {format_price(top.yes_ask[0])} <= {format_price(self.buy_below)}",
            )
        elif (
            top.yes_bid is not None and top.yes_bid[0] >= self.sell_above and position - self.size >= -self.max_position
        ):
            side, at, why = (
                "ask",
                top.yes_bid[0],
                f"bid {format_price(top.yes_bid[0])} >= {format_price(self.sell_above)}",
            )
        else:
            return
        self._quiet_until[ticker] = now + self.cooldown
        await ctx.place(
            ticker,
            side,
            price=at,
            count=self.size,
            time_in_force="immediate_or_cancel",
            reason=f"taker: {'buy' if side == 'bid' else 'sell'} YES, {why}",
        )


def _seconds(params: Mapping[str, Any], name: str, default: str) -> float:
    raw = params.get(name, default)
    try:
        # Durations are not money: a float is exact enough.
        value = float(raw) if isinstance(raw, str | int | float) and not isinstance(raw, bool) else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise StrategyParameterError(f'parameter {name!r} must be a number of seconds such as "2" or "0.5"')
    return value
