"""Private channels (fill, user_orders, market_positions) and users' orders on the public book and stream."""

from __future__ import annotations

import json
from typing import Any

from apps.exchange.config import DEFAULT_MARKETS
from apps.kalshi.fixedpoint import DOLLAR, format_price, parse_price
from apps.kalshi.signing import Credentials
from tests.exchange.helpers import (
    another_account,
    api,
    clear_book,
    drain,
    open_ws,
    recv,
    recv_until,
    send,
    subscribe,
)
from tests.exchange.test_books import Client, assert_same
from tests.support import StartSim

FED, CPI = DEFAULT_MARKETS[:2]
ORDERS = "/portfolio/events/orders"
PRIVATE = ("fill", "user_orders", "market_positions")


def order(side: str, price: str, count: str, **fields: Any) -> dict[str, Any]:
    return {
        "ticker": FED,
        "side": side,
        "price": price,
        "count": count,
        "time_in_force": "good_till_canceled",
        "self_trade_prevention_type": "taker_at_cross",
    } | fields


async def test_private_channels_carry_my_orders_fills_and_positions_without_seq(
    start_sim: StartSim, credentials: Credentials
) -> None:
    sim = await start_sim()
    clear_book(sim, FED)
    maker = another_account(sim, "maker")
    ws = await open_ws(sim, credentials)
    outsider_ws = await open_ws(sim, maker)
    await send(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": list(PRIVATE)}})
    assert [(await recv(ws))["type"] for _ in PRIVATE] == ["subscribed"] * 3
    await send(outsider_ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["user_orders"]}})
    assert (await recv(outsider_ws))["type"] == "subscribed"

    status, _ = await api(sim, maker, "POST", ORDERS, order("ask", "0.55", "3.00"))
    assert status == 201
    # The maker's own connection hears of its order; mine hears nothing of it.
    resting = await recv(outsider_ws)
    maker_id = resting["msg"]["user_id"]
    assert (resting["type"], resting["msg"]["status"]) == ("user_order", "resting")
    assert "maker" not in maker_id  # the key id is a secret: user_id stands for it

    status, placed = await api(sim, credentials, "POST", ORDERS, order("bid", "0.60", "5.00", client_order_id="c-7"))
    assert status == 201
    frames = await recv_until(ws, lambda f: f["type"] == "user_order")
    kinds = [f["type"] for f in frames]
    assert kinds == ["fill", "market_position", "user_order"]
    for frame in frames:
        assert "seq" not in frame
    fill, position, mine = (f["msg"] for f in frames)
    assert fill["order_id"] == placed["order_id"] and fill["client_order_id"] == "c-7"
    assert (fill["market_ticker"], fill["is_taker"], fill["book_side"], fill["outcome_side"]) == (
        FED,
        True,
        "bid",
        "yes",
    )
    assert (fill["yes_price_dollars"], fill["count_fp"], fill["post_position_fp"]) == ("0.5500", "3.00", "3.00")
    assert fill["fee_cost"] == "0.051975"
    assert (position["position_fp"], position["position_cost_dollars"], position["volume_fp"]) == (
        "3.00",
        "1.650000",
        "3.00",
    )
    assert position["fees_paid_dollars"] == "0.051975" and position["realized_pnl_dollars"] == "0.000000"
    assert (mine["status"], mine["fill_count_fp"], mine["remaining_count_fp"], mine["client_order_id"]) == (
        "resting",
        "3.00",
        "2.00",
        "c-7",
    )
    # The maker hears its ask executed, not my order.
    executed = await recv(outsider_ws)
    assert (executed["msg"]["status"], executed["msg"]["user_id"]) == ("executed", maker_id)
    assert mine["user_id"] == position["user_id"] != maker_id

    status, _ = await api(sim, credentials, "DELETE", f"{ORDERS}/{placed['order_id']}")
    canceled = await recv(ws)
    assert (canceled["type"], canceled["msg"]["status"], canceled["msg"]["remaining_count_fp"]) == (
        "user_order",
        "canceled",
        "0.00",
    )
    await ws.close()
    await outsider_ws.close()


async def test_a_market_filter_limits_private_messages(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    ws = await open_ws(sim, credentials)
    params = {"channels": ["user_orders"], "market_tickers": [CPI]}
    await send(ws, {"id": 1, "cmd": "subscribe", "params": params})
    assert (await recv(ws))["type"] == "subscribed"
    for ticker in (FED, CPI):
        status, _ = await api(sim, credentials, "POST", ORDERS, order("bid", "0.01", "1.00", ticker=ticker))
        assert status == 201
    frame = await recv(ws)
    assert frame["msg"]["ticker"] == CPI  # the FED order, placed first, was not sent here
    await ws.close()


async def test_resting_user_orders_show_on_the_public_stream_and_leave_it_when_cancelled(
    start_sim: StartSim, credentials: Credentials
) -> None:
    sim = await start_sim()
    ws = await open_ws(sim, credentials)
    (sid,), frames = await subscribe(ws, [FED])
    client = Client()
    for frame in frames:
        client.apply(json.dumps(frame))
    best_no = max(sim.true_book(FED).no)
    price = DOLLAR - best_no - 100  # a cent below the best ask: a new best bid, crossing nothing
    status, placed = await api(sim, credentials, "POST", ORDERS, order("bid", format_price(price), "7.25"))
    assert status == 201 and placed["remaining_count"] == "7.25"
    delta = await recv(ws)
    assert (delta["msg"]["side"], delta["msg"]["price_dollars"], delta["msg"]["delta_fp"]) == (
        "yes",
        format_price(price),
        "7.25",
    )
    client.apply(json.dumps(delta))
    await api(sim, credentials, "DELETE", f"{ORDERS}/{placed['order_id']}")
    delta = await recv(ws)
    assert (delta["msg"]["price_dollars"], delta["msg"]["delta_fp"]) == (format_price(price), "-7.25")
    client.apply(json.dumps(delta))
    assert_same(client.books[(sid, FED)], sim.book_at(FED, sid, delta["seq"]))
    assert_same(client.books[(sid, FED)], sim.true_book(FED))
    await ws.close()


async def test_the_random_flow_fills_users_resting_orders_and_the_stream_stays_exact(
    start_sim: StartSim, credentials: Credentials
) -> None:
    sim = await start_sim()
    ws = await open_ws(sim, credentials)
    (sid,), frames = await subscribe(ws, [FED])
    await send(ws, {"id": 2, "cmd": "subscribe", "params": {"channels": ["fill"]}})
    client = Client()
    for frame in frames:
        client.apply(json.dumps(frame))
    best_no = max(sim.true_book(FED).no)
    price = DOLLAR - best_no - 100
    status, placed = await api(sim, credentials, "POST", ORDERS, order("bid", format_price(price), "2.00"))
    assert status == 201
    sim.config.message_rate = 3000.0
    fills: list[dict[str, Any]] = []

    while not fills:
        frame = await recv(ws)
        if frame["type"] == "fill":
            fills.append(frame["msg"])
        elif frame["type"] != "subscribed":
            client.apply(json.dumps(frame))
    sim.config.message_rate = 0.0
    fill = fills[0]
    assert (fill["order_id"], fill["is_taker"], fill["fee_cost"]) == (placed["order_id"], False, "0.000000")
    assert parse_price(fill["yes_price_dollars"]) == price  # at my resting price
    status, body = await api(sim, credentials, "GET", "/portfolio/positions")
    assert body["market_positions"][0]["position_fp"] != "0.00"
    # Whatever the flow did, the stream still describes the exchange's book exactly.
    for frame in await drain(ws):
        if frame["type"] == "orderbook_delta":
            client.apply(json.dumps(frame))
    book = client.books[(sid, FED)]
    assert book.seq is not None
    assert_same(book, sim.book_at(FED, sid, book.seq))
    assert_same(book, sim.true_book(FED))
    await ws.close()
