"""The trader's side of a cancel and a kill switch: routing, validation, the console lines and the answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from apps.kalshi.feed import MarketChange
from apps.trader.control import (
    RESULT_MESSAGE,
    ControlError,
    ControlListener,
    Shard,
    route_trading,
    trading_message,
)

TRADING = Shard(3, "specific.a!1", ("KXFED-26DEC-T4.25",), trading=True)
UNKNOWN = Shard(4, "specific.b!2", ("KXCPI-26DEC-T0.3",), trading=None)
WATCHING = Shard(5, "specific.c!3", ("KXBTCD-26DEC31-T100000",), trading=False)


def test_a_kill_switch_goes_to_every_trader_that_may_trade() -> None:
    assert route_trading("kill_switch", [TRADING, UNKNOWN, WATCHING]) == [TRADING, UNKNOWN]


def test_a_cancel_goes_to_the_only_trader_that_may_trade() -> None:
    assert route_trading("cancel_order", [TRADING, WATCHING]) == [TRADING]
    with pytest.raises(ControlError, match=r"several traders trade \(sessions 3, 4\); name the order's session"):
        route_trading("cancel_order", [TRADING, UNKNOWN])


def test_a_named_session_gets_the_request_unless_it_does_not_trade() -> None:
    assert route_trading("cancel_order", [TRADING, UNKNOWN], session_id=4) == [UNKNOWN]
    with pytest.raises(ControlError, match="session 5 does not trade"):
        route_trading("kill_switch", [TRADING, WATCHING], session_id=5)
    with pytest.raises(ControlError, match="session 9 is not a live trader"):
        route_trading("kill_switch", [TRADING], session_id=9)


def test_with_no_trader_that_trades_nothing_is_sent() -> None:
    with pytest.raises(ControlError, match="no trader is running"):
        route_trading("kill_switch", [])
    with pytest.raises(ControlError, match="no live trader trades"):
        route_trading("kill_switch", [WATCHING])


class Trader:
    """A coordinator as the listener sees it: its console lines, its orders and its kill switch."""

    session_id = 12

    def __init__(self, *, trades: bool = True, cancels: int = 2) -> None:
        self.lines: list[tuple[str, str, str]] = []
        self.calls: list[tuple[str, ...]] = []
        self.trades = trades
        self.cancels = cancels

    def console(self, level: str, message: str, context: str = "") -> None:
        self.lines.append((level, message, context))

    async def add_markets(self, tickers: list[str]) -> MarketChange:
        raise AssertionError("not a market request")

    async def remove_markets(self, tickers: list[str]) -> MarketChange:
        raise AssertionError("not a market request")

    async def cancel_order(self, order_id: str, reason: str) -> dict[str, Any]:
        self.calls.append(("cancel_order", order_id, reason))
        if not self.trades:
            raise ValueError("this trader does not trade")
        if order_id != "ord-42":
            raise ValueError(f"order {order_id} is not one of this trader's orders")
        return {"kind": "order", "order_id": order_id, "status": "canceled", "reason": reason}

    async def kill_switch(self, reason: str) -> int:
        self.calls.append(("kill_switch", reason))
        if not self.trades:
            raise ValueError("this trader does not trade")
        if self.cancels < 0:
            raise ConnectionError("exchange unreachable")
        return self.cancels


@pytest.fixture
def layer() -> InMemoryChannelLayer:
    return InMemoryChannelLayer()


async def ask(layer: InMemoryChannelLayer, trader: Trader, **fields: Any) -> dict[str, Any]:
    """Run a listener for ``trader``, send it one trading request and return the data of its answer."""
    address = await layer.new_channel()
    reply_to = await layer.new_channel()
    listener = ControlListener(trader, layer, address)
    running = asyncio.create_task(listener.run())
    try:
        action = fields.pop("action")
        message = trading_message(action, request_id="r-1", reply_channel=reply_to, **fields)
        await layer.send(address, message)
        async with asyncio.timeout(5):
            answer = await layer.receive(reply_to)
    finally:
        running.cancel()
    assert answer["type"] == RESULT_MESSAGE and answer["request_id"] == "r-1"
    data: dict[str, Any] = answer["data"]
    return data


async def test_a_kill_switch_is_said_in_the_console_then_pulled_and_answered(layer: InMemoryChannelLayer) -> None:
    trader = Trader(cancels=2)
    data = await ask(layer, trader, action="kill_switch", reason="from the console by owner")
    assert data == {"action": "kill_switch", "cancelled": 2, "session_id": 12}
    assert trader.calls == [("kill_switch", "from the console by owner")]
    assert trader.lines == [("warning", "CONTROL: kill switch from the console by owner", "")]


async def test_a_cancel_answers_with_the_order_as_it_ended(layer: InMemoryChannelLayer) -> None:
    trader = Trader()
    data = await ask(layer, trader, action="cancel_order", order_id="ord-42", reason="from the console")
    assert data == {
        "action": "cancel_order",
        "order_id": "ord-42",
        "order": {"kind": "order", "order_id": "ord-42", "status": "canceled", "reason": "from the console"},
        "session_id": 12,
    }
    assert trader.lines == [("info", "CONTROL: cancel order ord-42 from the console", "")]


async def test_an_order_not_of_this_trader_is_refused_with_the_reason(layer: InMemoryChannelLayer) -> None:
    trader = Trader()
    data = await ask(layer, trader, action="cancel_order", order_id="ord-7", reason="from the console")
    assert data["error"] == "order ord-7 is not one of this trader's orders"
    assert trader.lines[-1] == (
        "warning",
        "CONTROL: cancel_order refused: order ord-7 is not one of this trader's orders",
        "",
    )


async def test_a_trader_that_does_not_trade_says_so(layer: InMemoryChannelLayer) -> None:
    data = await ask(layer, Trader(trades=False), action="kill_switch", reason="from the console")
    assert data == {"action": "kill_switch", "error": "this trader does not trade", "session_id": 12}


async def test_a_failure_is_answered_and_shown_and_the_listener_goes_on(layer: InMemoryChannelLayer) -> None:
    trader = Trader(cancels=-1)
    data = await ask(layer, trader, action="kill_switch", reason="from the console")
    assert data["error"] == "the trader failed to apply it: ConnectionError: exchange unreachable"
    assert trader.lines[-1] == ("error", "CONTROL: kill_switch failed", data["error"])


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"action": "cancel_order", "reason": "from the console"}, "'order_id' must be an order id"),
        ({"action": "cancel_order", "order_id": "a b", "reason": "x"}, "'order_id' must be an order id"),
        ({"action": "kill_switch", "reason": ""}, "'reason' must be printable text"),
        ({"action": "kill_switch", "reason": "x\x1b[2J"}, "'reason' must be printable text"),
        ({"action": "kill_switch", "reason": "x" * 201}, "'reason' must be printable text"),
    ],
)
async def test_a_malformed_request_changes_nothing(
    layer: InMemoryChannelLayer, fields: dict[str, Any], error: str
) -> None:
    trader = Trader()
    data = await ask(layer, trader, **fields)
    assert data["error"].startswith(error)
    assert trader.calls == []
