"""The example quoter: two post-only quotes around the mid, skewed by inventory, moved by amend."""

from __future__ import annotations

from typing import Any

import pytest

from apps.kalshi.fixedpoint import CONTRACT
from apps.strategies.quoter import Quoter
from apps.trader.core.trading.records import FillRecord
from apps.trader.core.trading.strategy import StrategyParameterError
from tests.trading.context import MemoryContext, cents, describe

M = "KXTEST-A"


def quoter(**params: Any) -> Quoter:
    strategy = Quoter(params)
    strategy.clock = lambda: 0.0
    return strategy


def market(bid: int = 40, ask: int = 50) -> MemoryContext:
    """A market quoted by someone else at ``bid``/``ask`` cents (mid halfway)."""
    ctx = MemoryContext([M])
    ctx.set_book(M, bids={cents(bid): 10 * CONTRACT}, asks={cents(ask): 10 * CONTRACT})
    return ctx


def working(ctx: MemoryContext) -> list[tuple[str, int, int]]:
    return sorted(describe(ctx.open_orders(M)))


def fill(ticker: str = M) -> FillRecord:
    return FillRecord("t1", "o1", "c1", ticker, "bid", cents(43), CONTRACT, 0, False, CONTRACT, 0, 0)


async def test_it_quotes_both_sides_around_the_mid_with_post_only_gtc_orders() -> None:
    ctx = market(40, 50)

    await quoter().on_start(ctx)

    assert working(ctx) == [("ask", cents(47), CONTRACT), ("bid", cents(43), CONTRACT)]
    for order in ctx.made("place"):
        assert order.time_in_force == "good_till_canceled"
    assert all(order.status == "resting" for order in ctx.made("place"))


async def test_it_quotes_every_market_of_the_trader_or_only_those_named() -> None:
    ctx = market()
    ctx._markets = [M, "KXTEST-B"]
    ctx.set_book("KXTEST-B", bids={cents(20): CONTRACT}, asks={cents(30): CONTRACT})

    await quoter(markets=["KXTEST-B"]).on_start(ctx)
    assert {o.ticker for o in ctx.made("place")} == {"KXTEST-B"}

    await quoter().on_start(ctx)
    assert {o.ticker for o in ctx.made("place")} == {M, "KXTEST-B"}


async def test_the_spread_and_size_parameters_set_the_quotes() -> None:
    ctx = market(40, 50)

    await quoter(spread="0.08", size="2.5").on_start(ctx)

    assert working(ctx) == [("ask", cents(49), 250), ("bid", cents(41), 250)]


async def test_a_long_position_moves_both_quotes_lower_and_a_short_one_higher() -> None:
    long = market(40, 50)
    long.set_position(M, 2 * CONTRACT)
    await quoter().on_start(long)
    assert working(long) == [("ask", cents(45), CONTRACT), ("bid", cents(41), CONTRACT)]

    short = market(40, 50)
    short.set_position(M, -2 * CONTRACT)
    await quoter().on_start(short)
    assert working(short) == [("ask", cents(49), CONTRACT), ("bid", cents(45), CONTRACT)]


async def test_a_fill_moves_the_quotes_by_amend_not_cancel_and_place() -> None:
    ctx = market(40, 50)
    strategy = quoter()
    await strategy.on_start(ctx)

    ctx.set_position(M, 3 * CONTRACT)
    await strategy.on_fill(ctx, fill())

    assert len(ctx.made("place")) == 2
    assert ctx.made("cancel") == []
    assert sorted(describe(ctx.made("amend"))) == [("ask", cents(44), CONTRACT), ("bid", cents(40), CONTRACT)]
    assert working(ctx) == [("ask", cents(44), CONTRACT), ("bid", cents(40), CONTRACT)]


async def test_it_does_not_quote_the_side_that_would_grow_the_position_past_max_position() -> None:
    at_max_long = market(40, 50)
    at_max_long.set_position(M, 5 * CONTRACT)
    await quoter(skew="0").on_start(at_max_long)
    assert working(at_max_long) == [("ask", cents(47), CONTRACT)]

    at_max_short = market(40, 50)
    at_max_short.set_position(M, -5 * CONTRACT)
    await quoter(skew="0").on_start(at_max_short)
    assert working(at_max_short) == [("bid", cents(43), CONTRACT)]

    near_max = market(40, 50)
    near_max.set_position(M, 4 * CONTRACT)
    await quoter(skew="0", max_position="4.5").on_start(near_max)
    assert working(near_max) == [("ask", cents(47), CONTRACT)]


async def test_reaching_max_position_cancels_the_quote_on_that_side() -> None:
    ctx = market(40, 50)
    strategy = quoter(skew="0")
    await strategy.on_start(ctx)

    ctx.set_position(M, 5 * CONTRACT)
    await strategy.on_fill(ctx, fill())

    assert describe(ctx.made("cancel")) == [("bid", cents(43), CONTRACT)]
    assert working(ctx) == [("ask", cents(47), CONTRACT)]


async def test_a_quote_moves_only_when_the_wanted_price_differs_by_the_requote_threshold() -> None:
    ctx = market(40, 50)
    strategy = quoter(requote="0.02")
    await strategy.on_start(ctx)
    top = ctx.top(M)
    assert top is not None

    # The mid moves one cent: within the threshold.
    ctx.set_book(M, bids={cents(41): 10 * CONTRACT}, asks={cents(51): 10 * CONTRACT})
    await strategy.on_book(ctx, M, top)
    assert ctx.made("amend") == []
    assert working(ctx) == [("ask", cents(47), CONTRACT), ("bid", cents(43), CONTRACT)]

    # Two cents from the quotes: both move.
    ctx.set_book(M, bids={cents(42): 10 * CONTRACT}, asks={cents(52): 10 * CONTRACT})
    await strategy.on_book(ctx, M, top)
    assert sorted(describe(ctx.made("amend"))) == [("ask", cents(49), CONTRACT), ("bid", cents(45), CONTRACT)]
    assert len(ctx.made("place")) == 2


async def test_after_a_reconnect_it_keeps_the_quotes_it_finds_and_places_no_duplicates() -> None:
    ctx = market(40, 50)
    ctx.add_resting(M, "bid", cents(43), CONTRACT)
    ctx.add_resting(M, "ask", cents(46), CONTRACT)
    strategy = quoter()

    await strategy.on_start(ctx)
    await strategy.on_timer(ctx)

    assert ctx.made("place") == []
    # The bid is where it should be; the ask is a cent off, which is the threshold: moved, not replaced.
    assert describe(ctx.made("amend")) == [("ask", cents(47), CONTRACT)]
    assert working(ctx) == [("ask", cents(47), CONTRACT), ("bid", cents(43), CONTRACT)]


async def test_a_second_quote_on_one_side_is_cancelled() -> None:
    ctx = market(40, 50)
    ctx.add_resting(M, "bid", cents(43), CONTRACT)
    ctx.add_resting(M, "bid", cents(42), CONTRACT)

    await quoter().on_start(ctx)

    assert describe(ctx.made("cancel")) == [("bid", cents(42), CONTRACT)]
    assert working(ctx) == [("ask", cents(47), CONTRACT), ("bid", cents(43), CONTRACT)]


async def test_its_own_quotes_do_not_move_the_mid_it_quotes_around() -> None:
    # Its quotes inside a wide spread are the top of the book; skewed by a position, quotes placed around
    # that top would walk across the book one requote at a time.
    ctx = market(30, 60)
    ctx.set_position(M, 2 * CONTRACT)
    strategy = quoter()
    await strategy.on_start(ctx)
    placed = working(ctx)

    for _ in range(5):
        top = ctx.top(M)
        assert top is not None
        await strategy.on_book(ctx, M, top)

    assert placed == [("ask", cents(45), CONTRACT), ("bid", cents(41), CONTRACT)]
    assert working(ctx) == placed
    assert ctx.made("amend") == []


async def test_quotes_stay_on_whole_cents_within_the_price_range_and_behind_the_book() -> None:
    # A mid between cents (0.4025): the bid rounds down, the ask up.
    ctx = MemoryContext([M])
    ctx.set_book(M, bids={4010: CONTRACT}, asks={4040: CONTRACT})
    await quoter().on_start(ctx)
    assert working(ctx) == [("ask", cents(43), CONTRACT), ("bid", cents(38), CONTRACT)]

    # Skewed far up against a high market: the ask stops at 0.99 and the bid stays under the best ask.
    high = market(96, 98)
    high.set_position(M, -5 * CONTRACT)
    await quoter(max_position="10", skew="0.02").on_start(high)
    assert working(high) == [("ask", cents(99), CONTRACT), ("bid", cents(97), CONTRACT)]

    # Skewed far down against a low market: the bid stops at 0.01 and the ask stays over the best bid.
    low = market(1, 3)
    low.set_position(M, 5 * CONTRACT)
    await quoter(max_position="10", skew="0.02").on_start(low)
    assert working(low) == [("ask", cents(2), CONTRACT), ("bid", cents(1), CONTRACT)]


async def test_a_one_sided_or_missing_book_leaves_the_quotes_alone() -> None:
    ctx = MemoryContext([M, "KXTEST-NONE"])
    ctx.set_book(M, bids={cents(40): CONTRACT}, asks={})

    await quoter().on_start(ctx)

    assert ctx.calls == []


async def test_a_refused_quote_is_not_retried_on_every_book_until_a_second_has_passed() -> None:
    ctx = market(40, 50)
    ctx.answer = "refused"
    now = [100.0]
    strategy = quoter()
    strategy.clock = lambda: now[0]
    top = ctx.top(M)
    assert top is not None

    await strategy.on_start(ctx)
    await strategy.on_book(ctx, M, top)
    assert describe(ctx.made("place")) == [("bid", cents(43), CONTRACT), ("ask", cents(47), CONTRACT)]

    now[0] += 1.0
    ctx.answer = None
    await strategy.on_book(ctx, M, top)
    assert working(ctx) == [("ask", cents(47), CONTRACT), ("bid", cents(43), CONTRACT)]


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"sprad": "0.02"}, "unknown parameter 'sprad'"),
        ({"spread": "0"}, "parameter 'spread' must be more than 0"),
        ({"spread": "two cents"}, "parameter 'spread' must be a dollar amount"),
        ({"size": "0"}, "parameter 'size' must be more than 0"),
        ({"size": "2", "max_position": "1"}, "parameter 'max_position' must be at least 'size'"),
        ({"markets": "KXTEST-A"}, "parameter 'markets' must be a non-empty list of market tickers"),
    ],
)
def test_it_refuses_bad_parameters_naming_them(params: dict[str, Any], problem: str) -> None:
    with pytest.raises(StrategyParameterError, match="^" + problem):
        Quoter(params)


def test_it_describes_its_parameters_in_dollars_and_contracts() -> None:
    assert quoter(spread="0.02", markets=[M]).describe() == {
        "spread": "0.0200",
        "skew": "0.0100",
        "requote": "0.0100",
        "size": "1.00",
        "max_position": "5.00",
        "markets": M,
    }


async def test_above_unwind_above_it_takes_the_book_for_the_excess_with_a_reduce_only_ioc() -> None:
    long = market(40, 50)
    long.set_position(M, 3 * CONTRACT)
    await quoter(unwind_above="1", max_position="5").on_start(long)
    (unwind,) = [o for o in long.made("place") if o.time_in_force == "immediate_or_cancel"]
    assert (unwind.side, unwind.yes_price, unwind.initial_count) == ("ask", cents(40), 2 * CONTRACT)

    short = market(40, 50)
    short.set_position(M, -2 * CONTRACT)
    await quoter(unwind_above="1", max_position="5").on_start(short)
    (unwind,) = [o for o in short.made("place") if o.time_in_force == "immediate_or_cancel"]
    assert (unwind.side, unwind.yes_price, unwind.initial_count) == ("bid", cents(50), CONTRACT)


async def test_at_or_under_unwind_above_or_without_it_it_takes_nothing() -> None:
    for params, position in (({"unwind_above": "2"}, 2 * CONTRACT), ({}, 5 * CONTRACT)):
        ctx = market(40, 50)
        ctx.set_position(M, position)
        await quoter(max_position="5", **params).on_start(ctx)
        assert all(o.time_in_force == "good_till_canceled" for o in ctx.made("place"))
