"""Parsing of real-shaped frames of the private channels fill, user_orders and market_positions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apps.kalshi.messages import MalformedMessage, OtherMessage, parse_message
from apps.kalshi.privatemessages import (
    FillMessage,
    MarketPositionMessage,
    UserOrderMessage,
    parse_private_frame,
    subscribe_private_command,
)

TICKER = "KXHIGHNY-26DEC02-B53.5"


def fill_frame() -> dict[str, Any]:
    return {
        "type": "fill",
        "sid": 13,
        "msg": {
            "trade_id": "d91bc706-ee49-470d-82d8-11418bda6fed",
            "order_id": "ee587a1c-8b87-4dcf-b721-9f6f790619fa",
            "market_ticker": TICKER,
            "exchange_index": 0,
            "is_taker": True,
            "side": "yes",
            "yes_price_dollars": "0.7500",
            "count_fp": "278.00",
            "fee_cost": "3.648750",
            "action": "buy",
            "outcome_side": "yes",
            "book_side": "bid",
            "ts": 1764651600,
            "ts_ms": 1764651600123,
            "post_position_fp": "500.00",
            "purchased_side": "yes",
            "client_order_id": "6a0e2b0c-7f7e-4b8e-9d43-0d1d6f6f9c11",
            "subaccount": 0,
        },
        "sending_ts_ms": 1764651600125,
    }


def user_order_frame() -> dict[str, Any]:
    return {
        "type": "user_order",
        "sid": 14,
        "msg": {
            "order_id": "ee587a1c-8b87-4dcf-b721-9f6f790619fa",
            "user_id": "a1b2c3d4-0000-4000-8000-000000000001",
            "ticker": TICKER,
            "exchange_index": 0,
            "status": "resting",
            "side": "yes",
            "is_yes": True,
            "outcome_side": "yes",
            "book_side": "bid",
            "yes_price_dollars": "0.3500",
            "fill_count_fp": "2.00",
            "remaining_count_fp": "8.00",
            "initial_count_fp": "10.00",
            "taker_fill_cost_dollars": "0.700000",
            "maker_fill_cost_dollars": "0.000000",
            "taker_fees_dollars": "0.031850",
            "maker_fees_dollars": "0.000000",
            "client_order_id": "6a0e2b0c-7f7e-4b8e-9d43-0d1d6f6f9c11",
            "created_time": "2026-12-02T05:00:00Z",
            "created_ts_ms": 1764651600000,
            "last_update_time": "2026-12-02T05:00:00.123Z",
            "last_updated_ts_ms": 1764651600123,
            "last_update_reason": "Trade",
            "self_trade_prevention_type": "taker_at_cross",
            "subaccount_number": 0,
            "sending_ts_ms": 1764651600124,
        },
    }


def market_position_frame() -> dict[str, Any]:
    return {
        "type": "market_position",
        "sid": 15,
        "msg": {
            "user_id": "a1b2c3d4-0000-4000-8000-000000000001",
            "market_ticker": TICKER,
            "position_fp": "-10.00",
            "position_cost_dollars": "4.400000",
            "realized_pnl_dollars": "-0.125000",
            "fees_paid_dollars": "0.172480",
            "position_fee_cost_dollars": "0.172480",
            "volume_fp": "10.00",
            "subaccount": 0,
        },
    }


def parsed(frame: dict[str, Any]) -> Any:
    message = parse_message(json.dumps(frame).encode())
    assert isinstance(message, OtherMessage)
    return parse_private_frame(message.raw)


def test_a_fill_is_parsed_exactly() -> None:
    assert parsed(fill_frame()) == FillMessage(
        trade_id="d91bc706-ee49-470d-82d8-11418bda6fed",
        order_id="ee587a1c-8b87-4dcf-b721-9f6f790619fa",
        market_ticker=TICKER,
        outcome_side="yes",
        book_side="bid",
        yes_price=7500,
        count=27_800,
        fee_cost=3_648_750,
        is_taker=True,
        post_position=50_000,
        ts_ms=1764651600123,
        exchange_index=0,
        client_order_id="6a0e2b0c-7f7e-4b8e-9d43-0d1d6f6f9c11",
        subaccount=0,
        sid=13,
        sending_ts_ms=1764651600125,
    )


def test_a_user_order_is_parsed_exactly() -> None:
    message = parsed(user_order_frame())
    assert isinstance(message, UserOrderMessage)
    assert (message.status, message.book_side, message.yes_price) == ("resting", "bid", 3500)
    assert (message.fill_count, message.remaining_count, message.initial_count) == (200, 800, 1000)
    assert (message.taker_fill_cost, message.taker_fees, message.maker_fees) == (700_000, 31_850, 0)
    assert (message.last_update_reason, message.created_ts_ms, message.sending_ts_ms) == (
        "Trade",
        1764651600000,
        1764651600124,
    )


def test_a_market_position_is_parsed_exactly() -> None:
    assert parsed(market_position_frame()) == MarketPositionMessage(
        user_id="a1b2c3d4-0000-4000-8000-000000000001",
        market_ticker=TICKER,
        position=-1000,
        position_cost=4_400_000,
        realized_pnl=-125_000,
        fees_paid=172_480,
        position_fee_cost=172_480,
        volume=1000,
        subaccount=0,
        sid=15,
    )


def test_other_types_are_not_private() -> None:
    assert parse_private_frame({"type": "trade", "sid": 2, "seq": 9, "msg": {}}) is None


def test_the_removed_integer_fields_are_not_read() -> None:
    frame = fill_frame()
    message = frame["msg"]
    del message["yes_price_dollars"], message["count_fp"]
    message.update(yes_price=75, count=278)
    with pytest.raises(MalformedMessage, match="yes_price_dollars is missing"):
        parse_private_frame(frame)


@pytest.mark.parametrize(
    ("frame", "field", "value", "complaint"),
    [
        (fill_frame, "count_fp", "1.005", "count_fp"),
        (fill_frame, "book_side", "buy", "book_side must be one of bid, ask"),
        (user_order_frame, "status", "pending", "status must be one of"),
        (market_position_frame, "position_cost_dollars", 4.4, "position_cost_dollars has the wrong type"),
    ],
)
def test_a_malformed_private_frame_names_its_field(frame: Any, field: str, value: Any, complaint: str) -> None:
    broken = frame()
    broken["msg"][field] = value
    with pytest.raises(MalformedMessage, match=complaint):
        parse_private_frame(broken)


def test_the_subscribe_command_names_the_three_channels() -> None:
    assert subscribe_private_command(1) == {
        "id": 1,
        "cmd": "subscribe",
        "params": {"channels": ["fill", "user_orders", "market_positions"]},
    }
    assert subscribe_private_command(2, [TICKER])["params"]["market_tickers"] == [TICKER]
