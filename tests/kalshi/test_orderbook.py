from __future__ import annotations

import pytest

from apps.kalshi.messages import OrderbookDelta, OrderbookSnapshot
from apps.kalshi.orderbook import BookInconsistent, OrderBook, differing_levels


def snapshot(yes: list[tuple[int, int]], no: list[tuple[int, int]], seq: int = 1) -> OrderbookSnapshot:
    return OrderbookSnapshot(sid=1, seq=seq, market_ticker="M", market_id="id", yes=yes, no=no)


def delta(price: int, size: int, side: str, seq: int) -> OrderbookDelta:
    return OrderbookDelta(sid=1, seq=seq, market_ticker="M", market_id="id", price=price, delta=size, side=side)  # type: ignore[arg-type]


def test_best_yes_ask_is_one_minus_the_best_no_bid() -> None:
    book = OrderBook("M")
    book.apply_snapshot(snapshot(yes=[(800, 30000), (2200, 33300)], no=[(5400, 2000), (5600, 14600)]))
    top = book.top()
    assert top.yes_bid == (2200, 33300)
    assert top.yes_ask == (4400, 14600)  # 1.00 - 0.56
    assert top.spread == 2200


def test_deltas_add_remove_and_keep_fractional_sizes() -> None:
    book = OrderBook("M")
    book.apply_snapshot(snapshot(yes=[(4200, 1000)], no=[]))
    book.apply_delta(delta(4200, 250, "yes", 2))
    book.apply_delta(delta(4300, 1250, "yes", 3))
    book.apply_delta(delta(5000, 75, "no", 4))
    assert book.levels("yes") == [(4300, 1250), (4200, 1250)]
    book.apply_delta(delta(4300, -1250, "yes", 5))
    assert book.levels("yes") == [(4200, 1250)]
    assert book.as_wire() == {"yes": [["0.4200", "12.50"]], "no": [["0.5000", "0.75"]]}
    assert book.seq == 5


def test_a_delta_below_zero_means_the_book_is_wrong() -> None:
    book = OrderBook("M")
    book.apply_snapshot(snapshot(yes=[(4200, 100)], no=[]))
    with pytest.raises(BookInconsistent):
        book.apply_delta(delta(4200, -200, "yes", 2))
    assert book.levels("yes") == [(4200, 100)] and book.seq == 1


def test_summary_uses_kalshi_strings() -> None:
    book = OrderBook("M")
    book.apply_snapshot(snapshot(yes=[(4250, 1250)], no=[(5500, 300)]))
    summary = book.summary()
    assert summary["yes_bid"] == {"price": "0.4250", "size": "12.50"}
    assert summary["yes_ask"] == {"price": "0.4500", "size": "3.00"}
    assert summary["spread"] == "0.0250"


def test_an_empty_book_has_no_top() -> None:
    top = OrderBook("M").top()
    assert top.yes_bid is None and top.yes_ask is None and top.spread is None


def test_differing_levels_lists_each_side_best_price_first() -> None:
    ours = OrderBook("M")
    ours.apply_snapshot(snapshot(yes=[(4100, 100), (4200, 1250)], no=[(5000, 300)]))
    theirs = ours.copy()
    assert differing_levels(ours, theirs) == []
    theirs.apply_delta(delta(4100, -100, "yes", 2))
    theirs.apply_delta(delta(4300, 500, "yes", 3))
    theirs.apply_delta(delta(5000, 200, "no", 4))
    assert differing_levels(ours, theirs) == [
        ("yes", 4300, 0, 500),
        ("yes", 4100, 100, 0),
        ("no", 5000, 300, 500),
    ]
    assert ours.levels("yes") == [(4200, 1250), (4100, 100)]  # the copy is independent
