from __future__ import annotations

import asyncio
import json
import re

import pytest

from apps.exchange.config import DEFAULT_MARKETS
from apps.kalshi.fixedpoint import DOLLAR, format_price, format_size
from apps.kalshi.signing import WS_PATH, Credentials
from tests import keys
from tests.exchange.helpers import http_get, http_json, now_ms, open_ws, parse_response, recv_n, subscribe
from tests.support import StartSim, eventually

FED, CPI, BTC, NBA, ETH, NY = DEFAULT_MARKETS
PRICE = re.compile(r"^\d\.\d{4}$")
SIZE = re.compile(r"^\d+\.\d{2}$")
MARKET_FIELDS = {
    "ticker", "event_ticker", "status", "close_time", "volume_fp", "volume_24h_fp", "open_interest_fp",
    "yes_bid_dollars", "yes_ask_dollars", "no_bid_dollars", "no_ask_dollars", "yes_bid_size_fp",
    "yes_ask_size_fp", "last_price_dollars", "price_level_structure",
}  # fmt: skip


async def test_markets_lists_every_market_with_kalshi_fields(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    status, body = await http_json(sim, "/trade-api/v2/markets", credentials)
    assert status == 200
    assert body["cursor"] == ""
    assert [m["ticker"] for m in body["markets"]] == DEFAULT_MARKETS
    structures = {}
    for market in body["markets"]:
        assert market.keys() >= MARKET_FIELDS
        assert market["status"] == "active"
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", market["close_time"])
        for key in (
            "yes_bid_dollars",
            "yes_ask_dollars",
            "no_bid_dollars",
            "no_ask_dollars",
            "last_price_dollars",
        ):
            assert PRICE.match(market[key]), key
        for key in ("volume_fp", "volume_24h_fp", "open_interest_fp", "yes_bid_size_fp", "yes_ask_size_fp"):
            assert SIZE.match(market[key]), key
        book = sim.true_book(market["ticker"])
        top = book.top()
        assert top.yes_bid is not None
        assert top.yes_ask is not None
        assert market["yes_bid_dollars"] == format_price(top.yes_bid[0])
        assert market["yes_ask_dollars"] == format_price(top.yes_ask[0])
        assert market["no_bid_dollars"] == format_price(DOLLAR - top.yes_ask[0])
        assert market["no_ask_dollars"] == format_price(DOLLAR - top.yes_bid[0])
        assert market["yes_bid_size_fp"] == format_size(top.yes_bid[1])
        assert market["yes_ask_size_fp"] == format_size(top.yes_ask[1])
        structures[market["ticker"]] = market["price_level_structure"]
    assert structures[BTC] == "deci_cent"
    assert structures[FED] == "linear_cent"
    assert {m["event_ticker"] for m in body["markets"]} >= {"KXFED-26DEC", "KXNBA-26"}


async def test_markets_cursor_paging(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    seen: list[str] = []
    cursor = ""
    pages = 0
    while True:
        query = "limit=4" + (f"&cursor={cursor}" if cursor else "")
        status, body = await http_json(sim, f"/trade-api/v2/markets?{query}", credentials)
        assert status == 200
        assert len(body["markets"]) <= 4
        seen += [m["ticker"] for m in body["markets"]]
        pages += 1
        cursor = body["cursor"]
        if not cursor:
            break
    assert pages == 2
    assert seen == DEFAULT_MARKETS


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (f"tickers={FED},{BTC}", [FED, BTC]),
        (f"tickers={FED}, {BTC},NOPE-1", [FED, BTC]),
        ("event_ticker=KXCPI-26DEC", [CPI]),
        ("series_ticker=KXNBA", [NBA]),
        ("status=open", DEFAULT_MARKETS),
        ("status=closed", []),
        ("mve_filter=exclude", DEFAULT_MARKETS),
        ("mve_filter=only", []),
        ("limit=0", DEFAULT_MARKETS),
        ("limit=1000", DEFAULT_MARKETS),
        ("limit=2&series_ticker=KXFED", [FED]),
    ],
)
async def test_markets_filters(start_sim: StartSim, credentials: Credentials, query: str, expected: list[str]) -> None:
    sim = await start_sim()
    status, body = await http_json(sim, f"/trade-api/v2/markets?{query.replace(' ', '%20')}", credentials)
    assert status == 200
    assert [m["ticker"] for m in body["markets"]] == expected


async def test_market_status_filter_follows_status_changes(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    sim.set_market_status(NY, "closed")
    sim.set_market_status(NBA, "finalized")
    _, closed = await http_json(sim, "/trade-api/v2/markets?status=closed", credentials)
    assert [(m["ticker"], m["status"]) for m in closed["markets"]] == [(NY, "closed")]
    _, settled = await http_json(sim, "/trade-api/v2/markets?status=settled", credentials)
    assert [m["ticker"] for m in settled["markets"]] == [NBA]
    _, open_ = await http_json(sim, "/trade-api/v2/markets?status=open", credentials)
    assert NY not in [m["ticker"] for m in open_["markets"]]


@pytest.mark.parametrize(
    "query", ["limit=1001", "limit=-1", "limit=ten", "cursor=!!!", "status=sleeping", "mve_filter=x"]
)
async def test_markets_bad_parameters_are_400(start_sim: StartSim, credentials: Credentials, query: str) -> None:
    sim = await start_sim()
    status, body = await http_json(sim, f"/trade-api/v2/markets?{query}", credentials)
    assert status == 400
    assert body["error"]["code"] == "bad_request"


async def test_orderbook_depth_and_contents(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    book = sim.true_book(FED)
    status, body = await http_json(sim, f"/trade-api/v2/markets/{FED}/orderbook", credentials)
    assert status == 200
    assert body.keys() == {"orderbook_fp"}
    assert body["orderbook_fp"].keys() == {"yes_dollars", "no_dollars"}
    full = body["orderbook_fp"]
    assert {p: s for p, s in full["yes_dollars"]} == {format_price(p): format_size(s) for p, s in book.yes.items()}
    assert {p: s for p, s in full["no_dollars"]} == {format_price(p): format_size(s) for p, s in book.no.items()}
    _, body = await http_json(sim, f"/trade-api/v2/markets/{FED}/orderbook?depth=3", credentials)
    top = body["orderbook_fp"]
    assert top["yes_dollars"] == [[format_price(p), format_size(s)] for p, s in reversed(book.levels("yes", 3))]
    assert top["no_dollars"] == [[format_price(p), format_size(s)] for p, s in reversed(book.levels("no", 3))]
    status, _ = await http_json(sim, f"/trade-api/v2/markets/{FED}/orderbook?depth=101", credentials)
    assert status == 400
    status, body = await http_json(sim, "/trade-api/v2/markets/NOPE-1/orderbook", credentials)
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_exchange_status_open_and_closed(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(message_rate=5000.0, ping_interval=0.02)
    status, body = await http_json(sim, "/trade-api/v2/exchange/status", credentials)
    assert (status, body) == (
        200,
        {"exchange_active": True, "trading_active": True, "exchange_estimated_resume_time": None},
    )
    ws = await open_ws(sim, credentials)
    await subscribe(ws, [FED])
    await recv_n(ws, 10)
    sim.set_exchange_status(False)
    _, body = await http_json(sim, "/trade-api/v2/exchange/status", credentials)
    assert (body["exchange_active"], body["trading_active"]) == (False, False)
    # Closed: books stand still (for five pings, 0.1 s: some 500 deltas were it open).
    deltas, pings = sim.stats["deltas_sent"], sim.stats["pings_sent"]
    await eventually(lambda: sim.stats["pings_sent"] >= pings + 5, what="five pings while closed")
    assert sim.stats["deltas_sent"] == deltas
    sim.set_exchange_status(True)
    await recv_n(ws, 5)
    await ws.close()


async def test_rest_signature_checks(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    path = "/trade-api/v2/markets"
    status, _, body = await http_get(sim, path, None)
    assert status == 401
    assert b"missing" in body
    status, _, _ = await http_get(sim, path, None, headers=credentials.headers("GET", WS_PATH, now_ms()))
    assert status == 401
    stranger = keys.credentials("stranger", "test-key")
    status, _, _ = await http_get(sim, path, stranger)
    assert status == 401
    status, _, _ = await http_get(sim, path, None, headers=credentials.headers("GET", path, now_ms() - 120_000))
    assert status == 401
    # The signed path is the path without its query string.
    status, _, _ = await http_get(sim, path + "?limit=1", None, headers=credentials.headers("GET", path, now_ms()))
    assert status == 200
    status, headers, _ = await http_get(sim, "/trade-api/v2/nothing-here", credentials)
    assert status == 404
    assert headers["content-type"] == "application/json"


async def test_market_with_a_dot_in_its_ticker(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    assert "." in FED
    status, body = await http_json(sim, f"/trade-api/v2/markets/{FED}", credentials)
    assert status == 200
    assert body["market"]["ticker"] == FED


async def test_rest_has_its_own_port_and_the_websocket_port_serves_only_the_websocket(
    start_sim: StartSim, credentials: Credentials
) -> None:
    sim = await start_sim()
    assert sim.rest_port != sim.port
    assert sim.api_url == f"http://{sim.config.host}:{sim.rest_port}/trade-api/v2"
    status, _, body = await http_get(sim, "/trade-api/v2/markets", credentials, port=sim.port)
    assert status == 404 and b"only the WebSocket" in body
    status, _, _ = await http_get(sim, "/trade-api/v2/markets", credentials)
    assert status == 200


async def test_every_method_is_signed_over_its_method_and_path(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    path = "/trade-api/v2/portfolio/orders"
    signed_as_get = credentials.headers("GET", path, now_ms())
    status, _, body = await http_get(sim, path, None, method="POST", body=b"{}", headers=signed_as_get)
    assert status == 401 and b"invalid signature" in body
    # A legacy order call, properly signed, gets Kalshi's answer since the V2 switch: a 2xx with an error.
    status, _, body = await http_get(sim, path, credentials, method="POST", body=b'{"ticker": "X"}')
    assert status == 200
    assert json.loads(body)["error"]["code"] == "deprecated_v1_order_endpoint"
    status, _, body = await http_get(sim, f"{path}/some-order-id", credentials, method="DELETE")
    assert json.loads(body)["error"]["code"] == "deprecated_v1_order_endpoint"
    status, _, body = await http_get(sim, "/trade-api/v2/markets", credentials, method="POST")
    assert status == 405 and json.loads(body)["error"]["code"] == "method_not_allowed"


async def test_the_rest_port_keeps_connections_alive_and_refuses_malformed_or_huge_requests(
    start_sim: StartSim, credentials: Credentials
) -> None:
    sim = await start_sim()
    reader, writer = await asyncio.open_connection(sim.config.host, sim.rest_port)
    path = "/trade-api/v2/exchange/status"
    for _ in range(2):  # two requests on one connection
        signed = credentials.headers("GET", path, now_ms())
        head = [f"GET {path} HTTP/1.1", "Host: sim", *(f"{k}: {v}" for k, v in signed.items())]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        status_line = await asyncio.wait_for(reader.readline(), 5)
        assert status_line.startswith(b"HTTP/1.1 200")
        headers = {}
        while (line := await reader.readline()) != b"\r\n":
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        assert json.loads(await reader.readexactly(int(headers["content-length"])))["exchange_active"] is True
    writer.close()

    reader, writer = await asyncio.open_connection(sim.config.host, sim.rest_port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    status, _, body = parse_response(await asyncio.wait_for(reader.read(), 5))
    assert status == 400 and json.loads(body)["error"]["code"] == "bad_request"
    writer.close()

    # A body over the limit is refused from its announced length, before any of it is read.
    reader, writer = await asyncio.open_connection(sim.config.host, sim.rest_port)
    writer.write(b"POST /trade-api/v2/portfolio/events/orders HTTP/1.1\r\nHost: sim\r\nContent-Length: 2000000\r\n\r\n")
    status, _, _ = parse_response(await asyncio.wait_for(reader.read(), 5))
    assert status == 413
    writer.close()
    status, _, _ = await http_get(sim, path, credentials)
    assert status == 200  # the exchange goes on serving
