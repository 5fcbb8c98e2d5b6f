"""The example taker: an immediate-or-cancel order across the spread when a price reaches its threshold."""

from __future__ import annotations

from typing import Any

import pytest

from apps.kalshi.fixedpoint import CONTRACT
from apps.kalshi.orderbook import TopOfBook
from apps.strategies.taker import Taker
from apps.trader.core.trading.strategy import StrategyParameterError
from tests.trading.context import MemoryContext, cents, describe

M = "KXTEST-A"
N = "KXTEST-B"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def taker(clock: Clock, **params: Any) -> Taker:
    strategy = Taker({"buy_below": "0.30", "sell_above": "0.70", **params})
    strategy.clock = clock
    return strategy


def quoted(ctx: MemoryContext, ticker: str, bid: int, ask: int) -> TopOfBook:
    """Set ``ticker``'s book to ``bid``/``ask`` cents and return its top, as the host would hand it over."""
    ctx.set_book(ticker, bids={cents(bid): 3 * CONTRACT}, asks={cents(ask): 3 * CONTRACT})
    top = ctx.top(ticker)
    assert top is not None
    return top


async def test_it_buys_yes_at_the_best_ask_when_the_ask_is_at_or_below_buy_below() -> None:
    ctx = MemoryContext([M])
    strategy = taker(Clock())

    await strategy.on_book(ctx, M, quoted(ctx, M, 25, 30))

    [order] = ctx.made("place")
    assert (order.ticker, order.side, order.yes_price, order.initial_count) == (M, "bid", cents(30), CONTRACT)
    assert order.time_in_force == "immediate_or_cancel"
    assert "0.3000" in order.reason


async def test_it_sells_yes_at_the_best_bid_when_the_bid_is_at_or_above_sell_above() -> None:
    ctx = MemoryContext([M])
    strategy = taker(Clock(), size="2")

    await strategy.on_book(ctx, M, quoted(ctx, M, 70, 75))

    assert describe(ctx.made("place")) == [("ask", cents(70), 2 * CONTRACT)]
    assert ctx.made("place")[0].time_in_force == "immediate_or_cancel"


async def test_it_does_nothing_between_the_thresholds() -> None:
    ctx = MemoryContext([M])
    strategy = taker(Clock())

    await strategy.on_book(ctx, M, quoted(ctx, M, 30, 31))
    await strategy.on_book(ctx, M, quoted(ctx, M, 69, 70))
    await strategy.on_book(ctx, M, TopOfBook(yes_bid=None, yes_ask=None))

    assert ctx.calls == []


async def test_it_waits_out_the_cooldown_in_each_market_before_trading_there_again() -> None:
    ctx = MemoryContext([M, N])
    clock = Clock()
    strategy = taker(clock, cooldown="5")
    cheap = quoted(ctx, M, 20, 25)

    await strategy.on_book(ctx, M, cheap)
    clock.now += 4.9
    await strategy.on_book(ctx, M, cheap)
    # Another market has a cooldown of its own.
    await strategy.on_book(ctx, N, quoted(ctx, N, 20, 25))
    assert [o.ticker for o in ctx.made("place")] == [M, N]

    clock.now += 0.1
    await strategy.on_book(ctx, M, cheap)
    assert [o.ticker for o in ctx.made("place")] == [M, N, M]


async def test_it_places_no_order_that_would_take_the_position_past_max_position() -> None:
    ctx = MemoryContext([M])
    clock = Clock()
    strategy = taker(clock, cooldown="0", max_position="3")

    ctx.set_position(M, 3 * CONTRACT)
    await strategy.on_book(ctx, M, quoted(ctx, M, 20, 25))
    assert ctx.calls == []

    ctx.set_position(M, -3 * CONTRACT)
    await strategy.on_book(ctx, M, quoted(ctx, M, 75, 80))
    assert ctx.calls == []

    # Selling shrinks a long position, so it is allowed at the maximum.
    ctx.set_position(M, 3 * CONTRACT)
    await strategy.on_book(ctx, M, quoted(ctx, M, 75, 80))
    assert describe(ctx.made("place")) == [("ask", cents(75), CONTRACT)]


async def test_it_trades_only_the_markets_named() -> None:
    ctx = MemoryContext([M, N])
    strategy = taker(Clock(), markets=[N])

    await strategy.on_book(ctx, M, quoted(ctx, M, 20, 25))
    await strategy.on_book(ctx, N, quoted(ctx, N, 20, 25))

    assert [o.ticker for o in ctx.made("place")] == [N]


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"sell_above": "0.70"}, "parameter 'buy_below' is required"),
        ({"buy_below": "0.30"}, "parameter 'sell_above' is required"),
        ({"buy_below": "0.70", "sell_above": "0.70"}, "parameter 'buy_below' must be under 'sell_above'"),
        ({"buy_below": "0.30", "sell_above": "0.70", "cooldown": "soon"}, "parameter 'cooldown' must be a number"),
        ({"buy_below": "0.30", "sell_above": "0.70", "cooldown": "-1"}, "parameter 'cooldown' must be a number"),
        ({"buy_below": "0.30", "sell_above": "0.70", "size": "0"}, "parameter 'size' must be more than 0"),
        ({"buy_below": "0.30", "sell_above": "0.70", "sell_below": "0.1"}, "unknown parameter 'sell_below'"),
    ],
)
def test_it_refuses_bad_parameters_naming_them(params: dict[str, Any], problem: str) -> None:
    with pytest.raises(StrategyParameterError, match="^" + problem):
        Taker(params)


def test_it_describes_its_parameters() -> None:
    assert Taker({"buy_below": "0.3", "sell_above": "0.7", "cooldown": 0.5}).describe() == {
        "buy_below": "0.3000",
        "sell_above": "0.7000",
        "size": "1.00",
        "max_position": "5.00",
        "cooldown": "0.5",
    }
