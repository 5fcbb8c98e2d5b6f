"""The V2 order client and the private feed against the built-in exchange: matching, money, positions,
settlement, private messages, reconciliation, faults and the trading rules, checked against the exchange's
own answers in exact integers (micro-dollars, 1/100 contract, 1/10,000 dollar)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest

from apps.exchange.config import DEFAULT_MARKETS
from apps.exchange.market import Change
from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.account import AccountState, Holding, OpenOrder
from apps.kalshi.backoff import Backoff
from apps.kalshi.environments import Environment, TradingPermission, TradingRefused
from apps.kalshi.feed import FeedEvent, FeedEventKind
from apps.kalshi.portfolio import AmendRequest, CancelRequest, DecreaseRequest, OrderError, OrderRequest
from apps.kalshi.privatefeed import PrivateFeed
from apps.kalshi.privatemessages import FillMessage, MarketPositionMessage, PrivateMessage, UserOrderMessage
from apps.kalshi.resterrors import KalshiRestError
from apps.kalshi.signing import Credentials
from apps.kalshi.trading import KalshiTradingClient
from tests.exchange.helpers import another_account, clear_book
from tests.support import StartSim, eventually

FED, CPI = DEFAULT_MARKETS[:2]
SIM = TradingPermission(Environment.SIM)
START = 10_000_000_000
"""Every account starts with $10,000 (micro-dollars)."""


def fast() -> Backoff:
    return Backoff(initial=0.001, cap=0.005)


@dataclass
class Market:
    """A started exchange with FED's simulated liquidity withdrawn, ``me`` trading and ``them`` (another API
    key, an account of its own) on the other side."""

    sim: ExchangeSimulator
    credentials: Credentials
    stack: AsyncExitStack
    me: KalshiTradingClient
    them: KalshiTradingClient

    async def client(
        self, credentials: Credentials, *, max_retries_429: int = 8, max_retries_failure: int = 3
    ) -> KalshiTradingClient:
        return await trading_client(self.sim, credentials, self.stack, max_retries_429, max_retries_failure)


async def trading_client(
    sim: ExchangeSimulator,
    credentials: Credentials,
    stack: AsyncExitStack,
    max_retries_429: int = 8,
    max_retries_failure: int = 3,
) -> KalshiTradingClient:
    client = KalshiTradingClient(
        sim.api_url,
        credentials,
        SIM,
        backoff=fast(),
        max_retries_429=max_retries_429,
        max_retries_failure=max_retries_failure,
    )
    return await stack.enter_async_context(client)


async def open_market(sim: ExchangeSimulator, credentials: Credentials, stack: AsyncExitStack) -> Market:
    clear_book(sim, FED)
    me = await trading_client(sim, credentials, stack)
    them = await trading_client(sim, another_account(sim, "counterparty"), stack)
    return Market(sim, credentials, stack, me, them)


@pytest.fixture
async def market(start_sim: StartSim, credentials: Credentials) -> AsyncIterator[Market]:
    async with AsyncExitStack() as stack:
        yield await open_market(await start_sim(), credentials, stack)


# ------------------------------------------------------------------------------------------ matching and money


async def test_a_crossing_bid_fills_at_the_resting_prices_and_rests_the_rest(market: Market) -> None:
    me, them = market.me, market.them
    await them.create_order(OrderRequest.sell_yes(FED, 500, 5600))
    await them.create_order(OrderRequest.sell_yes(FED, 300, 5500))
    request = OrderRequest.buy_yes(FED, 1000, 6000)
    placed = await me.create_order(request)
    # Taker fees, 0.07 x C x P x (1 - P) rounded up to $0.000001: 3 at 0.55 and 5 at 0.56.
    fees = 51_975 + 86_240
    assert (placed.client_order_id, placed.fill_count, placed.remaining_count) == (request.client_order_id, 800, 200)
    assert (placed.average_fill_price, placed.average_fee_paid) == (556_250, 17_277)  # $4.45 / 8, $0.138215 / 8

    order = await me.get_order(placed.order_id)
    assert (order.status, order.book_side, order.outcome_side, order.yes_price, order.no_price) == (
        "resting",
        "bid",
        "yes",
        6000,
        4000,
    )
    assert (order.initial_count, order.fill_count, order.remaining_count) == (1000, 800, 200)
    assert (order.taker_fill_cost, order.taker_fees, order.maker_fill_cost, order.maker_fees) == (4_450_000, fees, 0, 0)

    fills = (await me.get_fills(order_id=placed.order_id)).items
    assert [(f.yes_price, f.no_price, f.count, f.is_taker, f.fee_cost) for f in fills] == [
        (5600, 4400, 500, True, 86_240),
        (5500, 4500, 300, True, 51_975),
    ]
    their_fills = (await them.get_fills(ticker=[FED, CPI])).items
    assert {(f.book_side, f.outcome_side, f.is_taker, f.fee_cost) for f in their_fills} == {("ask", "no", False, 0)}
    assert sorted(f.fill_id for f in their_fills) == sorted(f.fill_id for f in fills)  # one trade, two sides

    # Cash: $4.45 paid, the fees, and $1.20 held back for the 2 YES resting at 0.60.
    mine = await me.get_balance()
    assert mine.balance == START - 4_450_000 - fees - 1_200_000 == 9_994_211_785
    assert (mine.portfolio_value, mine.by_exchange_index) == (4_450_000, ((0, 9_994_211_785),))
    assert (await them.get_balance()).balance == START - 3_550_000  # 5 NO at 0.44 and 3 at 0.45

    (position,) = [p async for p in me.positions()]
    assert (position.ticker, position.position, position.market_exposure) == (FED, 800, 4_450_000)
    assert (position.realized_pnl, position.fees_paid, position.total_traded) == (0, fees, 4_450_000)
    (theirs,) = [p async for p in them.positions()]
    assert (theirs.position, theirs.market_exposure, theirs.fees_paid) == (-800, 3_550_000, 0)


async def test_time_in_force_ioc_cancels_the_rest_and_fok_fills_all_or_nothing(market: Market) -> None:
    me, them = market.me, market.them
    await them.create_order(OrderRequest.sell_yes(FED, 400, 5000))
    killed = await me.create_order(OrderRequest.buy_yes(FED, 500, 5000, time_in_force="fill_or_kill"))
    assert (killed.fill_count, killed.remaining_count) == (0, 0)
    assert (await me.get_order(killed.order_id)).status == "canceled"

    partial = await me.create_order(OrderRequest.buy_yes(FED, 500, 5000, time_in_force="immediate_or_cancel"))
    assert (partial.fill_count, partial.remaining_count) == (400, 0)
    order = await me.get_order(partial.order_id)
    assert (order.status, order.fill_count, order.remaining_count) == ("canceled", 400, 0)

    await them.create_order(OrderRequest.sell_yes(FED, 400, 5000))
    whole = await me.create_order(OrderRequest.buy_yes(FED, 400, 5000, time_in_force="fill_or_kill"))
    assert (whole.fill_count, whole.remaining_count) == (400, 0)
    assert (await me.get_order(whole.order_id)).status == "executed"
    assert [o async for o in me.orders(status="resting")] == []
    assert (await me.get_balance()).balance == START - 4_000_000 - 2 * 70_000  # 8 YES at 0.50, 2 fees of $0.07


async def test_self_trade_prevention_cancels_the_taker_or_the_resting_maker(market: Market) -> None:
    me, them = market.me, market.them
    await them.create_order(OrderRequest.sell_yes(FED, 100, 4900))
    my_ask = await me.create_order(OrderRequest.sell_yes(FED, 200, 5000))
    await them.create_order(OrderRequest.sell_yes(FED, 300, 5000))

    # taker_at_cross: the fill before my own ask stands, then the taker stops.
    taker = await me.create_order(OrderRequest.buy_yes(FED, 500, 5000))
    assert (taker.fill_count, taker.remaining_count) == (100, 0)
    assert (await me.get_order(taker.order_id)).status == "canceled"
    assert (await me.get_order(my_ask.order_id)).remaining_count == 200

    # maker: my resting ask goes, and the bid trades on with theirs behind it.
    maker = await me.create_order(OrderRequest.buy_yes(FED, 500, 5000, self_trade_prevention_type="maker"))
    assert (maker.fill_count, maker.remaining_count) == (300, 200)
    cancelled = await me.get_order(my_ask.order_id)
    assert (cancelled.status, cancelled.fill_count, cancelled.remaining_count) == ("canceled", 0, 0)
    assert [f.count for f in (await me.get_fills()).items] == [300, 100]
    (position,) = [p async for p in me.positions()]
    assert position.position == 400


async def test_post_only_that_would_cross_is_refused_with_kalshis_error(market: Market) -> None:
    me, them = market.me, market.them
    await them.create_order(OrderRequest.sell_yes(FED, 400, 5000))
    with pytest.raises(KalshiRestError) as caught:
        await me.create_order(OrderRequest.buy_yes(FED, 100, 5000, post_only=True))
    error = caught.value
    assert (error.status, error.code, error.details) == (400, "invalid_order", "post only cross")
    assert str(error) == "POST /trade-api/v2/portfolio/events/orders: HTTP 400: invalid_order: post only cross"
    resting = await me.create_order(OrderRequest.buy_yes(FED, 100, 4900, post_only=True))
    assert [(o.order_id, o.yes_price, o.remaining_count) async for o in me.orders(status="resting")] == [
        (resting.order_id, 4900, 100)
    ]


async def test_reduce_only_never_grows_a_position(market: Market) -> None:
    me, them = market.me, market.them
    await them.create_order(OrderRequest.buy_yes(FED, 1000, 4000))
    reduce = {"time_in_force": "immediate_or_cancel", "reduce_only": True}
    nothing = await me.create_order(OrderRequest.sell_yes(FED, 200, 4000, **reduce))
    assert nothing.fill_count == 0  # nothing held, nothing to reduce
    assert [p async for p in me.positions()] == []

    await them.create_order(OrderRequest.sell_yes(FED, 300, 4500))
    await me.create_order(OrderRequest.buy_yes(FED, 300, 4500))
    closed = await me.create_order(OrderRequest.sell_yes(FED, 500, 4000, **reduce))
    assert (closed.fill_count, closed.remaining_count) == (300, 0)  # capped at the 3 held
    (position,) = [p async for p in me.positions()]
    # Bought 3 at 0.45, sold 3 at 0.40; fees 0.07 x 3 x 0.45 x 0.55 and 0.07 x 3 x 0.40 x 0.60.
    assert (position.position, position.realized_pnl, position.fees_paid) == (0, -150_000, 51_975 + 50_400)


async def test_positions_carry_cost_basis_realized_pnl_and_fees_and_the_balance_follows(market: Market) -> None:
    me, them = market.me, market.them
    await them.create_order(OrderRequest.sell_yes(FED, 1000, 3000))
    await me.create_order(OrderRequest.buy_yes(FED, 1000, 3000))  # 10 YES at 0.30
    await them.create_order(OrderRequest.buy_yes(FED, 400, 4000))
    await me.create_order(OrderRequest.sell_yes(FED, 400, 4000))  # 4 of them sold at 0.40
    fees = 147_000 + 67_200  # 0.07 x 10 x 0.3 x 0.7 and 0.07 x 4 x 0.4 x 0.6

    (position,) = [p async for p in me.positions()]
    assert (position.position, position.market_exposure, position.realized_pnl, position.fees_paid) == (
        600,
        1_800_000,  # 6 left at 0.30
        400_000,  # 4 x (0.40 - 0.30)
        fees,
    )
    assert position.total_traded == 3_000_000 + 2_400_000  # the YES bought, the NO side of the sale
    page = await me.get_positions()
    (event,) = page.event_positions
    assert (event.total_cost, event.total_cost_shares, event.realized_pnl, event.fees_paid) == (
        1_800_000,
        600,
        400_000,
        fees,
    )
    assert (await me.get_balance()).balance == START - 3_000_000 + 1_600_000 - fees == 9_998_385_800
    (their_position,) = [p async for p in them.positions()]
    assert (their_position.position, their_position.market_exposure) == (-600, 4_200_000)


async def test_settlement_pays_a_dollar_per_winning_contract(market: Market) -> None:
    sim, me, them = market.sim, market.me, market.them
    await them.create_order(OrderRequest.sell_yes(FED, 1000, 3000))
    await me.create_order(OrderRequest.buy_yes(FED, 1000, 3000))
    resting = await me.create_order(OrderRequest.buy_yes(FED, 100, 2000))
    assert len(sim.settle_market(FED, "yes")) == 2

    (settlement,) = (await me.get_settlements()).items
    assert (settlement.ticker, settlement.market_result, settlement.yes_count, settlement.no_count) == (
        FED,
        "yes",
        1000,
        0,
    )
    assert (settlement.yes_total_cost, settlement.revenue, settlement.value, settlement.fee_cost) == (
        3_000_000,
        10_000_000,
        10_000,
        147_000,
    )
    (their_settlement,) = (await them.get_settlements(ticker=FED)).items
    assert (their_settlement.no_count, their_settlement.no_total_cost, their_settlement.revenue) == (
        1000,
        7_000_000,
        0,
    )
    assert (await me.get_order(resting.order_id)).status == "canceled"
    assert (await me.get_balance()).balance == START - 3_000_000 - 147_000 + 10_000_000
    assert (await them.get_balance()).balance == START - 7_000_000
    assert [p async for p in me.positions()] == []
    (settled,) = [p async for p in me.positions(settlement_status="settled")]
    assert (settled.position, settled.realized_pnl, settled.market_exposure) == (0, 7_000_000, 0)
    with pytest.raises(KalshiRestError) as caught:
        await me.create_order(OrderRequest.buy_yes(FED, 100, 3000))
    assert (caught.value.status, caught.value.code) == (400, "market_closed")


async def test_no_orders_expiry_and_fractional_counts_reach_the_exchange_as_sent(market: Market) -> None:
    me, them = market.me, market.them
    no_bid = await them.create_order(OrderRequest.buy_no(FED, 200, 3000))  # rests as a YES ask at 0.70
    order = await them.get_order(no_bid.order_id)
    assert (order.book_side, order.outcome_side, order.yes_price, order.no_price) == ("ask", "no", 7000, 3000)
    expires = int(time.time()) + 3600
    placed = await me.create_order(OrderRequest.buy_yes(FED, 1250, 7000, expiration_time=expires))
    assert (placed.fill_count, placed.remaining_count) == (200, 1050)
    assert (await me.get_order(placed.order_id)).expiration_time is not None
    for options, message in (
        ({"time_in_force": "immediate_or_cancel", "expiration_time": expires}, "Cannot specify both"),
        ({"expiration_time": expires - 7200}, "Expiration timestamp must be in the future"),
    ):
        with pytest.raises(KalshiRestError, match=message) as caught:
            await me.create_order(OrderRequest.buy_yes(FED, 100, 5000, **options))
        assert (caught.value.status, caught.value.code) == (400, "invalid_order")


async def test_the_simulated_flow_fills_a_resting_order_as_maker(market: Market) -> None:
    sim, me = market.sim, market.me
    running = await run_feed(market)
    resting = await me.create_order(OrderRequest.buy_yes(FED, 300, 4000))
    sim.publish_change(FED, Change("yes", 4000, -100, trade=True))  # the house sells 1 YES into the bid
    await eventually(lambda: len(running.account.fills) == 1, what="the maker fill")
    (fill,) = running.account.fills
    assert (fill.order_id, fill.is_taker, fill.count, fill.yes_price, fill.fee_cost) == (
        resting.order_id,
        False,
        100,
        4000,
        0,
    )
    order = await me.get_order(resting.order_id)
    assert (order.fill_count, order.remaining_count, order.maker_fill_cost, order.maker_fees) == (100, 200, 400_000, 0)
    assert running.account.open_orders[resting.order_id].remaining_count == 200
    assert (await me.get_balance()).balance == START - 400_000 - 800_000  # 1 bought at 0.40, 2 still reserved


async def test_a_market_that_charges_makers_takes_a_quarter_rate_fee_from_the_resting_side(
    start_sim: StartSim, credentials: Credentials
) -> None:
    async with AsyncExitStack() as stack:
        market = await open_market(await start_sim(maker_fee_markets=[FED]), credentials, stack)
        me, them = market.me, market.them
        resting = await them.create_order(OrderRequest.sell_yes(FED, 10_000, 5000))
        await me.create_order(OrderRequest.buy_yes(FED, 10_000, 5000))
        # 100 contracts at 0.50: the maker pays 0.0175 x 100 x 0.25, the taker 0.07 x 100 x 0.25.
        maker = await them.get_order(resting.order_id)
        assert (maker.status, maker.maker_fill_cost, maker.maker_fees, maker.taker_fees) == (
            "executed",
            50_000_000,
            437_500,
            0,
        )
        assert [(f.is_taker, f.fee_cost) for f in (await them.get_fills()).items] == [(False, 437_500)]
        assert [(f.is_taker, f.fee_cost) for f in (await me.get_fills()).items] == [(True, 1_750_000)]
        assert (await them.get_balance()).balance == START - 50_000_000 - 437_500
        assert (await me.get_balance()).balance == START - 50_000_000 - 1_750_000


# ------------------------------------------------------------------------------------------ managing orders


async def test_amend_decrease_and_cancel_one_order(market: Market) -> None:
    me, them = market.me, market.them
    await them.create_order(OrderRequest.sell_yes(FED, 200, 4000))
    placed = await me.create_order(OrderRequest.buy_yes(FED, 1000, 4000, client_order_id="bid-1"))
    assert (placed.fill_count, placed.remaining_count) == (200, 800)

    lower = await me.decrease_order(DecreaseRequest(placed.order_id, reduce_by=300))
    assert (lower.client_order_id, lower.remaining_count) == ("bid-1", 500)
    lower = await me.decrease_order(DecreaseRequest(placed.order_id, reduce_to=400))
    assert lower.remaining_count == 400

    # The amend's count is the new total: 2 filled plus 7 to rest, at a new price.
    amended = await me.amend_order(
        AmendRequest(placed.order_id, FED, "bid", price=4100, count=900, updated_client_order_id="bid-2")
    )
    assert (amended.client_order_id, amended.remaining_count, amended.fill_count) == ("bid-2", 700, 0)
    order = await me.get_order(placed.order_id)
    assert (order.client_order_id, order.yes_price, order.initial_count, order.fill_count, order.remaining_count) == (
        "bid-2",
        4100,
        900,
        200,
        700,
    )
    with pytest.raises(KalshiRestError) as caught:
        await me.amend_order(AmendRequest(placed.order_id, FED, "ask", price=4100, count=900))
    assert (caught.value.status, caught.value.code) == (400, "order_side_mismatch")

    cancelled = await me.cancel_order(placed.order_id, market_ticker=FED)
    assert (cancelled.order_id, cancelled.client_order_id, cancelled.reduced_by, cancelled.error) == (
        placed.order_id,
        "bid-2",
        700,
        None,
    )
    with pytest.raises(KalshiRestError) as missing:
        await me.cancel_order(placed.order_id)
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    assert market.sim.true_book(FED).yes == {}


async def test_batch_create_and_cancel_answer_each_order(market: Market) -> None:
    me = market.me
    first = OrderRequest.buy_yes(FED, 100, 4200)
    off_grid = OrderRequest.buy_yes(FED, 100, 4250)
    duplicate = OrderRequest.sell_yes(FED, 100, 5800, client_order_id=first.client_order_id)
    results = await me.create_orders([first, off_grid, duplicate])
    assert [r.request for r in results] == [first, off_grid, duplicate]
    placed = results[0].placement
    assert placed is not None and (placed.client_order_id, placed.remaining_count) == (first.client_order_id, 100)
    assert [(r.placement, r.error.code if r.error else None) for r in results[1:]] == [
        (None, "invalid_order"),
        (None, "order_already_exists"),
    ]

    cancels = await me.cancel_orders([placed.order_id, CancelRequest("no-such-order", market_ticker=FED)])
    assert [(c.order_id, c.reduced_by) for c in cancels] == [(placed.order_id, 100), ("no-such-order", 0)]
    assert cancels[0].error is None
    assert isinstance(cancels[1].error, OrderError) and cancels[1].error.code == "not_found"
    assert [o async for o in me.orders(status="resting")] == []


async def test_only_the_named_method_cancels_everything(market: Market) -> None:
    sim, me, them = market.sim, market.me, market.them
    mine = [await me.create_order(OrderRequest.buy_yes(FED, 100, price)) for price in (4000, 4100)]
    theirs = await them.create_order(OrderRequest.buy_yes(FED, 100, 3900))
    requests = sim.stats["rest_requests"]
    assert await me.cancel_orders([]) == []
    for order_id in ("", "/", "a/b"):
        with pytest.raises(ValueError, match="order_id"):
            await me.cancel_order(order_id)
    assert sim.stats["rest_requests"] == requests  # nothing was sent
    assert len([o async for o in me.orders(status="resting")]) == 2

    await me.cancel_all_orders_account_wide()
    assert [(o.status, o.remaining_count) for o in [await me.get_order(p.order_id) for p in mine]] == [
        ("canceled", 0),
        ("canceled", 0),
    ]
    assert (await them.get_order(theirs.order_id)).status == "resting"  # another account's orders stay
    sim.faults.rest_429 = 1
    with pytest.raises(KalshiRestError) as caught:
        await me.cancel_all_orders_account_wide()
    assert caught.value.status == 429  # sent once, never retried
    assert sim.stats["faults"]["rest_429"] == 1


async def test_lists_follow_the_cursor_with_their_filters(market: Market) -> None:
    me = market.me
    placed = [await me.create_order(OrderRequest.buy_yes(FED, 100, price)) for price in (4100, 4200, 4300)]
    await me.create_order(OrderRequest.buy_yes(CPI, 100, 5000))
    first = await me.get_orders(ticker=FED, status="resting", limit=2)
    assert len(first.items) == 2 and first.cursor
    orders = [o async for o in me.orders(ticker=FED, status="resting", limit=2)]
    assert sorted((o.yes_price, o.no_price) for o in orders) == [(4100, 5900), (4200, 5800), (4300, 5700)]
    assert {o.order_id for o in orders} == {p.order_id for p in placed}
    assert await me.get_order(orders[0].order_id) == orders[0]
    assert len([o async for o in me.orders(limit=1)]) == 4


async def test_a_read_is_retried_after_429s_then_answers(market: Market) -> None:
    sim, me = market.sim, market.me
    sim.faults.rest_429 = 2
    assert (await me.get_balance()).balance == START
    assert me.rest.metrics.retries_429 == 2
    assert sim.stats["faults"]["rest_429"] == 2


# ------------------------------------------------------------------------------------------ faults


async def test_a_create_accepted_but_answered_500_is_not_placed_twice(market: Market) -> None:
    await market.them.create_order(OrderRequest.sell_yes(FED, 100, 4000))
    market.sim.faults.accept_then_5xx = 1
    request = OrderRequest.buy_yes(FED, 300, 4000)
    placement = await market.me.create_order(request)  # 500, then the same client_order_id: 409
    assert placement.recovered
    assert (placement.client_order_id, placement.fill_count, placement.remaining_count) == (
        request.client_order_id,
        100,
        200,
    )
    (order,) = [o async for o in market.me.orders()]
    assert (order.order_id, order.status) == (placement.order_id, "resting")
    assert market.me.rest.metrics.retries_failure == 1
    assert market.sim.stats["faults"]["accept_then_5xx"] == 1
    assert market.sim.true_book(FED).yes == {4000: 200}


async def test_a_create_sent_again_after_the_retries_ran_out_returns_the_order_it_placed(market: Market) -> None:
    await market.them.create_order(OrderRequest.sell_yes(FED, 100, 4200))
    market.sim.faults.accept_then_5xx = 1
    impatient = await market.client(market.credentials, max_retries_failure=0)
    request = OrderRequest.buy_yes(FED, 500, 4200)
    with pytest.raises(KalshiRestError) as caught:
        await impatient.create_order(request)
    assert (caught.value.status, caught.value.code) == (500, "internal_server_error")
    placement = await impatient.create_order(request)
    assert placement.recovered
    assert (placement.fill_count, placement.remaining_count) == (100, 400)
    assert [o.order_id async for o in impatient.orders()] == [placement.order_id]
    # The order does not say at which prices it filled, so the averages stay unknown.
    assert (placement.average_fill_price, placement.average_fee_paid) == (None, None)


# ------------------------------------------------------------------------------------------ private channels


class RecordingAccount(AccountState):
    """The account state, keeping every private message and connection event too; ``hold_reconnect`` keeps
    the feed from reconnecting after a drop until the test has changed the account."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[PrivateMessage] = []
        self.events: list[FeedEvent] = []
        self.hold_reconnect: asyncio.Event | None = None

    async def on_private_message(self, message: PrivateMessage) -> None:
        self.messages.append(message)
        await super().on_private_message(message)

    async def on_feed_event(self, event: FeedEvent) -> None:
        self.events.append(event)
        if event.kind is FeedEventKind.DISCONNECTED and self.hold_reconnect is not None:
            await self.hold_reconnect.wait()


@dataclass
class Running:
    feed: PrivateFeed
    account: RecordingAccount
    task: asyncio.Task[None]


async def run_feed(
    market: Market, trading: KalshiTradingClient | None = None, market_tickers: list[str] | None = None
) -> Running:
    account = RecordingAccount()
    feed = PrivateFeed(
        url=market.sim.ws_url,
        credentials=market.credentials,
        permission=SIM,
        trading=trading or market.me,
        listener=account,
        market_tickers=market_tickers,
        backoff=fast(),
    )
    task = asyncio.get_running_loop().create_task(feed.run())

    async def stop() -> None:
        if not task.done():  # a test may have seen it end already
            await feed.close()
            await asyncio.wait_for(task, 5)

    market.stack.push_async_callback(stop)
    await eventually(lambda: account.snapshots == 1, what="the first snapshot")
    return Running(feed, account, task)


async def test_private_channels_carry_the_accounts_own_fills_orders_and_positions(market: Market) -> None:
    me, them = market.me, market.them
    running = await run_feed(market)
    account = running.account
    await them.create_order(OrderRequest.sell_yes(FED, 500, 5500))
    request = OrderRequest.buy_yes(FED, 300, 5500)
    taken = await me.create_order(request)
    await eventually(lambda: len(account.messages) == 3, what="a fill, a position and an order")
    fill, position, order = account.messages
    (rest_fill,) = (await me.get_fills()).items
    assert isinstance(fill, FillMessage)
    assert (fill.trade_id, fill.order_id, fill.client_order_id, fill.market_ticker) == (
        rest_fill.fill_id,
        taken.order_id,
        request.client_order_id,
        FED,
    )
    # 3 YES at 0.55 as taker: fee 0.07 x 3 x 0.55 x 0.45.
    assert (fill.book_side, fill.yes_price, fill.count, fill.fee_cost, fill.is_taker, fill.post_position) == (
        "bid",
        5500,
        300,
        51_975,
        True,
        300,
    )
    (rest_position,) = [p async for p in me.positions()]
    assert isinstance(position, MarketPositionMessage)
    assert (position.market_ticker, position.position, position.position_cost, position.fees_paid) == (
        FED,
        rest_position.position,
        rest_position.market_exposure,
        rest_position.fees_paid,
    )
    assert (position.position, position.position_cost, position.realized_pnl, position.volume) == (
        300,
        1_650_000,
        0,
        300,
    )
    assert isinstance(order, UserOrderMessage)
    assert (order.order_id, order.status, order.fill_count, order.remaining_count, order.last_update_reason) == (
        taken.order_id,
        "executed",
        300,
        0,
        "Trade",
    )
    assert (order.taker_fill_cost, order.taker_fees) == (1_650_000, 51_975)

    # A resting bid, then their sell takes it: a maker fill, without fee.
    resting = await me.create_order(OrderRequest.buy_yes(FED, 100, 5000))
    await eventually(lambda: resting.order_id in account.open_orders, what="the resting order's message")
    await them.create_order(OrderRequest.sell_yes(FED, 100, 5000))
    await eventually(lambda: account.position(FED) == 400, what="the maker fill's position")
    assert account.open_orders == {}
    maker_fill = account.fills[-1]
    assert (maker_fill.order_id, maker_fill.is_taker, maker_fill.fee_cost, maker_fill.post_position) == (
        resting.order_id,
        False,
        0,
        400,
    )
    assert account.holdings == {FED: Holding(FED, 400, 0, 51_975)}
    mine = {taken.order_id, resting.order_id}
    assert {m.order_id for m in account.messages if isinstance(m, UserOrderMessage | FillMessage)} == mine


async def test_after_a_dropped_connection_the_feed_reconciles_what_it_missed(market: Market) -> None:
    sim, me, them = market.sim, market.me, market.them
    resting = await me.create_order(OrderRequest.buy_yes(FED, 200, 4000))
    running = await run_feed(market)
    account = running.account
    assert list(account.open_orders) == [resting.order_id]
    account.hold_reconnect = asyncio.Event()
    assert sim.drop_connections() == 1
    await eventually(lambda: any(e.kind is FeedEventKind.DISCONNECTED for e in account.events), what="the drop")
    # While the feed is away its order is cancelled and a trade is made: no private message tells it.
    await me.cancel_order(resting.order_id)
    await them.create_order(OrderRequest.sell_yes(FED, 100, 5000))
    await me.create_order(OrderRequest.buy_yes(FED, 100, 5000))
    assert account.messages == []
    account.hold_reconnect.set()
    await eventually(lambda: account.snapshots == 2, what="the snapshot after reconnecting")
    assert account.open_orders == {}
    (position,) = [p async for p in me.positions()]
    assert account.holdings == {FED: Holding(FED, 100, 0, 17_500)} == {FED: Holding.from_position(position)}
    assert account.balance == await me.get_balance()
    assert running.feed.counters.reconnects == 1
    assert [e.kind for e in account.events] == [
        FeedEventKind.CONNECTED,
        FeedEventKind.SUBSCRIBED,
        FeedEventKind.DISCONNECTED,
        FeedEventKind.CONNECTED,
        FeedEventKind.SUBSCRIBED,
    ]


async def test_a_dropped_private_message_is_repaired_by_a_reconcile_on_demand(market: Market) -> None:
    sim, me = market.sim, market.me
    running = await run_feed(market)
    account = running.account
    sim.faults.drop_private = 1
    lost = await me.create_order(OrderRequest.buy_yes(FED, 100, 4000))
    kept = await me.create_order(OrderRequest.buy_yes(FED, 100, 4100))
    await eventually(lambda: kept.order_id in account.open_orders, what="the second order's message")
    assert lost.order_id not in account.open_orders
    snapshot = await running.feed.reconcile()
    assert {o.order_id for o in snapshot.open_orders} == {lost.order_id, kept.order_id}
    assert account.open_orders[lost.order_id] == OpenOrder(
        lost.order_id, lost.client_order_id or "", FED, "bid", 4000, 100, 0
    )
    assert sim.stats["faults"]["drop_private"] == 1


async def test_a_failed_reconcile_drops_the_connection_and_tries_again(market: Market) -> None:
    sim = market.sim
    impatient = await market.client(market.credentials, max_retries_429=0)
    sim.faults.rest_429 = 1
    running = await run_feed(market, impatient)
    assert running.feed.counters.reconnects == 1
    assert any("reconcile failed" in e.reason and "429" in e.reason for e in running.account.events)


async def test_a_feed_for_some_markets_hears_only_those(market: Market) -> None:
    me = market.me
    account = (await run_feed(market, market_tickers=[CPI])).account
    await me.create_order(OrderRequest.buy_yes(FED, 100, 4000))
    in_cpi = await me.create_order(OrderRequest.buy_yes(CPI, 100, 4000))
    await eventually(lambda: len(account.messages) == 1, what="the CPI order's message")
    assert [(m.order_id, m.ticker) for m in account.messages if isinstance(m, UserOrderMessage)] == [
        (in_cpi.order_id, CPI)
    ]


# ------------------------------------------------------------------------------------------ trading rules


async def test_sim_trades_only_with_the_loopback_exchange(market: Market) -> None:
    sim, me, credentials = market.sim, market.me, market.credentials
    port, ws_port = sim.rest_port, sim.port
    for url in (
        f"http://10.0.0.1:{port}/trade-api/v2",
        f"http://localhost.evil.com:{port}/trade-api/v2",
        f"http://127.0.0.1@evil.com:{port}/trade-api/v2",
    ):
        with pytest.raises(TradingRefused):
            KalshiTradingClient(url, credentials, SIM)
    with pytest.raises(TradingRefused, match="loopback"):
        PrivateFeed(
            url=f"ws://10.0.0.1:{ws_port}/trade-api/ws/v2",
            credentials=credentials,
            permission=SIM,
            trading=me,
            listener=AccountState(),
        )
    # The exchange's own loopback URLs are for sim only.
    for permission, rule in (
        (TradingPermission(Environment.PAPER), "paper trades only"),
        (TradingPermission(Environment.LOCAL), "market data only"),
        (TradingPermission(Environment.PRODUCTION, confirm_production=True), "trading explicitly enabled"),
    ):
        with pytest.raises(TradingRefused, match=rule):
            KalshiTradingClient(sim.api_url, credentials, permission)
        with pytest.raises(TradingRefused, match=rule):
            PrivateFeed(
                url=sim.ws_url, credentials=credentials, permission=permission, trading=me, listener=AccountState()
            )
    assert sim.stats["rest_requests"] == 0


async def test_the_rules_are_checked_again_before_every_request_and_connect(market: Market) -> None:
    sim, me = market.sim, market.me
    running = await run_feed(market)
    requests = sim.stats["rest_requests"]
    me.permission = TradingPermission(Environment.LOCAL)
    with pytest.raises(TradingRefused, match="local is market data only"):
        await me.create_order(OrderRequest.buy_yes(FED, 100, 4200))
    assert sim.stats["rest_requests"] == requests

    running.feed.permission = TradingPermission(Environment.LOCAL)
    sim.drop_connections()
    with pytest.raises(TradingRefused, match="local is market data only"):
        await asyncio.wait_for(running.task, 5)
    assert sim.stats["connections"] == 0


async def test_changes_to_an_order_whose_answer_was_lost_resolve_to_what_the_exchange_did(market: Market) -> None:
    me = market.me
    placed = await me.create_order(OrderRequest.buy_yes(FED, 1000, 3900, client_order_id="lost-1"))
    market.sim.faults.accept_then_5xx = 1  # the change is carried out, then answered 500
    lower = await me.decrease_order(DecreaseRequest(placed.order_id, reduce_to=600))
    # Sent again, the same end state is simply granted once more.
    assert (lower.remaining_count, lower.recovered, me.rest.metrics.retries_failure) == (600, False, 1)

    market.sim.faults.accept_then_5xx = 1
    amended = await me.amend_order(
        AmendRequest(
            placed.order_id,
            FED,
            "bid",
            price=3800,
            count=700,
            client_order_id="lost-1",
            updated_client_order_id="lost-2",
        )
    )
    # Sent again with its old client_order_id, the amend is refused: the order shows it was done.
    assert (amended.order_id, amended.client_order_id, amended.remaining_count) == (placed.order_id, "lost-2", 700)
    assert (amended.recovered, amended.fill_count) == (True, None)
    order = await me.get_order(placed.order_id)
    assert (order.yes_price, order.remaining_count) == (3800, 700)

    market.sim.faults.accept_then_5xx = 1
    gone = await me.decrease_order(DecreaseRequest(placed.order_id, reduce_to=0))
    assert (gone.remaining_count, gone.recovered) == (0, True)  # the first attempt cancelled it
    assert (await me.get_order(placed.order_id)).status == "canceled"

    other = await me.create_order(OrderRequest.buy_yes(FED, 500, 3700, client_order_id="lost-3"))
    market.sim.faults.accept_then_5xx = 1
    cancelled = await me.cancel_order(other.order_id)
    assert (cancelled.order_id, cancelled.client_order_id, cancelled.reduced_by, cancelled.recovered) == (
        other.order_id,
        "lost-3",
        None,
        True,
    )
    assert market.sim.stats["faults"]["accept_then_5xx"] == 4
    assert market.sim.true_book(FED).yes == {}
    # A refusal with no lost answer before it is not second-guessed.
    with pytest.raises(KalshiRestError) as missing:
        await me.cancel_order(other.order_id)
    assert (missing.value.status, missing.value.after_lost_answer) == (404, False)
