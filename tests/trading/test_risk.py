"""Risk limits: each rule refuses with its name just past its limit and passes just inside it."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from apps.kalshi.fixedpoint import parse_money, parse_price, parse_size
from apps.kalshi.orderbook import TopOfBook
from apps.kalshi.portfolio import BookSide
from apps.trader.core.trading.records import OrderRecord
from apps.trader.core.trading.risk import OrderIntent, Refusal, RiskGate, RiskLimits

T = "KXTEST-26DEC-T1"
U = "KXOTHER-26DEC-T2"
TOP = TopOfBook((parse_price("0.40"), 500), (parse_price("0.42"), 500))
_ids = itertools.count(1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gate(clock: Clock | None = None, **limits: Any) -> RiskGate:
    return RiskGate(RiskLimits(**limits), monotonic=clock or Clock())


def intent(side: BookSide, price: str, count: str, *, ticker: str = T, **options: Any) -> OrderIntent:
    return OrderIntent(ticker, side, parse_price(price), parse_size(count), **options)


def working(side: BookSide, price: str, remaining: str, *, ticker: str = T, filled: str = "0") -> OrderRecord:
    n = next(_ids)
    return OrderRecord(
        client_order_id=f"client-{n}",
        order_id=f"order-{n}",
        ticker=ticker,
        side=side,
        yes_price=parse_price(price),
        initial_count=parse_size(remaining) + parse_size(filled),
        fill_count=parse_size(filled),
        remaining_count=parse_size(remaining),
        time_in_force="good_till_canceled",
        status="resting",
        fees=0,
        reason="placed",
        strategy="test",
        at_us=0,
    )


def check(
    g: RiskGate,
    order: OrderIntent,
    *,
    position: str = "0",
    orders: list[OrderRecord] | None = None,
    top: TopOfBook | None = TOP,
    positions_cost: int = 0,
    session_pnl: int | None = 0,
) -> str | None:
    """The rule that refused, or None; the refusal's line must start with it."""
    refusal = g.check(
        order,
        position=parse_size(position),
        working=orders or [],
        top=top,
        positions_cost=positions_cost,
        session_pnl=session_pnl,
    )
    if refusal is None:
        return None
    assert refusal.message.startswith(f"{refusal.rule}: ")
    return refusal.rule


# ---------------------------------------------------------------------------------------------- size, orders


def test_max_order_size() -> None:
    assert check(gate(), intent("bid", "0.40", "5.00")) is None
    assert check(gate(), intent("bid", "0.40", "5.01")) == "max_order_size"
    assert check(gate(max_order_size=parse_size("0.50")), intent("ask", "0.40", "0.51")) == "max_order_size"


def test_max_open_orders_counts_every_market() -> None:
    nine = [working("bid", "0.10", "0.01", ticker=U if i % 2 else T) for i in range(9)]
    assert check(gate(), intent("bid", "0.40", "1.00"), orders=nine) is None
    ten = [*nine, working("ask", "0.90", "0.01", ticker=U)]
    assert check(gate(), intent("bid", "0.40", "1.00"), orders=ten) == "max_open_orders"


def test_a_limit_of_zero_refuses_not_unlimits() -> None:
    assert check(gate(max_open_orders=0), intent("bid", "0.40", "1.00")) == "max_open_orders"
    assert check(gate(max_position=0), intent("bid", "0.40", "0.01")) == "max_position"
    assert check(gate(max_order_size=0), intent("bid", "0.40", "0.01")) == "max_order_size"
    assert check(gate(max_exposure=0), intent("bid", "0.40", "0.01")) == "max_exposure"
    assert check(gate(max_orders_per_second=0), intent("bid", "0.40", "0.01")) == "max_orders_per_second"


# ---------------------------------------------------------------------------------------------- position


def test_max_position_assumes_the_order_fills_completely() -> None:
    assert check(gate(), intent("bid", "0.40", "3.00"), position="7.00") is None
    assert check(gate(), intent("bid", "0.40", "3.01"), position="7.00") == "max_position"
    assert check(gate(), intent("ask", "0.40", "3.00"), position="-7.00") is None
    assert check(gate(), intent("ask", "0.40", "3.01"), position="-7.00") == "max_position"


def test_max_position_says_what_would_be_held() -> None:
    refusal = gate().check(
        intent("bid", "0.40", "3.00"), position=900, working=[], top=TOP, positions_cost=0, session_pnl=0
    )
    assert refusal == Refusal("max_position", f"max_position: buying 3.00 would hold 12.00 in {T} (limit 10.00)")


def test_max_position_adds_the_same_sides_working_orders_in_the_market() -> None:
    bids = [working("bid", "0.30", "4.00"), working("bid", "0.35", "4.00")]
    others = [working("ask", "0.60", "5.00"), working("bid", "0.30", "5.00", ticker=U)]
    assert check(gate(), intent("bid", "0.40", "2.00"), orders=bids + others) is None
    assert check(gate(), intent("bid", "0.40", "2.01"), orders=bids + others) == "max_position"


def test_flipping_through_zero_is_held_to_the_limit_on_the_other_side() -> None:
    g = gate(max_order_size=parse_size("100"))
    assert check(g, intent("ask", "0.40", "15.00"), position="5.00") is None
    assert check(g, intent("ask", "0.40", "15.01"), position="5.00") == "max_position"


def test_an_order_that_only_reduces_a_position_above_the_limits_passes() -> None:
    g = gate(max_order_size=parse_size("100"), max_exposure=parse_money("1"))
    assert check(g, intent("ask", "0.40", "2.00"), position="12.00", positions_cost=parse_money("5")) is None
    assert check(g, intent("ask", "0.40", "12.00"), position="12.00", positions_cost=parse_money("5")) is None
    assert check(g, intent("bid", "0.40", "0.01"), position="12.00") == "max_position"
    # Past zero it opens the other side: the limits apply again.
    assert check(g, intent("ask", "0.40", "12.01"), position="12.00", positions_cost=parse_money("5")) == "max_exposure"


def test_reduce_only_fills_only_as_far_as_it_closes() -> None:
    g = gate(max_position=0)
    assert check(g, intent("ask", "0.40", "5.00", reduce_only=True), position="3.00") is None
    assert check(g, intent("ask", "0.40", "5.00"), position="3.00") == "max_position"


# ---------------------------------------------------------------------------------------------- exposure


def test_exposure_is_positions_cost_plus_the_worst_case_of_working_orders() -> None:
    orders = [working("bid", "0.40", "5.00"), working("ask", "0.60", "2.50", ticker=U)]
    # 5.00 x 0.40 + 2.50 x (1 - 0.60)
    assert gate().exposure(parse_money("3"), orders) == parse_money("3") + parse_money("2") + parse_money("1")


@pytest.mark.parametrize(
    ("side", "inside", "outside"),
    [("bid", "0.40", "0.41"), ("ask", "0.60", "0.59")],
)
def test_max_exposure(side: BookSide, inside: str, outside: str) -> None:
    g = gate(max_exposure=parse_money("10"), price_band=parse_price("0.30"))
    orders = [working("bid", "0.40", "5.00")]  # 2.00 $
    cost = parse_money("6")
    assert check(g, intent(side, inside, "5.00"), orders=orders, positions_cost=cost) is None
    assert check(g, intent(side, outside, "5.00"), orders=orders, positions_cost=cost) == "max_exposure"


# ---------------------------------------------------------------------------------------------- price band


@pytest.mark.parametrize("side", ["bid", "ask"])
def test_the_price_band_is_around_the_touch(side: BookSide) -> None:
    # Best bid 0.40, best ask 0.42, band 0.10.
    assert check(gate(), intent(side, "0.52", "1.00")) is None
    assert check(gate(), intent(side, "0.5201", "1.00")) == "price_band"
    assert check(gate(), intent(side, "0.30", "1.00")) is None
    assert check(gate(), intent(side, "0.2999", "1.00")) == "price_band"


@pytest.mark.parametrize(
    ("top", "low", "high"),
    [
        (TopOfBook((parse_price("0.40"), 100), None), "0.30", "0.50"),
        (TopOfBook(None, (parse_price("0.42"), 100)), "0.32", "0.52"),
    ],
)
def test_with_one_side_only_the_band_is_around_it(top: TopOfBook, low: str, high: str) -> None:
    for side in ("bid", "ask"):
        assert check(gate(), intent(side, low, "1.00"), top=top) is None
        assert check(gate(), intent(side, high, "1.00"), top=top) is None
        below = f"{parse_price(low) - 1:04d}"
        above = f"{parse_price(high) + 1:04d}"
        assert check(gate(), intent(side, f"0.{below}", "1.00"), top=top) == "price_band"
        assert check(gate(), intent(side, f"0.{above}", "1.00"), top=top) == "price_band"


def test_without_a_book_nothing_is_sent() -> None:
    assert check(gate(), intent("bid", "0.40", "1.00"), top=None) == "no_book"
    assert check(gate(), intent("bid", "0.40", "1.00"), top=TopOfBook(None, None)) == "no_book"


# ---------------------------------------------------------------------------------------------- session loss


def test_the_session_loss_limit_stops_trading_for_good() -> None:
    g = gate()
    assert check(g, intent("bid", "0.40", "1.00"), session_pnl=-parse_money("25")) is None
    assert check(g, intent("bid", "0.40", "1.00"), session_pnl=None) is None
    assert check(g, intent("bid", "0.40", "1.00"), session_pnl=-parse_money("25") - 1) == "max_session_loss"
    assert g.stopped is not None and g.stopped.rule == "max_session_loss"
    assert check(g, intent("bid", "0.40", "1.00"), session_pnl=parse_money("1")) == "trading_stopped"


def test_the_loss_limit_on_its_own() -> None:
    g = gate(max_session_loss=parse_money("5"))
    assert g.session_loss(-parse_money("5")) is None
    assert g.session_loss(None) is None
    assert g.stopped is None
    refusal = g.session_loss(-parse_money("5.000001"))
    assert refusal == Refusal("max_session_loss", "max_session_loss: session P&L -5.000001 $ is below -5.000000 $")
    refusal = g.check(intent("bid", "0.40", "1.00"), position=0, working=[], top=TOP, positions_cost=0, session_pnl=0)
    assert refusal == Refusal(
        "trading_stopped", "trading_stopped: max_session_loss: session P&L -5.000001 $ is below -5.000000 $"
    )


def test_stop_refuses_every_order_after_it() -> None:
    g = gate()
    g.stop("kill switch")
    refusal = g.check(intent("bid", "0.40", "1.00"), position=0, working=[], top=TOP, positions_cost=0, session_pnl=0)
    assert refusal == Refusal("trading_stopped", "trading_stopped: kill switch")


# ---------------------------------------------------------------------------------------------- rate


def test_orders_per_second_is_a_token_bucket_with_the_rate_as_burst() -> None:
    clock = Clock()
    g = gate(clock, max_orders_per_second=5)
    order = intent("bid", "0.40", "1.00")
    assert [check(g, order) for _ in range(6)] == [None] * 5 + ["max_orders_per_second"]
    clock.now += 0.2
    assert [check(g, order) for _ in range(2)] == [None, "max_orders_per_second"]
    clock.now += 0.1
    assert check(g, order) == "max_orders_per_second"
    clock.now += 60
    assert [check(g, order) for _ in range(6)] == [None] * 5 + ["max_orders_per_second"]


def test_a_refused_order_takes_no_token() -> None:
    g = gate(max_orders_per_second=2)
    for _ in range(5):
        assert check(g, intent("bid", "0.40", "9.00")) == "max_order_size"
    assert [check(g, intent("bid", "0.40", "1.00")) for _ in range(3)] == [None, None, "max_orders_per_second"]


# ---------------------------------------------------------------------------------------------- amends


def test_an_amend_does_not_count_the_order_it_changes() -> None:
    resting = working("bid", "0.35", "8.00")
    g = gate(max_open_orders=1, max_order_size=parse_size("20"), max_exposure=parse_money("4"))
    assert check(g, intent("bid", "0.40", "1.00"), orders=[resting]) == "max_open_orders"
    # 10.00 at 0.40 is 4.00 $: the resting 8.00 at 0.35 is replaced, not added.
    assert check(g, intent("bid", "0.40", "10.00", replaces=resting), orders=[resting]) is None
    assert check(g, intent("bid", "0.40", "10.01", replaces=resting), orders=[resting]) == "max_position"


def test_an_amend_counts_its_new_total_less_what_filled() -> None:
    resting = working("bid", "0.35", "5.00", filled="3.00")
    g = gate(max_order_size=parse_size("20"))
    # Position 3.00 from the fill; 10.00 in all leaves 7.00 to fill: 10.00 held at most.
    assert check(g, intent("bid", "0.40", "10.00", replaces=resting), position="3.00", orders=[resting]) is None
    refused = check(g, intent("bid", "0.40", "10.01", replaces=resting), position="3.00", orders=[resting])
    assert refused == "max_position"


# ---------------------------------------------------------------------------------------------- settings


def test_limits_from_strings_are_exact_in_each_unit() -> None:
    limits = RiskLimits.from_mapping(
        {
            "max_position": "2.50",
            "MAX_OPEN_ORDERS": "3",
            "max_order_size": "1",
            "max_exposure": "100",
            "max_orders_per_second": 0,
            "price_band": "0.05",
            "max_session_loss": "25.50",
        }
    )
    assert limits == RiskLimits(
        max_position=250,
        max_open_orders=3,
        max_order_size=100,
        max_exposure=100_000_000,
        max_orders_per_second=0,
        price_band=500,
        max_session_loss=25_500_000,
    )
    assert RiskLimits.from_mapping({}) == RiskLimits()


def test_describe_shows_each_limit_in_its_unit_and_reads_back() -> None:
    assert RiskLimits().describe() == {
        "max_position": "10.00",
        "max_open_orders": "10",
        "max_order_size": "5.00",
        "max_exposure": "100.000000",
        "max_orders_per_second": "5",
        "price_band": "0.1000",
        "max_session_loss": "25.000000",
    }
    limits = RiskLimits(max_position=1, price_band=3, max_exposure=7)
    assert RiskLimits.from_mapping(limits.describe()) == limits


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"max_postion": "5"}, "max_postion"),
        ({"max_position": "five"}, "max_position"),
        ({"max_position": "1.001"}, "max_position"),
        ({"price_band": "0.00001"}, "price_band"),
        ({"max_exposure": "0.0000001"}, "max_exposure"),
        ({"max_session_loss": "-5"}, "max_session_loss"),
        ({"max_open_orders": "1.5"}, "max_open_orders"),
        ({"max_orders_per_second": ""}, "max_orders_per_second"),
        ({"price_band": 0.1}, "price_band"),
        ({"max_position": True}, "max_position"),
    ],
)
def test_a_bad_limit_is_refused_by_name(values: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        RiskLimits.from_mapping(values)
