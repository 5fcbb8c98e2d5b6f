from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from apps.exchange.config import DEFAULT_MARKETS
from apps.kalshi.messages import ERROR_TEXT
from apps.kalshi.signing import Credentials
from tests.exchange.helpers import drain, open_ws, recv, recv_n, recv_until, send, subscribe
from tests.support import StartSim

EXAMPLES = {
    e["name"]: e["payload"]
    for e in json.loads((Path(__file__).parents[1] / "fixtures" / "kalshi-examples.json").read_text())
}
PRICE = re.compile(r"^\d\.\d{4}$")
SIZE = re.compile(r"^-?\d+\.\d{2}$")
FED, CPI, BTC = DEFAULT_MARKETS[0], DEFAULT_MARKETS[1], DEFAULT_MARKETS[2]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_levels(levels: list[list[str]]) -> None:
    assert levels, "a side present in a snapshot has levels"
    for price, size in levels:
        assert PRICE.match(price)
        assert SIZE.match(size)
        assert not size.startswith("-")
    assert [p for p, _ in levels] == sorted(p for p, _ in levels), "ascending, like the spec example"


async def test_subscribe_replies_match_the_spec_examples(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(message_rate=2000.0)
    ws = await open_ws(sim, credentials)
    await send(
        ws,
        {
            "id": 1,
            "cmd": "subscribe",
            "params": {"channels": ["orderbook_delta"], "market_tickers": [FED, CPI]},
        },
    )
    subscribed, first, second = await recv_n(ws, 3)
    example = EXAMPLES["subscribedResponse.subscriptionConfirmed"]
    assert subscribed.keys() == example.keys()
    assert subscribed["msg"].keys() == example["msg"].keys()
    assert subscribed == {"id": 1, "type": "subscribed", "msg": {"channel": "orderbook_delta", "sid": 1}}

    example = EXAMPLES["orderbookSnapshot.orderbookWithBothSides"]
    for snapshot, ticker in ((first, FED), (second, CPI)):
        assert snapshot.keys() == example.keys()
        assert snapshot["msg"].keys() == example["msg"].keys()
        assert _is_int(snapshot["sid"])
        assert _is_int(snapshot["seq"])
        assert snapshot["msg"]["market_ticker"] == ticker
        assert snapshot["msg"]["market_id"] == sim.market_id(ticker)
        _check_levels(snapshot["msg"]["yes_dollars_fp"])
        _check_levels(snapshot["msg"]["no_dollars_fp"])
    assert (first["seq"], second["seq"]) == (1, 2)

    delta = (await recv_until(ws, lambda f: f["type"] == "orderbook_delta"))[-1]
    example = EXAMPLES["orderbookDelta.priceLevelUpdate"]
    assert delta.keys() == example.keys()
    assert delta["msg"].keys() == example["msg"].keys()
    assert _is_int(delta["sid"])
    assert _is_int(delta["seq"])
    assert _is_int(delta["msg"]["ts_ms"])
    assert PRICE.match(delta["msg"]["price_dollars"])
    assert SIZE.match(delta["msg"]["delta_fp"])
    assert delta["msg"]["side"] in ("yes", "no")
    assert delta["msg"]["delta_fp"] not in ("0.00", "-0.00")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", delta["msg"]["ts"])
    await ws.close()


async def test_subscribe_several_channels_gives_one_sid_each(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    ws = await open_ws(sim, credentials)
    sids, frames = await subscribe(ws, [BTC], command_id=4, channels=("orderbook_delta", "ticker", "trade"))
    assert len(set(sids)) == 3
    assert [f["msg"]["channel"] for f in frames if f["type"] == "subscribed"] == [
        "orderbook_delta",
        "ticker",
        "trade",
    ]
    assert all(f.get("id") == 4 for f in frames if f["type"] == "subscribed")
    await send(ws, {"id": 5, "cmd": "list_subscriptions"})
    reply = await recv(ws)
    assert reply == {
        "id": 5,
        "type": "ok",
        "msg": [
            {"channel": "orderbook_delta", "sid": sids[0]},
            {"channel": "ticker", "sid": sids[1]},
            {"channel": "trade", "sid": sids[2]},
        ],
    }
    assert reply.keys() == EXAMPLES["listSubscriptionsResponse.listSubscriptionsResponse"].keys()
    await ws.close()


async def test_single_market_ticker_and_ticker_channel_without_markets(
    start_sim: StartSim, credentials: Credentials
) -> None:
    sim = await start_sim()
    ws = await open_ws(sim, credentials)
    await send(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_ticker": FED}})
    _, snapshot = await recv_n(ws, 2)
    assert snapshot["type"] == "orderbook_snapshot"
    assert snapshot["msg"]["market_ticker"] == FED
    await send(ws, {"id": 2, "cmd": "subscribe", "params": {"channels": ["ticker"]}})
    assert (await recv(ws))["msg"]["channel"] == "ticker"
    assert await drain(ws, 0.1) == []  # channels other than orderbook_delta stay silent
    await ws.close()


async def test_unsubscribe_replies_once_per_sid_with_next_seq(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(message_rate=3000.0)
    ws = await open_ws(sim, credentials)
    (sid_a,), first = await subscribe(ws, [FED, CPI], command_id=1)
    (sid_b,), second = await subscribe(ws, [CPI], command_id=2)
    seen = [*first, *second, *await recv_n(ws, 30)]
    await send(ws, {"id": 3, "cmd": "unsubscribe", "params": {"sids": [sid_a, sid_b]}})
    # Start from every seq already read: a sid may send nothing more before its unsubscribed reply.
    last_seq: dict[int, int] = {f["sid"]: f["seq"] for f in seen if "seq" in f}
    replies = []
    after_reply: set[int] = set()
    for frame in await recv_until(ws, lambda f: f["type"] == "unsubscribed" and f["sid"] == sid_b):
        if frame["type"] == "unsubscribed":
            replies.append(frame)
            assert frame["seq"] == last_seq[frame["sid"]] + 1
            after_reply.add(frame["sid"])
        elif "seq" in frame:
            assert frame["sid"] not in after_reply
            last_seq[frame["sid"]] = frame["seq"]
    example = EXAMPLES["unsubscribedResponse.unsubscriptionConfirmed"]
    assert [r["sid"] for r in replies] == [sid_a, sid_b]
    assert all(r.keys() == example.keys() and r["id"] == 3 for r in replies)
    assert [f for f in await drain(ws, 0.1) if "sid" in f] == []
    await send(ws, {"id": 4, "cmd": "list_subscriptions"})
    assert (await recv(ws))["msg"] == []
    await ws.close()


async def test_update_subscription_add_and_delete_markets(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    ws = await open_ws(sim, credentials)
    (sid,), _ = await subscribe(ws, [FED])
    await send(
        ws,
        {
            "id": 7,
            "cmd": "update_subscription",
            "params": {"sids": [sid], "market_tickers": [CPI, BTC, FED], "action": "add_markets"},
        },
    )
    ok, snap_cpi, snap_btc = await recv_n(ws, 3)
    example = EXAMPLES["okResponse.updateSuccess"]
    assert ok.keys() == example.keys()
    assert ok == {"id": 7, "sid": sid, "seq": 2, "type": "ok", "msg": {"market_tickers": [FED, CPI, BTC]}}
    assert [(s["msg"]["market_ticker"], s["seq"], s["sid"]) for s in (snap_cpi, snap_btc)] == [
        (CPI, 3, sid),
        (BTC, 4, sid),
    ]
    assert "id" not in snap_cpi
    await send(
        ws,
        {
            "id": 8,
            "cmd": "update_subscription",
            "params": {"sid": sid, "market_ticker": FED, "action": "delete_markets"},
        },
    )
    ok = await recv(ws)
    assert ok == {"id": 8, "sid": sid, "seq": 5, "type": "ok", "msg": {"market_tickers": [CPI, BTC]}}
    # Deleted markets stop streaming.
    sim.config.message_rate = 3000.0
    frames = await recv_n(ws, 100)
    assert {f["msg"]["market_ticker"] for f in frames} <= {CPI, BTC}
    assert [f["seq"] for f in frames] == list(range(6, 106))
    await ws.close()


async def test_add_markets_with_an_unknown_ticker_is_refused_whole_and_names_it(
    start_sim: StartSim, credentials: Credentials
) -> None:
    sim = await start_sim()
    ws = await open_ws(sim, credentials)
    (sid,), _ = await subscribe(ws, [FED])
    update = {"sids": [sid], "market_tickers": [CPI, "KXNOPE-1"], "action": "add_markets"}
    await send(ws, {"id": 9, "cmd": "update_subscription", "params": update})
    assert await recv(ws) == {
        "id": 9,
        "type": "error",
        "msg": {"code": 11, "msg": ERROR_TEXT[11], "market_tickers": ["KXNOPE-1"]},
    }
    # Nothing was added: the next update lists the subscription as it was, plus only what it adds.
    await send(ws, {"id": 10, "cmd": "update_subscription", "params": {**update, "market_tickers": [CPI]}})
    ok = await recv(ws)
    assert ok["id"] == 10 and ok["msg"] == {"market_tickers": [FED, CPI]}
    await ws.close()


async def test_skip_ticker_ack_omits_the_market_list(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    ws = await open_ws(sim, credentials)
    await send(
        ws,
        {
            "id": 1,
            "cmd": "subscribe",
            "params": {"channels": ["orderbook_delta"], "market_ticker": FED, "skip_ticker_ack": True},
        },
    )
    subscribed, _ = await recv_n(ws, 2)
    await send(
        ws,
        {
            "id": 2,
            "cmd": "update_subscription",
            "params": {"sids": [subscribed["msg"]["sid"]], "market_ticker": CPI, "action": "add_markets"},
        },
    )
    ok = await recv(ws)
    assert ok["type"] == "ok"
    assert "msg" not in ok
    await ws.close()


async def test_get_snapshot_carries_the_command_id(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    ws = await open_ws(sim, credentials)
    (sid,), _ = await subscribe(ws, [FED, CPI])
    await send(
        ws,
        {
            "id": 12,
            "cmd": "update_subscription",
            "params": {"sids": [sid], "market_tickers": [CPI, FED], "action": "get_snapshot"},
        },
    )
    first, second = await recv_n(ws, 2)
    assert [(f["type"], f["id"], f["sid"], f["seq"], f["msg"]["market_ticker"]) for f in (first, second)] == [
        ("orderbook_snapshot", 12, sid, 3, CPI),
        ("orderbook_snapshot", 12, sid, 4, FED),
    ]
    assert await drain(ws, 0.1) == []  # no ok follows; the subscription is unchanged
    await send(ws, {"id": 13, "cmd": "list_subscriptions"})
    assert (await recv(ws))["msg"] == [{"channel": "orderbook_delta", "sid": sid}]
    await ws.close()


SID = 1  # the sid of the subscription every error case starts from


@pytest.mark.parametrize(
    ("command", "code", "echo_id"),
    [
        pytest.param("this is not json", 1, None, id="1-not-json"),
        pytest.param("[1, 2, 3]", 1, None, id="1-not-an-object"),
        pytest.param({"id": 21, "cmd": "subscribe"}, 2, 21, id="2-no-params"),
        pytest.param({"id": 22, "cmd": "unsubscribe"}, 2, 22, id="2-no-params-unsubscribe"),
        pytest.param({"id": 23, "cmd": "update_subscription"}, 2, 23, id="2-no-params-update"),
        pytest.param({"id": 31, "cmd": "subscribe", "params": {}}, 3, 31, id="3-no-channels"),
        pytest.param({"id": 32, "cmd": "subscribe", "params": {"channels": []}}, 3, 32, id="3-empty-channels"),
        pytest.param({"id": 41, "cmd": "unsubscribe", "params": {}}, 4, 41, id="4-no-sids"),
        pytest.param({"id": 42, "cmd": "unsubscribe", "params": {"sids": []}}, 4, 42, id="4-empty-sids"),
        pytest.param({"id": 51, "cmd": "subscribe_all"}, 5, 51, id="5-unknown-command"),
        pytest.param({"id": 52}, 5, 52, id="5-no-cmd"),
        pytest.param({"id": 71, "cmd": "unsubscribe", "params": {"sids": [SID, 999]}}, 7, 71, id="7-unsubscribe"),
        pytest.param(
            {
                "id": 72,
                "cmd": "update_subscription",
                "params": {"sids": [999], "market_ticker": FED, "action": "add_markets"},
            },
            7,
            72,
            id="7-update",
        ),
        pytest.param(
            {
                "id": 81,
                "cmd": "subscribe",
                "params": {"channels": ["orderbook_delta", "gossip"], "market_ticker": FED},
            },
            8,
            81,
            id="8-unknown-channel",
        ),
        pytest.param(
            {
                "id": 111,
                "cmd": "subscribe",
                "params": {"channels": ["orderbook_delta"], "market_ticker": FED, "market_tickers": [CPI]},
            },
            11,
            111,
            id="11-both-ticker-params",
        ),
        pytest.param(
            {
                "id": 112,
                "cmd": "subscribe",
                "params": {"channels": ["orderbook_delta"], "market_tickers": ["NOPE-1"]},
            },
            11,
            112,
            id="11-unknown-ticker",
        ),
        pytest.param(
            {
                "id": 113,
                "cmd": "update_subscription",
                "params": {"sids": [SID], "market_ticker": CPI, "action": "get_snapshot"},
            },
            11,
            113,
            id="11-snapshot-of-unsubscribed-market",
        ),
        pytest.param(
            {
                "id": 121,
                "cmd": "update_subscription",
                "params": {"sids": [SID, 2], "market_ticker": FED, "action": "add_markets"},
            },
            12,
            121,
            id="12-two-sids",
        ),
        pytest.param(
            {
                "id": 122,
                "cmd": "update_subscription",
                "params": {"sid": SID, "sids": [SID], "market_ticker": FED, "action": "add_markets"},
            },
            12,
            122,
            id="12-sid-and-sids",
        ),
        pytest.param(
            {
                "id": 123,
                "cmd": "update_subscription",
                "params": {"market_ticker": FED, "action": "add_markets"},
            },
            12,
            123,
            id="12-no-sid",
        ),
        pytest.param(
            {
                "id": 131,
                "cmd": "update_subscription",
                "params": {"sids": [SID], "market_ticker": FED, "action": "replace_markets"},
            },
            13,
            131,
            id="13-unsupported-action",
        ),
        pytest.param(
            {"id": 141, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"]}},
            14,
            141,
            id="14-subscribe",
        ),
        pytest.param(
            {"id": 142, "cmd": "update_subscription", "params": {"sids": [SID], "action": "add_markets"}},
            14,
            142,
            id="14-update",
        ),
        pytest.param(
            {"id": 151, "cmd": "update_subscription", "params": {"sids": [SID], "market_ticker": FED}},
            15,
            151,
            id="15-no-action",
        ),
    ],
)
async def test_error_codes(
    start_sim: StartSim,
    credentials: Credentials,
    command: dict[str, Any] | str,
    code: int,
    echo_id: int | None,
) -> None:
    sim = await start_sim()
    ws = await open_ws(sim, credentials)
    (sid,), _ = await subscribe(ws, [FED])
    assert sid == SID
    await send(ws, command)
    reply = await recv(ws)
    expected_msg: dict[str, Any] = {"code": code, "msg": ERROR_TEXT[code]}
    # Errors about particular markets name them.
    named = {112: ["NOPE-1"], 113: [CPI]}.get(echo_id or 0)
    if named:
        expected_msg["market_tickers"] = named
    expected: dict[str, Any] = {"type": "error", "msg": expected_msg}
    if echo_id is not None:
        expected["id"] = echo_id
    assert reply == expected
    # Nothing else happened: the original subscription is intact and nothing extra was sent.
    await send(ws, {"id": 999, "cmd": "list_subscriptions"})
    assert await recv(ws) == {"id": 999, "type": "ok", "msg": [{"channel": "orderbook_delta", "sid": SID}]}
    await ws.close()


async def test_error_reply_shape_matches_the_spec_example(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    ws = await open_ws(sim, credentials)
    await send(ws, {"id": 123, "cmd": "unsubscribe", "params": {"sids": [5]}})
    assert await recv(ws) == EXAMPLES["errorResponse.unknownSubscription"]
    await send(ws, {"id": 124, "cmd": "subscribe", "params": {"channels": ["nope"]}})
    assert await recv(ws) == EXAMPLES["errorResponse.unknownChannel"]
    await send(ws, {"id": 125, "cmd": "subscribe"})
    assert await recv(ws) == EXAMPLES["errorResponse.paramsRequired"]
    await send(ws, {"id": 127, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"]}})
    assert await recv(ws) == EXAMPLES["errorResponse.marketTickerRequired"]
    await ws.close()
