from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from apps.kalshi.messages import (
    ErrorReply,
    MalformedMessage,
    Ok,
    OrderbookDelta,
    OrderbookSnapshot,
    OtherMessage,
    Subscribed,
    Unsubscribed,
    delta_frame,
    parse_frame,
    parse_message,
    snapshot_frame,
)

EXAMPLES = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "kalshi-examples.json").read_text())
BY_NAME = {example["name"]: example["payload"] for example in EXAMPLES}


def test_every_spec_example_parses_to_its_typed_message() -> None:
    expected_types = {
        "orderbookSnapshot": OrderbookSnapshot,
        "orderbookDelta": OrderbookDelta,
        "subscribedResponse": Subscribed,
        "okResponse": Ok,
        "listSubscriptionsResponse": Ok,
        "errorResponse": ErrorReply,
        "unsubscribedResponse": Unsubscribed,
    }
    assert len(EXAMPLES) == 11
    for example in EXAMPLES:
        message = parse_message(json.dumps(example["payload"]))
        assert isinstance(message, expected_types[example["name"].split(".")[0]]), example["name"]


def test_the_snapshot_example_is_read_exactly() -> None:
    snapshot = parse_frame(BY_NAME["orderbookSnapshot.orderbookWithBothSides"])
    assert isinstance(snapshot, OrderbookSnapshot)
    assert (snapshot.sid, snapshot.seq, snapshot.market_ticker) == (2, 2, "FED-23DEC-T3.00")
    assert snapshot.yes == [(800, 30000), (2200, 33300)]
    assert snapshot.no == [(5400, 2000), (5600, 14600)]


def test_the_delta_example_is_read_exactly() -> None:
    delta = parse_frame(BY_NAME["orderbookDelta.priceLevelUpdate"])
    assert isinstance(delta, OrderbookDelta)
    assert (delta.price, delta.delta, delta.side, delta.ts_ms) == (9600, -5400, "yes", 1669149841000)


def test_ok_comes_as_an_update_reply_or_a_subscription_list() -> None:
    update = parse_frame(BY_NAME["okResponse.updateSuccess"])
    listing = parse_frame(BY_NAME["listSubscriptionsResponse.listSubscriptionsResponse"])
    assert isinstance(update, Ok) and update.market_tickers == ["MARKET-1", "MARKET-2", "MARKET-3"]
    assert isinstance(listing, Ok) and [(s.channel, s.sid) for s in listing.subscriptions or []] == [
        ("orderbook_delta", 1),
        ("ticker", 2),
        ("fill", 3),
    ]


def test_errors_carry_code_and_text() -> None:
    error = parse_frame(BY_NAME["errorResponse.authenticationRequired"])
    assert isinstance(error, ErrorReply)
    assert (error.id, error.code, error.msg, error.terminal) == (126, 9, "Authentication required", False)
    overflow = parse_frame({"type": "error", "sid": 3, "msg": {"code": 25, "msg": "Subscription buffer overflow"}})
    assert isinstance(overflow, ErrorReply) and overflow.terminal


def test_a_side_with_no_offers_is_absent_and_reads_as_empty() -> None:
    snapshot = parse_frame(
        {
            "type": "orderbook_snapshot",
            "sid": 1,
            "seq": 1,
            "msg": {"market_ticker": "X", "market_id": "id", "no_dollars_fp": [["0.3000", "1.50"]]},
        }
    )
    assert isinstance(snapshot, OrderbookSnapshot)
    assert snapshot.yes == [] and snapshot.no == [(3000, 150)]


def test_old_integer_cent_fields_are_a_fallback_only() -> None:
    old = parse_frame(
        {
            "type": "orderbook_snapshot",
            "sid": 1,
            "seq": 1,
            "msg": {"market_ticker": "X", "market_id": "id", "yes": [[42, 10]]},
        }
    )
    assert isinstance(old, OrderbookSnapshot) and old.yes == [(4200, 1000)]
    both = parse_frame(
        {
            "type": "orderbook_delta",
            "sid": 1,
            "seq": 2,
            "msg": {
                "market_ticker": "X",
                "market_id": "id",
                "price": 1,
                "delta": 1,
                "price_dollars": "0.4250",
                "delta_fp": "2.50",
                "side": "no",
            },
        }
    )
    assert isinstance(both, OrderbookDelta) and (both.price, both.delta) == (4250, 250)


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"sid": 1}', "missing 'type'"),
        (
            '{"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": {"market_ticker": "X", "side": "up",'
            ' "price_dollars": "0.5", "delta_fp": "1.00"}}',
            "'side'",
        ),
        (
            '{"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": {"market_ticker": "X", "side": "yes",'
            ' "price_dollars": 0.5, "delta_fp": "1.00"}}',
            "must be a string",
        ),
        ('{"type": "orderbook_snapshot", "sid": 1, "msg": {"market_ticker": "X"}}', "missing 'seq'"),
        (
            '{"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": {"market_ticker": "X",'
            ' "yes_dollars_fp": [["0.1"]]}}',
            "pairs",
        ),
        ('{"type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": 0}}', "'sid'"),
        ('{"type": "error", "msg": {"msg": "x"}}', "missing 'code'"),
    ],
)
def test_malformed_frames_get_a_clear_error(frame: str, complaint: str) -> None:
    with pytest.raises(MalformedMessage, match=complaint):
        parse_message(frame)


def test_other_well_formed_types_are_passed_through() -> None:
    message = parse_frame({"type": "ticker", "sid": 4, "msg": {"market_ticker": "X"}})
    assert isinstance(message, OtherMessage) and message.type == "ticker" and message.seq is None


def _round_trip(frame: dict[str, Any]) -> dict[str, Any]:
    message = parse_frame(frame)
    assert isinstance(message, OrderbookSnapshot | OrderbookDelta)
    return snapshot_frame(message) if isinstance(message, OrderbookSnapshot) else delta_frame(message)


def test_encoding_reproduces_the_spec_shapes() -> None:
    snapshot = BY_NAME["orderbookSnapshot.orderbookWithBothSides"]
    assert _round_trip(snapshot) == snapshot
    delta = dict(BY_NAME["orderbookDelta.priceLevelUpdate"])
    encoded = _round_trip(delta)
    expected_msg = {k: v for k, v in delta["msg"].items() if k != "ts"}  # ts is deprecated; ts_ms is sent
    assert encoded == {**delta, "msg": expected_msg}


_DELTA_MSG = {"market_ticker": "KXA", "market_id": "m-1", "price_dollars": "0.4200", "delta_fp": "-3.50", "side": "no"}


@pytest.mark.parametrize(
    ("frame_changes", "msg_changes"),
    [
        ({}, {}),
        ({}, {"ts_ms": 1_796_000_000_000, "client_order_id": "c-1"}),
        ({}, {"market_id": None}),
        ({}, {"market_id": ...}),
        ({}, {"ts_ms": None}),
        ({}, {"ts_ms": -5}),
        ({}, {"ts_ms": True}),
        ({}, {"ts_ms": 1.5}),
        ({}, {"price_dollars": "0.42", "delta_fp": "7"}),
        ({}, {"price_dollars": "0.42001"}),
        ({}, {"delta_fp": 3}),
        ({}, {"side": "YES"}),
        ({}, {"market_ticker": 7}),
        ({}, {"price_dollars": ..., "price": 42}),
        ({}, {"price": 1, "delta": 1}),
        ({}, {"unknown_field": [1, 2]}),
        ({"sid": 0}, {}),
        ({"seq": "2"}, {}),
        ({"seq": True}, {}),
        ({"id": 9}, {}),
        ({"msg": ...}, {}),
        ({"type": "orderbook_snapshot"}, {}),
    ],
)
def test_the_typed_delta_path_reads_every_frame_as_the_field_by_field_parse_does(
    frame_changes: dict[str, Any], msg_changes: dict[str, Any]
) -> None:
    """parse_message decodes delta frames straight into typed fields and anything unusual field by field;
    either way a frame reads as parse_frame reads it, or is refused as it refuses it."""
    msg = {k: v for k, v in {**_DELTA_MSG, **msg_changes}.items() if v is not ...}
    frame = {"type": "orderbook_delta", "sid": 1, "seq": 2, "msg": msg, **frame_changes}
    _assert_parsed_as_field_by_field({k: v for k, v in frame.items() if v is not ...})


_SNAPSHOT_MSG = {
    "market_ticker": "KXA",
    "market_id": "m-1",
    "yes_dollars_fp": [["0.4200", "12.50"], ["0.4100", "3.00"]],
}


@pytest.mark.parametrize(
    ("frame_changes", "msg_changes"),
    [
        ({}, {}),
        ({}, {"no_dollars_fp": [["0.5500", "1.00"]]}),
        ({}, {"yes_dollars_fp": []}),
        ({}, {"yes_dollars_fp": ...}),
        ({}, {"market_id": None}),
        ({"id": 4}, {}),
        ({"id": -1}, {}),
        ({}, {"yes_dollars_fp": ..., "yes": [[42, 10]]}),
        ({}, {"no": [[55, 1]]}),
        ({}, {"yes": [[42, 10]]}),
        ({}, {"yes_dollars_fp": [["0.42", "1"]]}),
        ({}, {"yes_dollars_fp": [["0.4200"]]}),
        ({}, {"yes_dollars_fp": [[0.42, "1.00"]]}),
        ({}, {"yes_dollars_fp": [["0.42001", "1.00"]]}),
        ({}, {"yes_dollars_fp": "0.42"}),
        ({"sid": 0}, {}),
        ({"seq": ...}, {}),
    ],
)
def test_the_typed_snapshot_path_reads_every_frame_as_the_field_by_field_parse_does(
    frame_changes: dict[str, Any], msg_changes: dict[str, Any]
) -> None:
    msg = {k: v for k, v in {**_SNAPSHOT_MSG, **msg_changes}.items() if v is not ...}
    frame = {"type": "orderbook_snapshot", "sid": 1, "seq": 2, "msg": msg, **frame_changes}
    _assert_parsed_as_field_by_field({k: v for k, v in frame.items() if v is not ...})


def _assert_parsed_as_field_by_field(frame: dict[str, Any]) -> None:
    try:
        expected: Any = parse_frame(json.loads(json.dumps(frame)))
    except MalformedMessage as exc:
        expected = exc
    text = json.dumps(frame)
    for data in (text, text.encode()):
        if isinstance(expected, MalformedMessage):
            with pytest.raises(MalformedMessage):
                parse_message(data)
        else:
            assert parse_message(data) == expected
