"""The position ledger: positions, cost, realized P&L and fees from fills, equal to the exchange's own."""

from __future__ import annotations

import contextlib
import itertools
import random
from typing import NamedTuple

import pytest

from apps.exchange.desk import Desk, DeskEvent, FillUpdate, NewOrder, PositionUpdate
from apps.exchange.market import SimMarket
from apps.exchange.matching import MAKER_FEE_RATE_CHARGED, OrderRejected
from apps.exchange.portfolio import position_body
from apps.kalshi.fixedpoint import DOLLAR, parse_price, parse_size
from apps.kalshi.portfolio import BookSide, MarketPosition, TimeInForce
from apps.trader.core.trading.ledger import Ledger, PnL
from apps.trader.core.trading.records import FillRecord

T = "KXTEST-26DEC-T1"
U = "KXOTHER-26DEC-T2"
_trade_ids = itertools.count(1)


def fill(side: BookSide, price: str, count: str, *, fee: int = 0, ticker: str = T, trade_id: str = "") -> FillRecord:
    """A fill in the units a person writes: price "0.40" dollars, count "2.00" contracts."""
    return FillRecord(
        trade_id=trade_id or f"trade-{next(_trade_ids)}",
        order_id="order-1",
        client_order_id="client-1",
        ticker=ticker,
        side=side,
        yes_price=parse_price(price),
        count=parse_size(count),
        fee=fee,
        is_taker=True,
        post_position=0,
        ts_ms=0,
        received_us=0,
    )


class Held(NamedTuple):
    position: int
    cost: int
    realized_pnl: int
    fees_paid: int


def held(ledger: Ledger, ticker: str = T) -> Held:
    record = ledger.record(ticker, None, 0)
    return Held(record.position, record.cost, record.realized_pnl, record.fees_paid)


@pytest.mark.parametrize(
    ("fills", "expected"),
    [
        pytest.param([fill("bid", "0.40", "2.00")], Held(200, 800_000, 0, 0), id="open YES"),
        pytest.param([fill("ask", "0.55", "3.00")], Held(-300, 1_350_000, 0, 0), id="open NO at 1 - price"),
        pytest.param(
            [fill("bid", "0.40", "2.00"), fill("bid", "0.70", "1.00")], Held(300, 1_500_000, 0, 0), id="add YES"
        ),
        pytest.param(
            # 1,210,000 x 1/3 = 403,333.33: the closed third releases 403,333, the rest stays in the cost.
            [fill("bid", "0.41", "1.00"), fill("bid", "0.40", "2.00"), fill("ask", "0.50", "1.00")],
            Held(200, 806_667, 96_667, 0),
            id="close YES in part, cost released rounded down",
        ),
        pytest.param(
            # 1,180,000 x 7/300 = 27,533.33 released; closing 0.07 NO by a bid at 0.50 pays 0.07 x 0.50.
            [fill("ask", "0.60", "1.00"), fill("ask", "0.61", "2.00"), fill("bid", "0.50", "0.07")],
            Held(-293, 1_152_467, 35_000 - 27_533, 0),
            id="close NO in part, cost released rounded down",
        ),
        pytest.param(
            [fill("bid", "0.41", "1.00"), fill("bid", "0.40", "2.00"), fill("ask", "0.50", "3.00")],
            Held(0, 0, 1_500_000 - 1_210_000, 0),
            id="close YES in full",
        ),
        pytest.param(
            # Closing 2.00 YES at 0.55 realizes 0.30; the other 3.00 open NO at 0.45.
            [fill("bid", "0.40", "2.00"), fill("ask", "0.55", "5.00")],
            Held(-300, 1_350_000, 300_000, 0),
            id="flip YES to NO through zero",
        ),
        pytest.param(
            [fill("ask", "0.70", "1.00"), fill("bid", "0.20", "4.00")],
            Held(300, 600_000, 800_000 - 300_000, 0),
            id="flip NO to YES through zero",
        ),
        pytest.param(
            [fill("bid", "0.40", "1.00", fee=16_800), fill("ask", "0.50", "1.00", fee=17_500)],
            Held(0, 0, 100_000, 34_300),
            id="fees kept apart from realized P&L",
        ),
    ],
)
def test_it_books_fills_as_the_exchange_does(fills: list[FillRecord], expected: Held) -> None:
    ledger = Ledger()
    for f in fills:
        assert ledger.apply_fill(f) is True
    assert held(ledger) == expected
    assert ledger.position(T) == expected.position


def test_a_fill_booked_again_changes_nothing() -> None:
    ledger = Ledger()
    first = fill("bid", "0.40", "2.00", fee=5_000, trade_id="t-1")
    assert ledger.apply_fill(first) is True
    before = held(ledger)
    assert ledger.apply_fill(first) is False
    assert ledger.apply_fill(fill("ask", "0.90", "2.00", trade_id="t-1")) is False
    assert held(ledger) == before


def test_unrealized_pnl_marks_yes_at_the_mark_and_no_at_one_minus_it() -> None:
    ledger = Ledger()
    ledger.apply_fill(fill("bid", "0.40", "2.00", fee=1_000))
    ledger.apply_fill(fill("ask", "0.55", "3.00", ticker=U, fee=2_000))
    ledger.apply_fill(fill("bid", "0.60", "1.00", ticker=U))  # closes 1.00 NO: realizes 0.40 - 0.45
    assert ledger.record(T, 4500, 7).unrealized_pnl == 200 * 4500 - 800_000
    no = ledger.record(U, 5000, 7)
    assert (no.position, no.cost, no.unrealized_pnl, no.mark_price, no.at_us) == (-200, 900_000, 100_000, 5000, 7)
    pnl = ledger.pnl({T: 4500, U: 5000})
    assert pnl == PnL(realized=-50_000, unrealized=100_000 + 100_000, fees=3_000, exposure=1_700_000)
    assert pnl.total == -50_000 + 200_000 - 3_000


def test_unrealized_pnl_is_unknown_while_a_held_market_has_no_mark() -> None:
    ledger = Ledger()
    ledger.apply_fill(fill("bid", "0.40", "2.00"))
    ledger.apply_fill(fill("bid", "0.40", "1.00", ticker=U))
    ledger.apply_fill(fill("ask", "0.50", "1.00", ticker=U))  # flat again: needs no mark
    assert ledger.record(T, None, 0).unrealized_pnl is None
    assert ledger.record(U, None, 0).unrealized_pnl == 0
    pnl = ledger.pnl({U: None})
    assert pnl.unrealized is None
    assert pnl.total == pnl.realized - pnl.fees == 100_000
    assert ledger.pnl({T: 4000}).unrealized == 0


def test_records_cover_every_market_held_or_traded() -> None:
    ledger = Ledger()
    ledger.apply_fill(fill("bid", "0.40", "2.00", ticker=U))
    ledger.apply_fill(fill("bid", "0.40", "1.00"))
    ledger.apply_fill(fill("ask", "0.50", "1.00"))
    records = ledger.records({U: 4100}, at_us=42)
    assert [(r.ticker, r.position, r.mark_price, r.unrealized_pnl, r.at_us) for r in records] == [
        (U, 200, 4100, 20_000, 42),
        (T, 0, None, 0, 42),
    ]
    assert Ledger().records({}, 0) == []


def exchange_position(ticker: str, position: int, cost: int, realized: int, fees: int) -> MarketPosition:
    return MarketPosition(ticker, position, cost, realized, fees, total_traded=0)


def test_load_replaces_what_is_held_and_later_fills_build_on_it() -> None:
    ledger = Ledger()
    ledger.apply_fill(fill("bid", "0.40", "2.00", ticker=U, trade_id="before"))
    ledger.load([exchange_position(T, -300, 1_350_000, 20_000, 9_000)], trade_ids=["in-baseline"])
    assert ledger.position(U) == 0
    assert [r.ticker for r in ledger.records({}, 0)] == [T]
    # Fills the baseline already holds are not booked on top of it.
    assert ledger.apply_fill(fill("bid", "0.40", "2.00", ticker=U, trade_id="before")) is False
    assert ledger.apply_fill(fill("ask", "0.50", "1.00", trade_id="in-baseline")) is False
    assert ledger.apply_fill(fill("bid", "0.50", "1.00", fee=1_750)) is True
    # Closing 1.00 of 3.00 NO releases a third of the cost and is worth 0.50 a contract.
    assert held(ledger) == Held(-200, 900_000, 20_000 + 500_000 - 450_000, 10_750)


def test_differences_name_each_field_that_differs() -> None:
    ledger = Ledger()
    ledger.apply_fill(fill("bid", "0.40", "2.00", fee=1_000))
    assert ledger.differences([exchange_position(T, 200, 800_000, 0, 1_000)]) == []
    assert ledger.differences([exchange_position(T, 300, 800_000, 0, 1_500), exchange_position(U, 0, 0, 5, 0)]) == [
        f"{U} realized_pnl: trader 0.000000, exchange 0.000005",
        f"{T} position: trader 2.00, exchange 3.00",
        f"{T} fees_paid: trader 0.001000, exchange 0.001500",
    ]
    assert ledger.differences([]) == [
        f"{T} position: trader 2.00, exchange 0.00",
        f"{T} market_exposure: trader 0.800000, exchange 0.000000",
        f"{T} fees_paid: trader 0.001000, exchange 0.000000",
    ]


# ---------------------------------------------------------------------------------------------- the exchange


class Run:
    """One account trading two markets of the exchange's desk, with the house moving the books."""

    OWNER = "me"

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.markets = {
            ticker: SimMarket(ticker, rng=random.Random(f"{seed}:{ticker}"), close_time="", history_size=10)
            for ticker in (T, U)
        }
        # One market charges makers too, so maker fills carry fees.
        self.markets[U].matching.maker_fee_rate = MAKER_FEE_RATE_CHARGED
        self.desk = Desk(self.markets)
        self.events = itertools.count(1)
        self.fills: list[FillRecord] = []
        self.after: list[Held] = []
        """The exchange's position right after each fill, as it reported it."""
        self.desk.on_event = self._on_event

    def _on_event(self, event: DeskEvent) -> None:
        if isinstance(event, FillUpdate) and event.fill.owner == self.OWNER:
            f = event.fill
            self.fills.append(
                FillRecord(
                    f.trade_id,
                    f.order_id,
                    event.client_order_id,
                    f.ticker,
                    f.side,
                    f.price,
                    f.count,
                    f.fee,
                    f.is_taker,
                    event.post_position,
                    f.ts_us // 1000,
                    f.ts_us,
                )
            )
        elif isinstance(event, PositionUpdate) and event.owner == self.OWNER:
            p = event.position
            self.after.append(Held(p.position, p.cost, p.realized_pnl, p.fees_paid))

    def step(self) -> None:
        market = self.markets[self.rng.choice((T, U))]
        roll = self.rng.random()
        if roll < 0.45:
            self._order(market)
        elif roll < 0.55:
            resting = [o for o in self.desk.orders(self.OWNER) if o.status == "resting"]
            if resting:
                self.desk.cancel(self.OWNER, self.rng.choice(resting).order_id)
        else:
            self.desk.house_fills(market.house_change(market.next_change()))
        for m in self.markets.values():
            for change in m.take_changes():
                m.apply(change, next(self.events))

    def _order(self, market: SimMarket) -> None:
        side: BookSide = self.rng.choice(("bid", "ask"))
        bid, no_bid = market.best("yes"), market.best("no")
        touch = (DOLLAR - no_bid if no_bid is not None else 5000) if side == "bid" else (bid or 5000)
        index = market.prices.index(touch) + self.rng.randint(-3, 3) * (1 if side == "bid" else -1)
        price = market.prices[min(len(market.prices) - 1, max(0, index))]
        # Odd sizes, so partial closes leave costs that do not divide evenly.
        count = self.rng.choice((1, 7, 33, 100, 150, 250, 499))
        tif: TimeInForce = self.rng.choice(("good_till_canceled", "immediate_or_cancel"))
        with contextlib.suppress(OrderRejected):
            self.desk.create(self.OWNER, NewOrder(market.ticker, side, count, price, time_in_force=tif))


def test_the_ledger_equals_the_exchange_after_every_trade_of_a_random_run() -> None:
    run = Run(seed=12)
    ledger = Ledger()
    booked = 0
    seen = {"maker": 0, "taker": 0, "flip": 0, "uneven partial close": 0, "maker fee": 0}
    for _ in range(1500):
        run.step()
        assert len(run.after) == len(run.fills)
        for f, exchange_after in zip(run.fills[booked:], run.after[booked:], strict=True):
            before = held(ledger, f.ticker)
            assert ledger.apply_fill(f) is True
            after = held(ledger, f.ticker)
            assert after == exchange_after
            assert after.position == f.post_position
            seen["maker" if not f.is_taker else "taker"] += 1
            seen["maker fee"] += not f.is_taker and f.fee > 0
            seen["flip"] += before.position * after.position < 0
            partial = before.position * after.position > 0 and abs(after.position) < abs(before.position)
            closed = abs(before.position) - abs(after.position)
            seen["uneven partial close"] += partial and before.cost * closed % abs(before.position) != 0
        booked = len(run.fills)
        # And the other market, untouched by these fills, still agrees too.
        for ticker in (T, U):
            p = run.desk.account(Run.OWNER).positions.get(ticker)
            exchange = Held(p.position, p.cost, p.realized_pnl, p.fees_paid) if p else Held(0, 0, 0, 0)
            assert held(ledger, ticker) == exchange
    assert all(n >= 3 for n in seen.values()), seen
    # And as the exchange renders them for GET /portfolio/positions.
    positions = [
        MarketPosition.from_json(position_body(t, p)) for t, p in run.desk.account(Run.OWNER).positions.items()
    ]
    assert ledger.differences(positions) == []
    # Replaying every fill books nothing twice.
    assert not any(ledger.apply_fill(f) for f in run.fills)
    assert ledger.differences(positions) == []
