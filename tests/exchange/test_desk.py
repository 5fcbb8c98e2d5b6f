"""The trading desk on its own, with a clock the test moves: expiry and what it tells its listener."""

from __future__ import annotations

import random

from apps.exchange.desk import Desk, DeskEvent, NewOrder, OrderUpdate
from apps.exchange.market import SimMarket
from apps.kalshi.fixedpoint import parse_size

TICKER = "KXTEST-26DEC-T1"
T0 = 1_800_000_000


def test_an_order_rests_until_its_expiration_time_and_then_is_cancelled() -> None:
    market = SimMarket(TICKER, rng=random.Random(1), close_time="", history_size=10)
    clock = [T0 * 1_000_000]
    desk = Desk({TICKER: market}, now_us=lambda: clock[0])
    events: list[DeskEvent] = []
    desk.on_event = events.append
    price = min(market.yes) - 100  # under every bid: rests without trading
    new = NewOrder(TICKER, "bid", parse_size("2.00"), price, expiration_time=T0 + 60)
    order = desk.create("me", new).order
    assert desk.order("me", order.order_id).status == "resting"
    assert desk.available("me") == desk.starting_balance - parse_size("2.00") * price
    clock[0] = (T0 + 59) * 1_000_000
    assert desk.expire() == 0
    clock[0] = (T0 + 60) * 1_000_000
    assert desk.expire() == 1
    expired = desk.order("me", order.order_id)
    assert (expired.status, expired.last_update_reason) == ("canceled", "ExpiryCancel")
    assert isinstance(events[-1], OrderUpdate) and events[-1].order is order
    assert desk.available("me") == desk.starting_balance
    assert price not in market.matching.depth("bid", "me")
