"""The built-in exchange's matching and accounts: Kalshi's V2 rules on one YES book, in exact integers."""

from __future__ import annotations

import itertools

import pytest

from apps.exchange.accounts import MICRO_DOLLAR, Account
from apps.exchange.matching import (
    MAKER_FEE_RATE_CHARGED,
    TAKER_FEE_RATE,
    BookOrder,
    MatchingBook,
    OrderRejected,
    PublicLevelChange,
    trade_fee,
)
from apps.kalshi.fixedpoint import parse_price, parse_size

TICKER = "KXFED-26DEC-T4.25"
_ids = itertools.count(1)


def order(owner: str, side: str, price: str, count: str, **options: object) -> BookOrder:
    return BookOrder(
        order_id=f"o{next(_ids)}",
        owner=owner,
        ticker=TICKER,
        side=side,  # type: ignore[arg-type]
        price=parse_price(price),
        initial_count=parse_size(count),
        **options,  # type: ignore[arg-type]
    )


def book_with_asks(*asks: tuple[str, str, str]) -> MatchingBook:
    book = MatchingBook(TICKER)
    for owner, price, count in asks:
        book.submit(order(owner, "ask", price, count))
    book.take_changes()
    return book


def test_the_taker_fee_is_kalshis_schedule_rounded_up_to_a_micro_dollar() -> None:
    # Kalshi's worked example: 1 contract at $0.055 has a model fee of $0.00363825, charged $0.003639.
    assert trade_fee(parse_size("1.00"), parse_price("0.0550"), TAKER_FEE_RATE) == 3_639
    # 100 contracts at $0.50: 0.07 x 100 x 0.25 = $1.75 exactly, no rounding.
    assert trade_fee(parse_size("100.00"), parse_price("0.50"), TAKER_FEE_RATE) == 1_750_000
    # Makers pay a quarter of that on the series that charge them.
    assert trade_fee(parse_size("100.00"), parse_price("0.50"), MAKER_FEE_RATE_CHARGED) == 437_500


def test_a_bid_takes_the_best_price_first_then_the_oldest_order_and_trades_at_the_resting_price() -> None:
    book = book_with_asks(("mm1", "0.56", "5.00"), ("mm2", "0.55", "3.00"), ("mm3", "0.55", "4.00"))
    placed = book.submit(order("me", "bid", "0.60", "10.00"))
    taker_fills = [(f.price, f.count) for f in placed.fills if f.is_taker]
    makers = [f.owner for f in placed.fills if not f.is_taker]
    assert taker_fills == [(5_500, 300), (5_500, 400), (5_600, 300)]
    assert makers == ["mm2", "mm3", "mm1"]
    assert placed.order.status == "executed" and placed.order.fill_count == 1_000
    # The YES cost is what was paid at the makers' prices, not at the limit.
    assert placed.order.taker_fill_cost == 700 * 5_500 + 300 * 5_600
    assert book.depth("ask") == {5_600: 200}
    # The public book loses what traded: asks are NO bids at 1 - price.
    assert book.take_changes() == [
        PublicLevelChange("no", 4_500, -300),
        PublicLevelChange("no", 4_500, -400),
        PublicLevelChange("no", 4_400, -300),
    ]


def test_good_till_canceled_rests_the_remainder_and_shows_it_on_the_public_book() -> None:
    book = book_with_asks(("mm", "0.55", "2.00"))
    placed = book.submit(order("me", "bid", "0.55", "5.00"))
    assert placed.order.status == "resting"
    assert (placed.order.fill_count, placed.order.remaining_count) == (200, 300)
    assert book.best("bid") == 5_500 and book.best("ask") is None
    assert book.take_changes() == [PublicLevelChange("no", 4_500, -200), PublicLevelChange("yes", 5_500, 300)]
    cancelled = book.cancel(placed.order.order_id)
    assert cancelled.status == "canceled" and book.best("bid") is None
    assert book.take_changes() == [PublicLevelChange("yes", 5_500, -300)]


def test_immediate_or_cancel_cancels_the_rest_and_fill_or_kill_fills_all_or_nothing() -> None:
    book = book_with_asks(("mm", "0.55", "2.00"))
    ioc = book.submit(order("me", "bid", "0.60", "5.00", time_in_force="immediate_or_cancel")).order
    assert (ioc.status, ioc.fill_count, ioc.remaining_count) == ("canceled", 200, 0)
    assert book.best("bid") is None

    book = book_with_asks(("mm", "0.55", "2.00"))
    fok = book.submit(order("me", "bid", "0.60", "5.00", time_in_force="fill_or_kill"))
    assert (fok.order.status, fok.fills) == ("canceled", [])
    assert book.depth("ask") == {5_500: 200} and book.take_changes() == []
    whole = book.submit(order("me", "bid", "0.60", "2.00", time_in_force="fill_or_kill")).order
    assert (whole.status, whole.fill_count) == ("executed", 200)


def test_post_only_that_would_cross_is_refused_and_leaves_the_book_alone() -> None:
    book = book_with_asks(("mm", "0.55", "2.00"))
    with pytest.raises(OrderRejected) as refused:
        book.submit(order("me", "bid", "0.55", "1.00", post_only=True))
    assert (refused.value.code, refused.value.details) == ("invalid_order", "post only cross")
    assert book.depth("ask") == {5_500: 200} and book.take_changes() == []
    resting = book.submit(order("me", "bid", "0.54", "1.00", post_only=True)).order
    assert resting.status == "resting"


def test_reduce_only_never_grows_a_position() -> None:
    book = book_with_asks(("mm", "0.55", "10.00"))
    flat = book.submit(order("me", "bid", "0.60", "5.00", reduce_only=True, time_in_force="immediate_or_cancel"))
    assert (flat.order.status, flat.order.last_update_reason, flat.fills) == ("canceled", "ReduceOnlyCancel", [])
    # Short 3 NO: a reduce-only bid buys back at most 3.
    capped = book.submit(
        order("me", "bid", "0.60", "5.00", reduce_only=True, time_in_force="immediate_or_cancel"), position=-300
    )
    assert capped.order.fill_count == 300
    assert book.depth("ask") == {5_500: 700}


def test_self_trade_prevention_taker_at_cross_keeps_earlier_fills_and_stops_the_taker() -> None:
    book = book_with_asks(("mm", "0.54", "1.00"), ("me", "0.55", "2.00"), ("mm", "0.56", "2.00"))
    placed = book.submit(order("me", "bid", "0.60", "5.00"))
    assert placed.order.status == "canceled" and placed.order.last_update_reason == "SelfTradeCancel"
    assert placed.order.fill_count == 100
    assert book.depth("ask") == {5_500: 200, 5_600: 200}  # the own order rests untouched


def test_self_trade_prevention_maker_cancels_the_own_resting_order_and_goes_on() -> None:
    book = book_with_asks(("mm", "0.54", "1.00"), ("me", "0.55", "2.00"), ("mm", "0.56", "2.00"))
    placed = book.submit(order("me", "bid", "0.60", "5.00", self_trade_prevention="maker"))
    assert [o.last_update_reason for o in placed.cancelled] == ["SelfTradeCancel"]
    assert placed.order.fill_count == 300 and placed.order.status == "resting"
    assert book.depth("ask") == {} and book.depth("bid") == {6_000: 200}


def test_decrease_keeps_queue_priority_and_a_price_amend_loses_it() -> None:
    book = book_with_asks(("a", "0.55", "5.00"), ("b", "0.55", "5.00"))
    first = next(o for o in book.resting_orders("a"))
    book.decrease(first.order_id, 200)
    taken = book.submit(order("me", "bid", "0.55", "1.00", time_in_force="immediate_or_cancel"))
    assert [f.owner for f in taken.fills if not f.is_taker] == ["a"]
    # A moves away and back: now behind B.
    book.amend(first.order_id, price=parse_price("0.57"), total_count=300)
    book.amend(first.order_id, price=parse_price("0.55"), total_count=300)
    again = book.submit(order("me", "bid", "0.55", "1.00", time_in_force="immediate_or_cancel"))
    assert [f.owner for f in again.fills if not f.is_taker] == ["b"]


def test_fees_go_to_the_taker_and_to_makers_only_where_the_market_charges_them() -> None:
    for maker_rate, maker_fee in ((0, 0), (MAKER_FEE_RATE_CHARGED, trade_fee(1_000, 4_000, MAKER_FEE_RATE_CHARGED))):
        book = MatchingBook(TICKER, maker_fee_rate=maker_rate)
        maker = book.submit(order("mm", "bid", "0.40", "10.00")).order
        taker = book.submit(order("me", "ask", "0.40", "10.00")).order
        assert taker.taker_fees == trade_fee(1_000, 4_000, TAKER_FEE_RATE) == 168_000
        assert maker.maker_fees == maker_fee
        # The ask's cost is its NO side: 10 contracts at 1 - 0.40.
        assert taker.taker_fill_cost == 1_000 * 6_000


def test_an_account_opens_closes_and_nets_positions_exactly_and_settles_at_a_dollar() -> None:
    book = MatchingBook(TICKER)
    me = Account("me", balance=10_000 * MICRO_DOLLAR)
    book.submit(order("mm", "ask", "0.40", "100.00"))
    for fill in book.submit(order("me", "bid", "0.40", "10.00")).fills:
        if fill.owner == "me":
            me.apply_fill(fill)
    held = me.position(TICKER)
    fee = trade_fee(1_000, 4_000, TAKER_FEE_RATE)
    assert (held.position, held.cost) == (1_000, 4 * MICRO_DOLLAR)
    assert me.balance == 10_000 * MICRO_DOLLAR - 4 * MICRO_DOLLAR - fee

    # Sell 4 YES at 0.55 to a bidder: 4 x 0.15 realized, cost basis down by 4/10.
    for resting in list(book.resting_orders("mm")):
        book.cancel(resting.order_id)
    book.submit(order("mm", "bid", "0.55", "100.00"))
    for fill in book.submit(order("me", "ask", "0.55", "4.00")).fills:
        if fill.owner == "me":
            me.apply_fill(fill)
    assert (held.position, held.cost, held.realized_pnl) == (600, 2_400_000, 600_000)

    # Sell 10 more YES at 0.55: closes the 6 held, then opens 4 NO at 0.45 each.
    for fill in book.submit(order("me", "ask", "0.55", "10.00")).fills:
        if fill.owner == "me":
            me.apply_fill(fill)
    assert (held.position, held.cost, held.realized_pnl) == (-400, 1_800_000, 1_500_000)
    fees = held.fees_paid
    assert fees == fee + trade_fee(400, 5_500, TAKER_FEE_RATE) + trade_fee(1_000, 5_500, TAKER_FEE_RATE)

    settlement = me.settle(TICKER, "no")
    assert settlement is not None and settlement.revenue == 4 * MICRO_DOLLAR
    assert (held.position, held.cost, held.realized_pnl) == (0, 0, 1_500_000 + 4 * MICRO_DOLLAR - 1_800_000)
    # Cash is what came in minus what went out, to the micro-dollar.
    assert me.balance == 10_000 * MICRO_DOLLAR + held.realized_pnl - fees
