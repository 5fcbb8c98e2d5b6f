"""Per-market reads at 10,000 markets: the console socket's request_markets and /v3/status's market views."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from apps.console import limits
from apps.trader.models import MarketTop, TradingSession
from apps.trader.selectors import MARKET_PAGE_LIMIT
from apps.trader.services import session_heartbeat, session_start
from tests.support import ConsoleSocket
from trader_v3.asgi import application

pytestmark = pytest.mark.django_db

MARKETS = 10_000
FED_EVERY = 100
"""Every 100th market is a KXFED one: 100 of them."""
NO_TOP = "KXCPI-09999"
"""A watched market whose top of book the trader has not written yet."""


def ticker(n: int) -> str:
    return f"{'KXFED' if n % FED_EVERY == 0 else 'KXCPI'}-{n:05d}"


def top(name: str, seq: int) -> dict[str, Any]:
    return {
        "market_ticker": name,
        "sid": 1,
        "seq": seq,
        "yes_bid": {"price": "0.4200", "size": "12.50"},
        "yes_ask": {"price": "0.4400", "size": "3.00"},
        "spread": "0.0200",
        "stale": False,
        "updated_at": "2026-11-24T10:30:01+00:00",
        "ts_ms": None,
    }


def a_trader_with_10000_markets() -> int:
    tickers = [ticker(n) for n in range(MARKETS)]
    session = session_start(environment="sim", markets=tickers, exchange_url="ws://127.0.0.1:9/x")
    metrics = {"ws_connection_status": "connected", "markets_total": MARKETS, "markets_connected": MARKETS}
    session_heartbeat(
        session_id=session.pk,
        state="ready",
        state_entered_at=timezone.now(),
        status={"state": "ready", "metrics": {**metrics, "stale_markets": 3}},
        counters={"deltas_received": 5},
    )
    MarketTop.objects.bulk_create(
        MarketTop(session_id=session.pk, market_ticker=name, top=top(name, n))
        for n, name in enumerate(tickers)
        if name != NO_TOP
    )
    return session.pk


@pytest.fixture(scope="module")
def session_id(django_db_setup: None, django_db_blocker: Any) -> Iterator[int]:
    """The trader's rows, committed once for the file: its tests only read them (the console socket's on other
    threads, hence committed), and writing 10,000 tops took about a second per test."""
    with django_db_blocker.unblock():
        session = a_trader_with_10000_markets()
    yield session
    with django_db_blocker.unblock():
        TradingSession.objects.filter(pk=session).delete()


async def connect() -> WebsocketCommunicator:
    communicator = ConsoleSocket(application, "/v3/ws", headers=[(b"origin", b"http://127.0.0.1:8006")])
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_json_from())["type"] == "history_replay"
    return communicator


async def ask(communicator: WebsocketCommunicator, **request: Any) -> dict[str, Any]:
    await communicator.send_json_to({"type": "request_markets", **request})
    reply: dict[str, Any] = await communicator.receive_json_from()
    return reply


# ------------------------------------------------------------------------------------------ the socket


async def test_a_page_holds_the_markets_that_match_the_filter_in_ticker_order(session_id: int) -> None:
    communicator = await connect()
    reply = await ask(communicator, filter="kxfed", offset=0, limit=30)
    assert reply["type"] == "markets_page"
    page = reply["data"]
    assert (page["filter"], page["offset"], page["limit"]) == ("kxfed", 0, 30)
    assert page["total"] == MARKETS // FED_EVERY and page["markets_total"] == MARKETS
    assert [book["market_ticker"] for book in page["markets"]] == [ticker(n) for n in range(0, 3000, FED_EVERY)]
    assert page["markets"][1] == top(ticker(FED_EVERY), FED_EVERY)

    last = (await ask(communicator, filter="KXFED", offset=90, limit=30))["data"]
    assert [book["market_ticker"] for book in last["markets"]] == [ticker(n) for n in range(9000, 10000, FED_EVERY)]
    beyond = (await ask(communicator, filter="KXFED", offset=100, limit=30))["data"]
    assert beyond["markets"] == [] and beyond["total"] == 100
    await communicator.disconnect()


async def test_without_a_filter_it_pages_through_every_market_and_shows_those_without_a_book(session_id: int) -> None:
    communicator = await connect()
    last_cpi = MARKETS - MARKETS // FED_EVERY - 1  # KXCPI sorts before KXFED
    page = (await ask(communicator, offset=last_cpi - 1, limit=2))["data"]
    assert page["total"] == MARKETS and page["filter"] == ""
    assert [book["market_ticker"] for book in page["markets"]] == ["KXCPI-09998", NO_TOP]
    no_book = page["markets"][1]
    assert no_book["seq"] is None and no_book["yes_bid"] is None and no_book["stale"] is None
    await communicator.disconnect()


async def test_a_page_is_capped_whatever_the_client_asks(session_id: int) -> None:
    communicator = await connect()
    page = (await ask(communicator, offset=0, limit=1_000_000))["data"]
    assert page["limit"] == MARKET_PAGE_LIMIT
    assert len(page["markets"]) == MARKET_PAGE_LIMIT
    await communicator.disconnect()


@pytest.mark.parametrize(
    ("request_fields", "complaint"),
    [
        ({"offset": -1}, "'offset' must be an integer of at least 0"),
        ({"offset": "10"}, "'offset' must be an integer"),
        ({"offset": True}, "'offset' must be an integer"),
        ({"limit": 0}, "'limit' must be an integer of at least 1"),
        ({"limit": 2.5}, "'limit' must be an integer"),
        ({"filter": 5}, "'filter' must be text"),
        ({"filter": "K" * 101}, "at most 100 characters"),
    ],
)
async def test_a_bad_page_request_gets_an_error_and_the_socket_stays_up(
    request_fields: dict[str, Any], complaint: str
) -> None:
    communicator = await connect()
    reply = await ask(communicator, **request_fields)
    assert reply["type"] == "error"
    assert "request_markets" in reply["data"]["message"] and complaint in reply["data"]["message"]
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from() == {"type": "pong", "data": {}}
    await communicator.disconnect()


async def test_page_requests_are_rate_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "PAGE_BURST", 2)
    monkeypatch.setattr(limits, "PAGE_PER_SECOND", 0.001)
    communicator = await connect()
    assert [(await ask(communicator))["type"] for _ in range(2)] == ["markets_page", "markets_page"]
    refused = await ask(communicator)
    assert refused["type"] == "error" and "too many market requests" in refused["data"]["message"]
    await communicator.disconnect()


async def test_the_replay_carries_counts_not_10000_books(session_id: int) -> None:
    communicator = ConsoleSocket(application, "/v3/ws", headers=[(b"origin", b"http://127.0.0.1:8006")])
    assert (await communicator.connect())[0]
    replay = await communicator.receive_from()
    assert len(replay) < 16_000
    data = json.loads(replay)["data"]
    assert data["session"]["markets_total"] == MARKETS
    assert data["shards"][0]["market_counts"] == {"total": MARKETS, "connected": MARKETS, "stale": 3}
    await communicator.disconnect()


# ------------------------------------------------------------------------------------------ /v3/status


def get(client: Client, url: str) -> tuple[int, dict[str, Any], int]:
    response = client.get(url)
    return response.status_code, response.json(), len(response.content)


def test_the_default_status_stays_small_at_10000_markets(client: Client, session_id: int) -> None:
    code, document, size = get(client, "/v3/status")
    assert code == 200
    assert size < 8_000  # counts and aggregates, whatever the number of markets
    assert document["market_counts"] == {"total": MARKETS, "connected": MARKETS, "stale": 3}
    assert document["session"]["id"] == session_id and document["session"]["markets_total"] == MARKETS
    assert "markets" not in document and "markets" not in document["session"]


def test_status_shows_one_market_by_its_ticker(client: Client, session_id: int) -> None:
    code, detail, _ = get(client, f"/v3/status?market={ticker(42)}")
    assert code == 200
    assert detail == {"market_ticker": ticker(42), "session_id": session_id, "book": top(ticker(42), 42)}
    assert get(client, f"/v3/status?market={NO_TOP}")[1]["book"] is None
    code, missing, _ = get(client, "/v3/status?market=KXNOPE-1")
    assert code == 404 and "KXNOPE-1" in missing["error"]


def test_status_pages_through_the_markets_with_a_filter(client: Client, session_id: int) -> None:
    code, page, _ = get(client, "/v3/status?markets=1&filter=KXFED&offset=20&limit=10")
    assert code == 200
    assert page["total"] == 100 and page["markets_total"] == MARKETS
    assert [book["market_ticker"] for book in page["markets"]] == [ticker(n) for n in range(2000, 3000, FED_EVERY)]
    code, default, _ = get(client, "/v3/status?markets=1")
    assert code == 200 and (default["offset"], default["limit"], len(default["markets"])) == (0, 100, 100)
    code, capped, _ = get(client, "/v3/status?markets=1&limit=100000")
    assert capped["limit"] == MARKET_PAGE_LIMIT and len(capped["markets"]) == MARKET_PAGE_LIMIT


@pytest.mark.parametrize(
    ("query", "complaint"), [("offset=ten", "'offset' must be an integer"), ("limit=0", "at least 1")]
)
def test_a_bad_status_page_is_400_with_the_reason(client: Client, query: str, complaint: str) -> None:
    code, answer, _ = get(client, f"/v3/status?markets=1&{query}")
    assert code == 400 and complaint in answer["error"]
