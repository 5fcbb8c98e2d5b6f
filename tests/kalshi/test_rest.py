from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from apps.exchange.config import DEFAULT_MARKETS
from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.backoff import Backoff
from apps.kalshi.fixedpoint import parse_price, parse_size
from apps.kalshi.rest import ExchangeStatus, KalshiRestClient, MarketInfo
from apps.kalshi.resterrors import KalshiRestError, MalformedResponse
from apps.kalshi.signing import HEADER_KEY, HEADER_SIGNATURE, HEADER_TIMESTAMP, Credentials, verify
from tests import keys
from tests.exchange.helpers import http_json
from tests.support import TEST_KEY_ID, StartSim

FED, CPI, BTC, NBA, ETH, NY = DEFAULT_MARKETS
KEY_ID = TEST_KEY_ID
MANY_MARKETS = [f"KXTEST-26-M{i:02d}" for i in range(11)]


def fast_backoff() -> Backoff:
    return Backoff(initial=0.001, cap=0.005)


@pytest.fixture
async def sim(start_sim: StartSim) -> ExchangeSimulator:
    return await start_sim(key_id=KEY_ID, seed=11)


@pytest.fixture
async def rest(sim: ExchangeSimulator, credentials: Credentials) -> AsyncIterator[KalshiRestClient]:
    async with KalshiRestClient(sim.api_url, credentials, backoff=fast_backoff()) as client:
        yield client


def mock_client(handler: Callable[[httpx.Request], httpx.Response], credentials: Credentials) -> KalshiRestClient:
    return KalshiRestClient(
        "https://kalshi.invalid/trade-api/v2",
        credentials,
        backoff=fast_backoff(),
        transport=httpx.MockTransport(handler),
    )


# ------------------------------------------------------------------------------------------ signing


async def test_signed_request_is_accepted(sim: ExchangeSimulator, rest: KalshiRestClient) -> None:
    status = await rest.exchange_status()
    assert status == ExchangeStatus(exchange_active=True, trading_active=True, estimated_resume_time=None)
    assert rest.metrics.as_dict() == {"requests": 1, "retries_429": 0, "errors": 0}
    assert sim.stats["rest_requests"] == 1


async def test_signature_covers_the_full_path_without_the_query(credentials: Credentials) -> None:
    public_key = credentials.private_key.public_key()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"markets": [], "cursor": ""})

    async with mock_client(handler, credentials) as client:
        assert [m async for m in client.markets(limit=5, series_ticker="KXFED")] == []
    (request,) = seen
    assert request.url.path == "/trade-api/v2/markets"
    assert dict(request.url.params) == {
        "status": "open",
        "mve_filter": "exclude",
        "limit": "5",
        "series_ticker": "KXFED",
    }
    headers = request.headers
    assert headers[HEADER_KEY] == KEY_ID
    assert verify(public_key, headers[HEADER_SIGNATURE], headers[HEADER_TIMESTAMP], "GET", "/trade-api/v2/markets")
    assert not verify(public_key, headers[HEADER_SIGNATURE], headers[HEADER_TIMESTAMP], "GET", "/markets")


async def test_wrong_key_gets_a_401_without_key_material(sim: ExchangeSimulator) -> None:
    wrong = keys.credentials("stranger", KEY_ID)
    async with KalshiRestClient(sim.api_url, wrong, backoff=fast_backoff()) as client:
        with pytest.raises(KalshiRestError) as caught:
            await client.exchange_status()
        assert client.metrics.errors == 1
    error = caught.value
    assert error.status == 401
    assert error.path == "/trade-api/v2/exchange/status"
    text = f"{error} {error!r} {error.message}"
    assert "401" in str(error)
    assert "signature" in error.message
    assert KEY_ID not in text
    assert "PRIVATE KEY" not in text
    assert keys.key_pair("stranger")[0].decode().splitlines()[1][:32] not in text


async def test_unknown_key_id_is_refused_and_never_echoed(sim: ExchangeSimulator, credentials: Credentials) -> None:
    other = Credentials(key_id="someone-else-9c1d", private_key=credentials.private_key)
    async with KalshiRestClient(sim.api_url, other, backoff=fast_backoff()) as client:
        with pytest.raises(KalshiRestError) as caught:
            await client.exchange_status()
    assert caught.value.status == 401
    assert "someone-else-9c1d" not in str(caught.value)


async def test_an_error_body_that_echoes_the_key_id_is_redacted(credentials: Credentials) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers[HEADER_KEY]
        return httpx.Response(403, json={"error": {"code": "forbidden", "message": f"key {key} may not read this"}})

    async with mock_client(handler, credentials) as client:
        with pytest.raises(KalshiRestError) as caught:
            await client.orderbook(FED)
    assert caught.value.status == 403
    assert KEY_ID not in str(caught.value)
    assert "forbidden: key <key id> may not read this" in str(caught.value)


async def test_transport_failure_is_a_rest_error(credentials: Credentials) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now, so the connection is refused.
    async with KalshiRestClient(f"http://127.0.0.1:{port}/trade-api/v2", credentials) as client:
        with pytest.raises(KalshiRestError) as caught:
            await client.exchange_status()
    assert caught.value.status == 0
    assert "request failed" in str(caught.value)
    assert client.metrics.errors == 1


def test_base_url_must_be_http(credentials: Credentials) -> None:
    with pytest.raises(ValueError, match="base_url"):
        KalshiRestClient("wss://example.invalid/trade-api/ws/v2", credentials)


# ------------------------------------------------------------------------------------------ 429


async def test_429_is_retried_with_backoff_and_counted(sim: ExchangeSimulator, rest: KalshiRestClient) -> None:
    sim.faults.rest_429 = 3
    status = await rest.exchange_status()
    assert status.exchange_active
    assert rest.metrics.as_dict() == {"requests": 4, "retries_429": 3, "errors": 0}
    assert sim.stats["faults"]["rest_429"] == 3
    # The next call starts its back-off afresh and needs no retry.
    await rest.exchange_status()
    assert rest.metrics.retries_429 == 3


async def test_429_gives_up_after_max_retries(sim: ExchangeSimulator, credentials: Credentials) -> None:
    sim.faults.rest_429 = 5
    async with KalshiRestClient(sim.api_url, credentials, backoff=fast_backoff(), max_retries_429=2) as client:
        with pytest.raises(KalshiRestError) as caught:
            await client.exchange_status()
        assert caught.value.status == 429
        assert "gave up after 2 retries" in str(caught.value)
        assert client.metrics.as_dict() == {"requests": 3, "retries_429": 2, "errors": 1}
        sim.faults.rest_429 = 0
        assert (await client.exchange_status()).exchange_active


async def test_429_while_paging_resumes_the_same_page(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(markets=MANY_MARKETS, key_id=KEY_ID, seed=11)
    async with KalshiRestClient(sim.api_url, credentials, backoff=fast_backoff()) as client:
        first = client.markets(limit=4)
        tickers = [(await anext(first)).ticker for _ in range(4)]
        sim.faults.rest_429 = 2
        tickers += [m.ticker async for m in first]
        assert client.metrics.retries_429 == 2
    assert tickers == MANY_MARKETS


# ------------------------------------------------------------------------------------------ status


async def test_closed_exchange_status(sim: ExchangeSimulator, rest: KalshiRestClient) -> None:
    sim.set_exchange_status(False)
    assert await rest.exchange_status() == ExchangeStatus(False, False, None)
    sim.set_exchange_status(True, trading_active=False)
    assert await rest.exchange_status() == ExchangeStatus(True, False, None)


async def test_exchange_status_with_a_resume_time(credentials: Credentials) -> None:
    body = {"exchange_active": False, "trading_active": False, "exchange_estimated_resume_time": "2026-07-01T13:00:00Z"}

    async with mock_client(lambda request: httpx.Response(200, json=body), credentials) as client:
        status = await client.exchange_status()
    assert status.estimated_resume_time == "2026-07-01T13:00:00Z"


async def test_malformed_exchange_status_names_the_field(credentials: Credentials) -> None:
    body = {"exchange_active": "yes", "trading_active": True}
    async with mock_client(lambda request: httpx.Response(200, json=body), credentials) as client:
        with pytest.raises(MalformedResponse, match="exchange_active"):
            await client.exchange_status()


# ------------------------------------------------------------------------------------------ markets


async def test_markets_page_through_every_page_and_match_one_big_page(
    start_sim: StartSim, credentials: Credentials
) -> None:
    sim = await start_sim(markets=MANY_MARKETS, key_id=KEY_ID, seed=11)
    async with KalshiRestClient(sim.api_url, credentials) as client:
        paged = [m async for m in client.markets(limit=3)]
        assert client.metrics.requests == 4  # 3 + 3 + 3 + 2
        whole = [m async for m in client.markets()]
        assert client.metrics.requests == 5
    assert [m.ticker for m in paged] == MANY_MARKETS
    assert paged == whole


async def test_markets_filters_are_sent(sim: ExchangeSimulator, rest: KalshiRestClient) -> None:
    sim.set_market_status(CPI, "closed")
    assert [m.ticker async for m in rest.markets(event_ticker="KXFED-26DEC")] == [FED]
    assert [m.ticker async for m in rest.markets(status="closed")] == [CPI]
    assert [m.ticker async for m in rest.markets(status=None)] == DEFAULT_MARKETS
    assert [m async for m in rest.markets(mve_filter="only")] == []


async def test_market_fields_are_parsed_exactly(
    sim: ExchangeSimulator, rest: KalshiRestClient, credentials: Credentials
) -> None:
    status, listing = await http_json(sim, "/trade-api/v2/markets", credentials)
    assert status == 200
    raw = {m["ticker"]: m for m in listing["markets"]}
    markets = [m async for m in rest.markets()]
    assert [m.ticker for m in markets] == DEFAULT_MARKETS
    for market in markets:
        entry = raw[market.ticker]
        assert market.event_ticker == entry["event_ticker"]
        assert market.status == "active"
        assert market.close_time == entry["close_time"]
        assert market.volume_24h == parse_size(entry["volume_24h_fp"])
        assert market.volume == parse_size(entry["volume_fp"])
        assert market.open_interest == parse_size(entry["open_interest_fp"])
        assert market.open_interest > 0
        top = sim.true_book(market.ticker).top()
        assert top.yes_bid is not None
        assert top.yes_ask is not None
        assert market.yes_bid == top.yes_bid[0]
        assert market.yes_ask == top.yes_ask[0]


def test_market_info_parses_fixed_point_and_tolerates_absent_fields() -> None:
    full = MarketInfo.from_json(
        {
            "ticker": "KXA-26-B",
            "event_ticker": "KXA-26",
            "status": "active",
            "volume_24h_fp": "1234.56",
            "volume_fp": "99999.99",
            "open_interest_fp": "0.01",
            "yes_bid_dollars": "0.425000",
            "yes_ask_dollars": "0.4300",
            "close_time": "2026-12-31T22:00:00Z",
        }
    )
    assert full == MarketInfo("KXA-26-B", "KXA-26", "active", 123456, 9999999, 1, 4250, 4300, "2026-12-31T22:00:00Z")
    assert MarketInfo.from_json({"ticker": "KXA-26-B"}) == MarketInfo("KXA-26-B")
    # Recordings from before the fixed-point migration carry whole contracts and cents.
    legacy = MarketInfo.from_json({"ticker": "T", "volume_24h": 12, "yes_bid": 42})
    assert (legacy.volume_24h, legacy.yes_bid) == (1200, 4200)


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"ticker": "T", "volume_24h_fp": "lots"}, "volume_24h_fp"),
        ({"ticker": "T", "volume_24h_fp": 12.5}, "volume_24h_fp"),
        ({"ticker": "T", "open_interest_fp": "-1.00"}, "open_interest_fp"),
        ({"ticker": "T", "yes_bid_dollars": "1.2500"}, "yes_bid_dollars"),
        ({"ticker": "T", "yes_ask_dollars": "0.12345"}, "yes_ask_dollars"),
        ({"ticker": "T", "close_time": 1700000000}, "close_time"),
        ({"ticker": 7}, "ticker"),
        ({"volume_fp": "1.00"}, "ticker"),
    ],
)
async def test_malformed_market_entry_names_the_field(
    credentials: Credentials, entry: dict[str, Any], field: str
) -> None:
    body = {"markets": [{"ticker": "GOOD"}, entry], "cursor": ""}
    async with mock_client(lambda request: httpx.Response(200, json=body), credentials) as client:
        with pytest.raises(MalformedResponse) as caught:
            _ = [m async for m in client.markets()]
    assert field in str(caught.value)
    assert "markets[1]" in str(caught.value)
    assert caught.value.path == "/trade-api/v2/markets"


async def test_a_repeating_cursor_is_refused(credentials: Credentials) -> None:
    body = {"markets": [{"ticker": "A"}], "cursor": "same"}
    async with mock_client(lambda request: httpx.Response(200, json=body), credentials) as client:
        with pytest.raises(MalformedResponse, match="cursor"):
            _ = [m async for m in client.markets()]


async def test_a_response_that_is_not_json_is_malformed(credentials: Credentials) -> None:
    async with mock_client(lambda request: httpx.Response(200, text="<html>"), credentials) as client:
        with pytest.raises(MalformedResponse, match="not a JSON object"):
            await client.exchange_status()


# ------------------------------------------------------------------------------------------ orderbook


@pytest.mark.parametrize("ticker", [FED, BTC, ETH])
async def test_orderbook_equals_the_exchange_book(sim: ExchangeSimulator, rest: KalshiRestClient, ticker: str) -> None:
    sim.faults.stall = True  # no deltas, so the book cannot move between the two reads
    book = await rest.orderbook(ticker)
    truth = sim.true_book(ticker)
    assert book.market_ticker == ticker
    assert book.yes == truth.yes
    assert book.no == truth.no
    assert book.yes and book.no


async def test_orderbook_depth_keeps_the_best_levels(sim: ExchangeSimulator, rest: KalshiRestClient) -> None:
    book = await rest.orderbook(NBA, depth=3)
    truth = sim.true_book(NBA)
    assert book.levels("yes") == truth.levels("yes", 3)
    assert book.levels("no") == truth.levels("no", 3)


async def test_orderbook_of_an_unknown_market_is_a_404(rest: KalshiRestClient) -> None:
    with pytest.raises(KalshiRestError) as caught:
        await rest.orderbook("KXNOPE-26-X")
    assert caught.value.status == 404
    assert caught.value.path == "/trade-api/v2/markets/KXNOPE-26-X/orderbook"
    assert "not found" in str(caught.value)


async def test_orderbook_levels_are_exact_and_empty_sides_tolerated(credentials: Credentials) -> None:
    body = {"orderbook_fp": {"yes_dollars": [["0.0150", "12.50"], ["0.4200", "0.01"]], "no_dollars": None}}
    async with mock_client(lambda request: httpx.Response(200, json=body), credentials) as client:
        book = await client.orderbook("KXA-26-B")
    assert book.yes == {parse_price("0.0150"): 1250, 4200: 1}
    assert book.no == {}


@pytest.mark.parametrize(
    ("orderbook_fp", "field"),
    [
        ({"yes_dollars": [["0.4200"]], "no_dollars": []}, "orderbook_fp.yes_dollars[0]"),
        ({"yes_dollars": [], "no_dollars": [["0.5", "1.00"], ["x", "1.00"]]}, "orderbook_fp.no_dollars[1]"),
        ({"yes_dollars": [["1.0000", "1.00"]], "no_dollars": []}, "orderbook_fp.yes_dollars[0]"),
        ({"yes_dollars": [["0.4200", "1.00"], ["0.42", "2.00"]], "no_dollars": []}, "appears twice"),
        ({"yes_dollars": "0.42", "no_dollars": []}, "orderbook_fp.yes_dollars"),
    ],
)
async def test_malformed_orderbook_names_the_field(
    credentials: Credentials, orderbook_fp: dict[str, Any], field: str
) -> None:
    body = json.dumps({"orderbook_fp": orderbook_fp})
    async with mock_client(lambda request: httpx.Response(200, text=body), credentials) as client:
        with pytest.raises(MalformedResponse) as caught:
            await client.orderbook("KXA-26-B")
    assert field in str(caught.value)
