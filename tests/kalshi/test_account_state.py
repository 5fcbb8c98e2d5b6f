"""The account state a strategy reads: built from a REST snapshot, kept current by private messages."""

from __future__ import annotations

import dataclasses
from typing import Any

from apps.kalshi.account import AccountState, Holding, OpenOrder
from apps.kalshi.portfolio import Balance, KalshiOrder, MarketPosition
from apps.kalshi.privatemessages import (
    FillMessage,
    MarketPositionMessage,
    PrivateMessage,
    UserOrderMessage,
    parse_private_frame,
)
from apps.kalshi.trading import AccountSnapshot
from tests.kalshi.test_private_messages import TICKER, fill_frame, market_position_frame, user_order_frame


def parsed(frame: dict[str, Any], kind: type[PrivateMessage]) -> Any:
    message = parse_private_frame(frame)
    assert isinstance(message, kind)
    return message


USER_ORDER: UserOrderMessage = parsed(user_order_frame(), UserOrderMessage)
POSITION: MarketPositionMessage = parsed(market_position_frame(), MarketPositionMessage)
FILL: FillMessage = parsed(fill_frame(), FillMessage)


def resting_order(order_id: str) -> KalshiOrder:
    return KalshiOrder(
        order_id=order_id,
        user_id="u",
        client_order_id=f"c-{order_id}",
        ticker=TICKER,
        outcome_side="no",
        book_side="ask",
        type="limit",
        status="resting",
        yes_price=6000,
        no_price=4000,
        fill_count=0,
        remaining_count=500,
        initial_count=500,
        taker_fill_cost=0,
        maker_fill_cost=0,
        taker_fees=0,
        maker_fees=0,
    )


def snapshot(*orders: KalshiOrder) -> AccountSnapshot:
    position = MarketPosition(TICKER, 300, 1_050_000, 0, 0, 1_050_000)
    return AccountSnapshot(tuple(orders), (position,), Balance(balance=5_000_000, portfolio_value=1_050_000))


async def test_a_snapshot_replaces_everything() -> None:
    state = AccountState()
    await state.on_private_message(USER_ORDER)
    await state.on_account_snapshot(snapshot(resting_order("o-1")))
    assert list(state.open_orders) == ["o-1"]
    assert state.open_orders["o-1"] == OpenOrder("o-1", "c-o-1", TICKER, "ask", 6000, 500, 0)
    assert state.position(TICKER) == 300
    assert state.balance is not None
    assert state.balance.balance == 5_000_000


async def test_messages_keep_orders_positions_and_fills_current() -> None:
    state = AccountState()
    await state.on_account_snapshot(snapshot())
    await state.on_private_message(USER_ORDER)
    assert [o.remaining_count for o in state.orders_in(TICKER)] == [800]
    executed = dataclasses.replace(USER_ORDER, status="executed", remaining_count=0, fill_count=1000)
    await state.on_private_message(executed)
    assert state.open_orders == {}
    await state.on_private_message(POSITION)
    assert state.holdings[TICKER] == Holding(TICKER, -1000, -125_000, 172_480)
    await state.on_private_message(FILL)
    assert state.fills == [FILL]
    assert state.position("KXOTHER") == 0
