"""Trading on the built-in exchange through its V2 REST endpoints: matching, money, validation and accounts."""

from __future__ import annotations

from typing import Any

import pytest

from apps.exchange.config import DEFAULT_MARKETS
from apps.exchange.matching import TAKER_FEE_RATE, trade_fee
from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.fixedpoint import parse_price, parse_size
from apps.kalshi.signing import Credentials
from tests.exchange.helpers import another_account, api, clear_book, http_get
from tests.support import StartSim

FED, CPI, BTC = DEFAULT_MARKETS[:3]
START = 10_000_000_000
"""$10,000 in micro-dollars."""
ORDERS = "/portfolio/events/orders"


def order(side: str, price: str, count: str, **fields: Any) -> dict[str, Any]:
    body = {
        "ticker": FED,
        "side": side,
        "price": price,
        "count": count,
        "time_in_force": "good_till_canceled",
        "self_trade_prevention_type": "taker_at_cross",
    }
    body.update(fields)
    return body


def fee(count: str, price: str) -> int:
    return trade_fee(parse_size(count), parse_price(price), TAKER_FEE_RATE)


async def place(sim: ExchangeSimulator, who: Credentials, body: dict[str, Any]) -> dict[str, Any]:
    status, answer = await api(sim, who, "POST", ORDERS, body)
    assert status == 201, answer
    assert isinstance(answer, dict)
    return answer


async def balance(sim: ExchangeSimulator, who: Credentials) -> str:
    status, body = await api(sim, who, "GET", "/portfolio/balance")
    assert status == 200
    assert body["balance"] == int(body["balance_dollars"].replace(".", "")) // 10_000
    return str(body["balance_dollars"])


def dollars(micro: int) -> str:
    return f"{micro // 1_000_000}.{micro % 1_000_000:06d}"


@pytest.fixture
async def market(start_sim: StartSim) -> ExchangeSimulator:
    sim = await start_sim()
    clear_book(sim, FED)
    return sim


async def test_a_bid_takes_the_resting_asks_at_their_prices_and_rests_the_rest(
    market: ExchangeSimulator, credentials: Credentials
) -> None:
    sim, me = market, credentials
    maker = another_account(sim, "maker")
    await place(sim, maker, order("ask", "0.56", "5.00"))
    await place(sim, maker, order("ask", "0.55", "3.00"))
    assert sim.true_book(FED).no == {parse_price("0.44"): 500, parse_price("0.45"): 300}

    placed = await place(sim, me, order("bid", "0.60", "10.00", client_order_id="mine-1"))
    taker_fees = fee("3.00", "0.55") + fee("5.00", "0.56")
    assert taker_fees == 51_975 + 86_240
    assert placed["client_order_id"] == "mine-1"
    assert (placed["fill_count"], placed["remaining_count"]) == ("8.00", "2.00")
    assert placed["average_fill_price"] == "0.556250"  # (3 x 0.55 + 5 x 0.56) / 8
    assert placed["average_fee_paid"] == "0.017277"  # $0.138215 / 8, rounded half up
    # The asks are gone and the rest of the bid shows on the public book.
    book = sim.true_book(FED)
    assert (book.no, book.yes) == ({}, {parse_price("0.60"): 200})

    cost = 4_450_000  # 3 x 0.55 + 5 x 0.56
    reserved = 1_200_000  # 2 YES at 0.60 rest
    assert await balance(sim, me) == dollars(START - cost - taker_fees - reserved) == "9994.211785"
    assert await balance(sim, maker) == dollars(START - 3_550_000)  # NO bought: 5 x 0.44 + 3 x 0.45

    status, body = await api(sim, me, "GET", f"/portfolio/orders/{placed['order_id']}")
    assert status == 200
    mine = body["order"]
    assert mine["status"] == "resting"
    assert (mine["book_side"], mine["outcome_side"], mine["yes_price_dollars"]) == ("bid", "yes", "0.6000")
    assert (mine["fill_count_fp"], mine["remaining_count_fp"], mine["initial_count_fp"]) == ("8.00", "2.00", "10.00")
    assert mine["taker_fill_cost_dollars"] == "4.450000"
    assert mine["taker_fees_dollars"] == dollars(taker_fees)
    assert mine["maker_fees_dollars"] == "0.000000"

    status, body = await api(sim, me, "GET", "/portfolio/fills")
    assert [(f["yes_price_dollars"], f["count_fp"], f["is_taker"]) for f in body["fills"]] == [
        ("0.5600", "5.00", True),
        ("0.5500", "3.00", True),
    ]
    assert "client_order_id" not in body["fills"][0]
    _, body = await api(sim, maker, "GET", "/portfolio/fills")
    assert {(f["fee_cost"], f["is_taker"], f["book_side"]) for f in body["fills"]} == {("0.000000", False, "ask")}

    _, body = await api(sim, me, "GET", "/portfolio/positions")
    (position,) = body["market_positions"]
    assert (position["ticker"], position["position_fp"]) == (FED, "8.00")
    assert position["market_exposure_dollars"] == "4.450000"
    assert position["fees_paid_dollars"] == dollars(taker_fees)
    assert position["realized_pnl_dollars"] == "0.000000"
    _, body = await api(sim, maker, "GET", "/portfolio/positions")
    assert body["market_positions"][0]["position_fp"] == "-8.00"  # NO held


async def test_time_in_force_ioc_cancels_the_rest_and_fok_fills_all_or_nothing(
    market: ExchangeSimulator, credentials: Credentials
) -> None:
    sim, me = market, credentials
    maker = another_account(sim, "maker")
    await place(sim, maker, order("ask", "0.50", "4.00"))
    placed = await place(sim, me, order("bid", "0.50", "5.00", time_in_force="fill_or_kill"))
    assert (placed["fill_count"], placed["remaining_count"]) == ("0.00", "0.00")
    _, body = await api(sim, me, "GET", f"/portfolio/orders/{placed['order_id']}")
    assert body["order"]["status"] == "canceled"
    assert sim.true_book(FED).no == {parse_price("0.50"): 400}

    placed = await place(sim, me, order("bid", "0.50", "5.00", time_in_force="immediate_or_cancel"))
    assert (placed["fill_count"], placed["remaining_count"]) == ("4.00", "0.00")
    _, body = await api(sim, me, "GET", f"/portfolio/orders/{placed['order_id']}")
    assert (body["order"]["status"], body["order"]["fill_count_fp"]) == ("canceled", "4.00")
    assert sim.true_book(FED).yes == {}

    await place(sim, maker, order("ask", "0.50", "4.00"))
    placed = await place(sim, me, order("bid", "0.50", "4.00", time_in_force="fill_or_kill"))
    assert (placed["fill_count"], placed["remaining_count"]) == ("4.00", "0.00")
    _, body = await api(sim, me, "GET", f"/portfolio/orders/{placed['order_id']}")
    assert body["order"]["status"] == "executed"


async def test_post_only_that_would_cross_is_refused_and_one_that_does_not_rests(
    market: ExchangeSimulator, credentials: Credentials
) -> None:
    sim, me = market, credentials
    maker = another_account(sim, "maker")
    await place(sim, maker, order("ask", "0.50", "4.00"))
    status, body = await api(sim, me, "POST", ORDERS, order("bid", "0.50", "1.00", post_only=True))
    assert status == 400
    assert body["error"]["code"] == "invalid_order" and body["error"]["details"] == "post only cross"
    placed = await place(sim, me, order("bid", "0.49", "1.00", post_only=True))
    assert placed["remaining_count"] == "1.00"
    assert sim.true_book(FED).yes == {parse_price("0.49"): 100}


async def test_reduce_only_never_grows_a_position(market: ExchangeSimulator, credentials: Credentials) -> None:
    sim, me = market, credentials
    maker = another_account(sim, "maker")
    await place(sim, maker, order("bid", "0.40", "10.00"))
    ioc = {"time_in_force": "immediate_or_cancel", "reduce_only": True}
    placed = await place(sim, me, order("ask", "0.40", "2.00", **ioc))
    assert placed["fill_count"] == "0.00"  # nothing held: nothing to reduce
    _, body = await api(sim, me, "GET", f"/portfolio/orders/{placed['order_id']}")
    assert body["order"]["status"] == "canceled"

    await place(sim, maker, order("ask", "0.45", "3.00"))
    await place(sim, me, order("bid", "0.45", "3.00"))  # now 3 YES held
    placed = await place(sim, me, order("ask", "0.40", "5.00", **ioc))
    assert placed["fill_count"] == "3.00"  # capped at the position
    _, body = await api(sim, me, "GET", "/portfolio/positions")
    assert body["market_positions"][0]["position_fp"] == "0.00"
    # 3 bought at 0.45 and sold at 0.40: 0.15 lost, fees apart.
    assert body["market_positions"][0]["realized_pnl_dollars"] == "-0.150000"
    status, body = await api(sim, me, "POST", ORDERS, order("ask", "0.40", "1.00", reduce_only=True))
    assert status == 400 and body["error"]["code"] == "invalid_order"


@pytest.mark.parametrize(
    ("prevention", "fill_count", "asks_left"),
    [("taker_at_cross", "0.00", 500), ("maker", "3.00", 0)],
)
async def test_self_trade_prevention(
    market: ExchangeSimulator, credentials: Credentials, prevention: str, fill_count: str, asks_left: int
) -> None:
    sim, me = market, credentials
    maker = another_account(sim, "maker")
    mine = await place(sim, me, order("ask", "0.50", "2.00"))  # my own ask is first in the queue
    await place(sim, maker, order("ask", "0.50", "3.00"))
    placed = await place(sim, me, order("bid", "0.50", "3.00", self_trade_prevention_type=prevention))
    # taker_at_cross: the bid stops at my ask and nothing trades; maker: my ask goes and the bid fills.
    assert placed["fill_count"] == fill_count
    _, body = await api(sim, me, "GET", f"/portfolio/orders/{mine['order_id']}")
    assert body["order"]["status"] == ("resting" if prevention == "taker_at_cross" else "canceled")
    assert sim.true_book(FED).no == ({parse_price("0.50"): asks_left} if asks_left else {})


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"price": "0.555"}, 400, "invalid_order"),  # off the cent grid
        ({"price": "1.00"}, 400, "invalid_order"),
        ({"price": "0"}, 400, "invalid_order"),
        ({"price": "0.12345"}, 400, "invalid_order"),
        ({"count": "0"}, 400, "invalid_order_size"),
        ({"count": "1.005"}, 400, "invalid_order_size"),
        ({"count": "-1.00"}, 400, "invalid_order_size"),
        ({"ticker": "NOPE-26-X"}, 404, "market_not_found"),
        ({"expiration_time": 1_000_000}, 400, "invalid_order"),
        ({"time_in_force": "immediate_or_cancel", "expiration_time": 4_102_444_800}, 400, "invalid_order"),
        ({"time_in_force": "GTT"}, 400, "bad_request"),
        ({"count": 5}, 400, "bad_request"),
        ({"side": "yes"}, 400, "bad_request"),
    ],
)
async def test_validation_uses_kalshis_error_shape(
    market: ExchangeSimulator, credentials: Credentials, changes: dict[str, Any], status: int, code: str
) -> None:
    got, body = await api(market, credentials, "POST", ORDERS, order("bid", "0.40", "1.00") | changes)
    assert (got, body["error"]["code"]) == (status, code)
    assert body["error"].keys() == {"code", "message", "details"}


async def test_deci_cent_markets_take_their_finer_prices(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    best = max(sim.true_book(BTC).yes)
    below = best - 10 if (best - 10) % 100 else best - 20  # a tenth of a cent off the whole cents
    placed = await place(sim, credentials, order("bid", f"{below / 10_000:.4f}", "1.00", ticker=BTC))
    assert placed["remaining_count"] == "1.00"
    status, body = await api(
        sim, credentials, "POST", ORDERS, order("bid", f"{(below - 5) / 10_000:.4f}", "1.00", ticker=BTC)
    )
    assert (status, body["error"]["code"]) == (400, "invalid_order")


async def test_closed_markets_duplicates_and_balance_are_refused(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(starting_balance=1_000_000)  # $1
    clear_book(sim, FED)
    sim.set_market_status(CPI, "closed")
    status, body = await api(sim, credentials, "POST", ORDERS, order("bid", "0.40", "1.00", ticker=CPI))
    assert (status, body["error"]["code"]) == (400, "market_closed")
    await place(sim, credentials, order("bid", "0.40", "1.00", client_order_id="c-1"))
    status, body = await api(sim, credentials, "POST", ORDERS, order("bid", "0.30", "1.00", client_order_id="c-1"))
    assert (status, body["error"]["code"]) == (409, "order_already_exists")
    # $0.60 is left once $0.40 rests: 2 more at 0.40 is too much.
    assert await balance(sim, credentials) == "0.600000"
    status, body = await api(sim, credentials, "POST", ORDERS, order("bid", "0.40", "2.00"))
    assert (status, body["error"]["code"]) == (400, "available_balance_too_low")
    await place(sim, credentials, order("bid", "0.30", "1.00"))  # $0.30 and at most $0.0147 of fee
    assert await balance(sim, credentials) == "0.300000"


async def test_cancel_amend_decrease_and_cancel_all(market: ExchangeSimulator, credentials: Credentials) -> None:
    sim, me = market, credentials
    first = await place(sim, me, order("bid", "0.40", "5.00", client_order_id="a"))
    second = await place(sim, me, order("bid", "0.41", "5.00"))
    status, body = await api(sim, me, "POST", f"{ORDERS}/{first['order_id']}/decrease", {"reduce_by": "2.00"})
    assert (status, body["remaining_count"], body["client_order_id"]) == (200, "3.00", "a")
    status, body = await api(sim, me, "POST", f"{ORDERS}/{first['order_id']}/decrease", {"reduce_to": "1.00"})
    assert body["remaining_count"] == "1.00"
    assert sim.true_book(FED).yes == {parse_price("0.40"): 100, parse_price("0.41"): 500}

    amend = {"ticker": FED, "side": "bid", "price": "0.42", "count": "4.00", "updated_client_order_id": "a2"}
    status, body = await api(sim, me, "POST", f"{ORDERS}/{first['order_id']}/amend", amend)
    assert (status, body["remaining_count"], body["client_order_id"]) == (200, "4.00", "a2")
    assert sim.true_book(FED).yes == {parse_price("0.42"): 400, parse_price("0.41"): 500}
    status, body = await api(sim, me, "POST", f"{ORDERS}/{first['order_id']}/amend", amend | {"side": "ask"})
    assert (status, body["error"]["code"]) == (400, "order_side_mismatch")
    status, body = await api(sim, me, "POST", f"{ORDERS}/{first['order_id']}/amend", amend | {"ticker": CPI})
    assert (status, body["error"]["code"]) == (400, "order_ticker_mismatch")

    status, body = await api(sim, me, "DELETE", f"{ORDERS}/{second['order_id']}")
    assert (status, body["order_id"], body["reduced_by"]) == (200, second["order_id"], "5.00")
    status, body = await api(sim, me, "DELETE", f"{ORDERS}/{second['order_id']}")
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert sim.true_book(FED).yes == {parse_price("0.42"): 400}

    await place(sim, me, order("ask", "0.90", "1.00", ticker=FED))
    status, body = await api(sim, me, "DELETE", ORDERS)
    assert (status, body) == (204, None)
    assert sim.true_book(FED).yes == {} and sim.true_book(FED).no == {}
    _, body = await api(sim, me, "GET", "/portfolio/orders?status=resting")
    assert body["orders"] == []
    _, body = await api(sim, me, "GET", "/portfolio/orders?status=canceled&limit=2")
    assert len(body["orders"]) == 2 and body["cursor"]
    _, rest = await api(sim, me, "GET", f"/portfolio/orders?status=canceled&limit=2&cursor={body['cursor']}")
    assert len(rest["orders"]) == 1 and rest["cursor"] == ""


async def test_batch_create_and_cancel_answer_per_order(market: ExchangeSimulator, credentials: Credentials) -> None:
    sim, me = market, credentials
    status, body = await api(
        sim,
        me,
        "POST",
        f"{ORDERS}/batched",
        {"orders": [order("bid", "0.40", "1.00"), order("bid", "0.555", "1.00"), order("ask", "0.60", "2.00")]},
    )
    assert status == 201
    first, bad, third = body["orders"]
    assert first["remaining_count"] == "1.00" and "error" not in first
    assert bad["error"]["code"] == "invalid_order"
    assert third["remaining_count"] == "2.00"
    status, body = await api(
        sim,
        me,
        "DELETE",
        f"{ORDERS}/batched",
        {"orders": [{"order_id": first["order_id"]}, {"order_id": "nope"}, {"order_id": third["order_id"]}]},
    )
    assert status == 200
    assert [(o["reduced_by"], "error" in o) for o in body["orders"]] == [
        ("1.00", False),
        ("0.00", True),
        ("2.00", False),
    ]
    assert sim.true_book(FED).yes == {} and sim.true_book(FED).no == {}


async def test_accounts_are_isolated_by_api_key(market: ExchangeSimulator, credentials: Credentials) -> None:
    sim, me = market, credentials
    outsider = another_account(sim, "outsider")
    placed = await place(sim, me, order("bid", "0.40", "5.00"))
    status, _ = await api(sim, outsider, "GET", f"/portfolio/orders/{placed['order_id']}")
    assert status == 404
    status, _ = await api(sim, outsider, "DELETE", f"{ORDERS}/{placed['order_id']}")
    assert status == 404
    status, body = await api(sim, outsider, "DELETE", ORDERS)
    assert status == 204
    _, body = await api(sim, outsider, "GET", "/portfolio/orders")
    assert body["orders"] == []
    assert await balance(sim, outsider) == "10000.000000"
    assert await balance(sim, me) == "9998.000000"
    assert sim.true_book(FED).yes == {parse_price("0.40"): 500}


async def test_settlement_pays_a_dollar_per_winning_contract(
    market: ExchangeSimulator, credentials: Credentials
) -> None:
    sim, me = market, credentials
    maker = another_account(sim, "maker")
    await place(sim, maker, order("ask", "0.30", "10.00"))
    await place(sim, me, order("bid", "0.30", "10.00"))  # 10 YES at 0.30 against 10 NO at 0.70
    await place(sim, me, order("bid", "0.20", "1.00"))  # rests until settlement
    paid_fee = fee("10.00", "0.30")
    status, _, raw = await http_get(sim, f"/sim/markets/{FED}/settle", me, method="POST", body=b'{"result": "yes"}')
    assert status == 200 and b'"positions_settled":2' in raw
    assert sim.true_book(FED).yes == {}
    assert await balance(sim, me) == dollars(START - 3_000_000 - paid_fee + 10_000_000)
    assert await balance(sim, maker) == dollars(START - 7_000_000)
    _, body = await api(sim, me, "GET", "/portfolio/settlements")
    (settlement,) = body["settlements"]
    assert (settlement["market_result"], settlement["yes_count_fp"], settlement["revenue"]) == ("yes", "10.00", 1000)
    assert settlement["yes_total_cost_dollars"] == "3.000000"
    _, body = await api(sim, me, "GET", "/portfolio/positions?settlement_status=settled")
    assert body["market_positions"][0]["realized_pnl_dollars"] == "7.000000"
    status, body = await api(sim, me, "POST", ORDERS, order("bid", "0.30", "1.00"))
    assert (status, body["error"]["code"]) == (400, "market_closed")


async def test_the_write_bucket_answers_429_when_empty(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(write_rate=0.001)  # holds 0 tokens after the first burst: 0.001 x 1 s
    status, body = await api(sim, credentials, "POST", ORDERS, order("bid", "0.01", "1.00"))
    assert (status, body) == (429, {"error": "too many requests"})
    sim2 = await start_sim(write_rate=20.0)  # 20 tokens: two creates, then nothing for a while
    clear_book(sim2, FED)
    for _ in range(2):
        await place(sim2, credentials, order("bid", "0.01", "1.00"))
    status, body = await api(sim2, credentials, "POST", ORDERS, order("bid", "0.01", "1.00"))
    assert status == 429
    # A batch must fit at once, even in a fresh account's bucket.
    other = another_account(sim2, "other")
    status, _ = await api(sim2, other, "POST", f"{ORDERS}/batched", {"orders": [order("bid", "0.01", "1.00")] * 3})
    assert status == 429


async def test_makers_pay_a_quarter_rate_fee_only_where_the_market_charges_it(
    start_sim: StartSim, credentials: Credentials
) -> None:
    sim = await start_sim(maker_fee_markets=[FED])
    clear_book(sim, FED)
    clear_book(sim, CPI)
    maker = another_account(sim, "maker")
    for ticker in (FED, CPI):
        await place(sim, maker, order("ask", "0.50", "100.00", ticker=ticker))
        await place(sim, credentials, order("bid", "0.50", "100.00", ticker=ticker))
    _, body = await api(sim, maker, "GET", "/portfolio/fills")
    fees = {f["ticker"]: f["fee_cost"] for f in body["fills"]}
    assert fees == {FED: "0.437500", CPI: "0.000000"}  # 0.0175 x 100 x 0.25
    _, body = await api(sim, credentials, "GET", "/portfolio/fills")
    assert {f["fee_cost"] for f in body["fills"]} == {"1.750000"}  # takers pay 0.07 x 100 x 0.25 everywhere
    # The maker reserved its fee while resting and paid it: 2 x $50 of NO, plus $0.4375.
    assert await balance(sim, maker) == dollars(START - 100_000_000 - 437_500)


async def test_a_paused_exchange_refuses_orders_but_still_cancels(
    market: ExchangeSimulator, credentials: Credentials
) -> None:
    sim = market
    placed = await place(sim, credentials, order("bid", "0.40", "1.00"))
    sim.set_exchange_status(True, trading_active=False)
    status, body = await api(sim, credentials, "POST", ORDERS, order("bid", "0.40", "1.00"))
    assert (status, body["error"]["code"]) == (503, "trading_is_paused")
    status, _ = await api(sim, credentials, "DELETE", f"{ORDERS}/{placed['order_id']}")
    assert status == 200


async def test_the_settle_control_call_checks_its_market_and_result(
    market: ExchangeSimulator, credentials: Credentials
) -> None:
    sim = market
    for path, body, expected in (
        (f"/sim/markets/{FED}/settle", b'{"result": "maybe"}', 400),
        ("/sim/markets/NOPE-1/settle", b'{"result": "no"}', 404),
        (f"/sim/markets/{FED}/resolve", b'{"result": "no"}', 404),
    ):
        status, _, _ = await http_get(sim, path, credentials, method="POST", body=body)
        assert status == expected, path
    status, _, _ = await http_get(sim, f"/sim/markets/{FED}/settle", None, method="POST", body=b'{"result": "no"}')
    assert status == 401  # signed like every other call
    status, body = await api(sim, credentials, "GET", f"/markets/{FED}")
    assert body["market"]["status"] == "active"


async def test_orders_that_close_a_position_reserve_no_cash_but_each_contract_closes_once(
    start_sim: StartSim, credentials: Credentials
) -> None:
    sim = await start_sim(starting_balance=10_000_000)  # $10
    clear_book(sim, FED)
    maker = another_account(sim, "maker")
    await place(sim, maker, order("ask", "0.30", "10.00"))
    await place(sim, credentials, order("bid", "0.30", "10.00"))  # 10 YES: $3 and $0.147 of fee
    assert await balance(sim, credentials) == "6.853000"
    await place(sim, credentials, order("ask", "0.70", "10.00"))  # sells what is held: nothing to reserve
    assert await balance(sim, credentials) == "6.853000"
    await place(sim, credentials, order("ask", "0.70", "5.00"))  # would open 5 NO at 0.30
    assert await balance(sim, credentials) == "5.353000"
    status, body = await api(sim, credentials, "POST", ORDERS, order("ask", "0.70", "18.00"))  # $5.40 of NO
    assert (status, body["error"]["code"]) == (400, "available_balance_too_low")
