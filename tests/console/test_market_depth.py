"""A console watching one market: its levels live, its price history from the recording, the rest as tops."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from apps.marketdata import selectors as marketdata_selectors
from apps.trader.broadcast import layer_message
from apps.trader.core.eventbus import Event
from apps.trader.services import session_end, session_heartbeat
from tests.console.test_consumer import connect
from tests.marketdata.conftest import SCRIPT, a_new_session, at, record_script

pytestmark = pytest.mark.django_db(transaction=True)


def book(ticker: str, seq: int) -> dict[str, Any]:
    return {
        "market_ticker": ticker,
        "sid": 1,
        "seq": seq,
        "yes_bid": {"price": "0.4300", "size": "5.00"},
        "yes_ask": {"price": "0.4500", "size": "20.00"},
        "spread": "0.0200",
        "stale": False,
        "updated_at": None,
        "ts_ms": None,
        "yes_bids": [{"price": "0.4300", "size": "5.00"}, {"price": "0.4100", "size": "3.00"}],
        "yes_asks": [{"price": "0.4500", "size": "20.00"}],
    }


def tops_only(full: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in full.items() if key not in ("yes_bids", "yes_asks")}


async def a_recorded_session_with_tops() -> int:
    """SCRIPT's session (KXA and KXB), ended just now: still the session consoles show."""
    session = await a_new_session()
    await record_script(session.pk, SCRIPT)
    await sync_to_async(session_end)(session_id=session.pk, failed=False, error="")
    await sync_to_async(session_heartbeat)(
        session_id=session.pk,
        state="shutdown",
        state_entered_at=at(0),
        status={"state": "shutdown"},
        counters={},
        console=[],
        tops=[book("KXA", 7), book("KXB", 8)],
    )
    return int(session.pk)


async def watching(ticker: str) -> tuple[WebsocketCommunicator, dict[str, Any]]:
    communicator = await connect()
    assert (await communicator.receive_json_from())["type"] == "history_replay"
    await communicator.send_json_to({"type": "watch_market", "market": ticker})
    reply = await communicator.receive_json_from()
    assert reply["type"] == "market_history"
    return communicator, reply["data"]


async def test_watching_a_market_sends_its_levels_and_its_prices_over_the_session() -> None:
    session_id = await a_recorded_session_with_tops()

    communicator, history = await watching("KXA")

    assert history["market_ticker"] == "KXA" and history["session_id"] == session_id
    assert history["book"] == book("KXA", 7)
    assert history["points"][0] == [int(at(10).timestamp() * 1000), "0.4200", "0.4500"]
    assert len(history["points"]) == 5 and history["from_start"] and history["to_end"]
    await communicator.disconnect()


async def test_live_books_carry_levels_only_for_the_watched_market() -> None:
    session_id = await a_recorded_session_with_tops()
    communicator, _ = await watching("KXB")

    batch = {"session_id": session_id, "books": [book("KXA", 9), book("KXB", 10)]}
    await get_channel_layer().group_send(settings.CONSOLE_GROUP, layer_message(Event("orderbooks", batch)))

    received = await communicator.receive_json_from()
    assert received["data"]["books"] == [tops_only(book("KXA", 9)), book("KXB", 10)]

    await communicator.send_json_to({"type": "watch_market", "market": None})  # stop watching: tops only
    await get_channel_layer().group_send(settings.CONSOLE_GROUP, layer_message(Event("orderbooks", batch)))
    received = await communicator.receive_json_from()
    assert received["data"]["books"] == [tops_only(book("KXA", 9)), tops_only(book("KXB", 10))]
    await communicator.disconnect()


async def test_a_market_no_trader_watches_has_an_empty_history() -> None:
    await a_recorded_session_with_tops()

    communicator, history = await watching("KXNOPE-1")

    assert (history["session_id"], history["book"], history["points"]) == (None, None, [])
    await communicator.disconnect()


@pytest.mark.parametrize("market", [42, "", "X" * 101, ["KXA"]])
async def test_a_bad_watch_request_gets_an_error_and_the_socket_stays_up(market: Any) -> None:
    communicator = await connect()
    await communicator.receive_json_from()
    await communicator.send_json_to({"type": "watch_market", "market": market})
    reply = await communicator.receive_json_from()
    assert reply["type"] == "error" and "watch_market" in reply["data"]["message"]
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from() == {"type": "pong", "data": {}}
    await communicator.disconnect()


async def test_the_replay_carries_the_sessions_message_rate_from_the_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(marketdata_selectors, "RATE_WINDOW", 0.05)  # the recording spans 150 ms
    await a_recorded_session_with_tops()
    communicator = await connect()

    replay = await communicator.receive_json_from()

    rates = replay["data"]["rates"]
    assert rates and all(isinstance(t, int) and rate > 0 for t, rate in rates)
    await communicator.disconnect()


async def test_market_pages_carry_tops_only_and_one_market_in_the_status_carries_its_levels() -> None:
    await a_recorded_session_with_tops()
    communicator = await connect()
    await communicator.receive_json_from()

    await communicator.send_json_to({"type": "request_markets"})
    page = await communicator.receive_json_from()

    assert page["type"] == "markets_page"
    assert page["data"]["markets"] == [tops_only(book("KXA", 7)), tops_only(book("KXB", 8))]
    await communicator.disconnect()
    status = await sync_to_async(lambda: Client().get("/v3/status", {"market": "KXA"}).json())()
    assert status["book"] == book("KXA", 7)
