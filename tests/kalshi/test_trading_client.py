"""The V2 order client against real-shaped Kalshi answers: exact requests and results, retries, idempotent
creates, errors, and the trading rules before every request."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from apps.kalshi.backoff import Backoff
from apps.kalshi.environments import Environment, TradingPermission, TradingRefused
from apps.kalshi.portfolio import (
    AmendRequest,
    Balance,
    CancelRequest,
    DecreaseRequest,
    MarketPosition,
    OrderError,
    OrderRequest,
    Placement,
)
from apps.kalshi.resterrors import KalshiRestError
from apps.kalshi.signing import HEADER_KEY, Credentials, load_private_key
from apps.kalshi.trading import KalshiTradingClient
from tests.kalshi.fakekalshi import FakeKalshi, kalshi_error
from tests.support import TEST_KEY_ID

URL = "http://127.0.0.1:8008/trade-api/v2"
SIM = TradingPermission(Environment.SIM)
FED = "KXFED-26DEC-T4.00"


@pytest.fixture
def fake(key_pair: tuple[bytes, bytes]) -> FakeKalshi:
    return FakeKalshi(load_private_key(key_pair[0]).public_key())


@pytest.fixture
async def client(fake: FakeKalshi, credentials: Credentials) -> AsyncIterator[KalshiTradingClient]:
    async with KalshiTradingClient(
        URL, credentials, SIM, backoff=Backoff(initial=0.001, cap=0.005), transport=fake.transport()
    ) as trading:
        yield trading


def body_of(request: httpx.Request) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(request.content)
    return loaded


# ------------------------------------------------------------------------------------------ create


async def test_it_creates_an_order_in_the_v2_shape(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    request = OrderRequest.buy_yes(FED, 1250, 5600, post_only=True)
    placement = await client.create_order(request)
    (sent,) = fake.sent("POST", "/portfolio/events/orders")
    assert body_of(sent) == {
        "ticker": FED,
        "side": "bid",
        "count": "12.50",
        "price": "0.5600",
        "time_in_force": "good_till_canceled",
        "self_trade_prevention_type": "taker_at_cross",
        "client_order_id": request.client_order_id,
        "post_only": True,
    }
    assert sent.headers[HEADER_KEY] == TEST_KEY_ID
    assert placement == Placement(
        order_id="ord-0001",
        client_order_id=request.client_order_id,
        fill_count=0,
        remaining_count=1250,
        ts_ms=1767225600001,
    )


def test_buying_no_is_asking_yes_at_the_complement() -> None:
    order = OrderRequest.buy_no(FED, 100, 3000)
    assert (order.side, order.price) == ("ask", 7000)
    assert OrderRequest.sell_no(FED, 100, 3000).side == "bid"
    assert OrderRequest.buy_no(FED, 100, 3000).client_order_id != order.client_order_id


@pytest.mark.parametrize(("count", "price"), [(0, 5000), (-100, 5000), (100, 0), (100, 10_000), (100, 10_001)])
def test_it_refuses_an_order_it_cannot_send(count: int, price: int) -> None:
    with pytest.raises(ValueError, match=r"count|price"):
        OrderRequest.buy_yes(FED, count, price)


async def test_a_fill_on_placement_is_exact(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    answer = {
        "order_id": "ord-77",
        "client_order_id": "c-1",
        "fill_count": "3.00",
        "remaining_count": "0.00",
        "average_fill_price": "0.553333",
        "average_fee_paid": "0.017298",
        "ts_ms": 1767225600456,
    }
    fake.fail_next("POST", "/portfolio/events/orders", response=httpx.Response(201, json=answer))
    placement = await client.create_order(OrderRequest.buy_yes(FED, 300, 5600, time_in_force="immediate_or_cancel"))
    assert (placement.fill_count, placement.remaining_count) == (300, 0)
    assert (placement.average_fill_price, placement.average_fee_paid) == (553_333, 17_298)


async def test_an_accepted_create_whose_answer_was_a_5xx_is_not_placed_twice(
    client: KalshiTradingClient, fake: FakeKalshi
) -> None:
    fake.fail_next("POST", "/portfolio/events/orders", after=True, response=kalshi_error(500, "internal_error", "oops"))
    request = OrderRequest.sell_yes(FED, 200, 6100)
    placement = await client.create_order(request)
    creates = fake.sent("POST", "/portfolio/events/orders")
    assert [body_of(r)["client_order_id"] for r in creates] == [request.client_order_id] * 2
    assert fake.placed() == 1
    assert placement.order_id == "ord-0001"
    assert placement.recovered
    assert (placement.client_order_id, placement.remaining_count, placement.fill_count) == (
        request.client_order_id,
        200,
        0,
    )
    (lookup,) = fake.sent("GET", "/portfolio/orders")
    assert lookup.url.params["ticker"] == FED


async def test_a_create_that_timed_out_after_being_accepted_is_not_placed_twice(
    client: KalshiTradingClient, fake: FakeKalshi
) -> None:
    fake.fail_next("POST", "/portfolio/events/orders", after=True, exception=httpx.ReadTimeout("read timed out"))
    placement = await client.create_order(OrderRequest.buy_yes(FED, 100, 4200))
    assert fake.placed() == 1
    assert placement.recovered
    assert client.rest.metrics.retries_failure == 1


async def test_a_create_refused_with_a_5xx_is_placed_by_the_retry(
    client: KalshiTradingClient, fake: FakeKalshi
) -> None:
    fake.fail_next("POST", "/portfolio/events/orders", response=kalshi_error(503, "service_unavailable", "busy"))
    placement = await client.create_order(OrderRequest.buy_yes(FED, 100, 4200))
    assert fake.placed() == 1
    assert not placement.recovered


async def test_a_409_for_an_order_that_cannot_be_found_is_raised(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    fake.fail_next("POST", "/portfolio/events/orders", response=kalshi_error(409, "conflict", "conflict"))
    with pytest.raises(KalshiRestError) as caught:
        await client.create_order(OrderRequest.buy_yes(FED, 100, 4200))
    assert (caught.value.status, caught.value.code) == (409, "conflict")
    assert fake.placed() == 0


async def test_a_2xx_that_carries_an_error_is_a_failure(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    body = {
        "error": {
            "code": "deprecated_v1_order_endpoint",
            "message": "Please switch to the V2 endpoints",
            "details": "https://docs.kalshi.com/api-reference/orders/create-order-v2",
        }
    }
    fake.fail_next("POST", "/portfolio/events/orders", response=httpx.Response(200, json=body))
    with pytest.raises(KalshiRestError) as caught:
        await client.create_order(OrderRequest.buy_yes(FED, 100, 4200))
    error = caught.value
    assert (error.status, error.code, error.method) == (200, "deprecated_v1_order_endpoint", "POST")
    assert error.details.endswith("create-order-v2")
    assert "Please switch to the V2 endpoints" in str(error)
    assert len(fake.sent("POST", "/portfolio/events/orders")) == 1


async def test_kalshi_errors_keep_their_code_message_and_details(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    fake.fail_next(
        "POST",
        "/portfolio/events/orders",
        response=kalshi_error(400, "invalid_order", "order would cross", "post only cross"),
    )
    with pytest.raises(KalshiRestError) as caught:
        await client.create_order(OrderRequest.buy_yes(FED, 100, 4200, post_only=True))
    assert (caught.value.status, caught.value.code, caught.value.details) == (400, "invalid_order", "post only cross")
    assert str(caught.value) == (
        "POST /trade-api/v2/portfolio/events/orders: HTTP 400: invalid_order: order would cross"
    )


async def test_an_error_that_echoes_the_key_id_is_redacted(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    fake.fail_next(
        "GET", "/portfolio/balance", response=kalshi_error(403, "forbidden", f"key {TEST_KEY_ID} lacks read scope")
    )
    with pytest.raises(KalshiRestError) as caught:
        await client.get_balance()
    assert TEST_KEY_ID not in str(caught.value)
    assert "<key id>" in caught.value.message


# ------------------------------------------------------------------------------------------ retries


async def test_a_read_is_retried_after_429_then_succeeds(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    for _ in range(2):
        fake.fail_next("GET", "/portfolio/balance", response=httpx.Response(429, json={"error": "too many requests"}))
    balance = await client.get_balance()
    assert balance.balance == 10_000_000_000
    assert len(fake.sent("GET", "/portfolio/balance")) == 3
    assert client.rest.metrics.retries_429 == 2


async def test_retries_are_bounded(fake: FakeKalshi, credentials: Credentials) -> None:
    async with KalshiTradingClient(
        URL,
        credentials,
        SIM,
        backoff=Backoff(initial=0.001, cap=0.005),
        max_retries_failure=2,
        transport=fake.transport(),
    ) as client:
        for _ in range(5):
            fake.fail_next("GET", "/portfolio/balance", response=kalshi_error(502, "bad_gateway", "upstream"))
        with pytest.raises(KalshiRestError) as caught:
            await client.get_balance()
    assert caught.value.status == 502
    assert len(fake.sent("GET", "/portfolio/balance")) == 3


async def test_a_relative_decrease_is_never_retried(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    placed = await client.create_order(OrderRequest.buy_yes(FED, 500, 4200))
    path = f"/portfolio/events/orders/{placed.order_id}/decrease"
    fake.fail_next("POST", path, after=True, response=kalshi_error(500, "internal_error", "oops"))
    with pytest.raises(KalshiRestError) as caught:
        await client.decrease_order(DecreaseRequest(placed.order_id, reduce_by=100))
    assert caught.value.status == 500
    assert len(fake.sent("POST", path)) == 1
    assert fake.orders[placed.order_id]["remaining_count_fp"] == "4.00"
    fake.fail_next("POST", path, response=httpx.Response(429, json={"error": "too many requests"}))
    with pytest.raises(KalshiRestError) as limited:
        await client.decrease_order(DecreaseRequest(placed.order_id, reduce_by=100))
    assert (limited.value.status, limited.value.message) == (429, "too many requests")
    assert len(fake.sent("POST", path)) == 2


async def test_an_absolute_decrease_is_retried(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    placed = await client.create_order(OrderRequest.buy_yes(FED, 500, 4200))
    path = f"/portfolio/events/orders/{placed.order_id}/decrease"
    fake.fail_next("POST", path, after=True, response=kalshi_error(500, "internal_error", "oops"))
    result = await client.decrease_order(DecreaseRequest(placed.order_id, reduce_to=100))
    assert result.remaining_count == 100
    assert [body_of(r) for r in fake.sent("POST", path)] == [{"reduce_to": "1.00"}] * 2


async def test_a_batch_create_is_sent_once(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    fake.fail_next("POST", "/portfolio/events/orders/batched", response=kalshi_error(503, "unavailable", "busy"))
    with pytest.raises(KalshiRestError):
        await client.create_orders([OrderRequest.buy_yes(FED, 100, 4200)])
    assert len(fake.sent("POST", "/portfolio/events/orders/batched")) == 1


# ------------------------------------------------------------------------------------------ batch, amend, cancel


async def test_a_batch_create_answers_each_order(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    first = OrderRequest.buy_yes(FED, 100, 4200)
    duplicate = OrderRequest.sell_yes(FED, 100, 5800, client_order_id=first.client_order_id)
    results = await client.create_orders([first, duplicate])
    assert [r.request for r in results] == [first, duplicate]
    assert results[0].placement is not None
    assert results[0].placement.order_id == "ord-0001"
    assert results[1].placement is None
    assert results[1].error == OrderError("duplicate_client_order_id", "an order with this client_order_id exists")
    (sent,) = fake.sent("POST", "/portfolio/events/orders/batched")
    assert [o["side"] for o in body_of(sent)["orders"]] == ["bid", "ask"]


async def test_amend_sends_the_new_total(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    placed = await client.create_order(OrderRequest.buy_yes(FED, 500, 4200))
    fake.orders[placed.order_id]["fill_count_fp"] = "2.00"
    result = await client.amend_order(AmendRequest(placed.order_id, FED, "bid", price=4300, count=700))
    (sent,) = fake.sent("POST", f"/portfolio/events/orders/{placed.order_id}/amend")
    assert body_of(sent) == {"ticker": FED, "side": "bid", "price": "0.4300", "count": "7.00"}
    assert (result.remaining_count, result.fill_count, result.ts_ms) == (500, 0, 1767225600123)


async def test_cancel_one_names_its_order_and_market(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    placed = await client.create_order(OrderRequest.buy_yes(FED, 350, 4200))
    result = await client.cancel_order(placed.order_id, market_ticker=FED)
    (sent,) = fake.sent("DELETE", f"/portfolio/events/orders/{placed.order_id}")
    assert dict(sent.url.params) == {"market_ticker": FED}
    assert (result.order_id, result.reduced_by, result.error) == (placed.order_id, 350, None)
    with pytest.raises(KalshiRestError) as caught:
        await client.cancel_order("ord-missing")
    assert caught.value.status == 404


async def test_batch_cancel_reports_each_order(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    placed = await client.create_order(OrderRequest.buy_yes(FED, 100, 4200))
    results = await client.cancel_orders([placed.order_id, CancelRequest("ord-gone", market_ticker=FED)])
    (sent,) = fake.sent("DELETE", "/portfolio/events/orders/batched")
    assert body_of(sent) == {"orders": [{"order_id": placed.order_id}, {"order_id": "ord-gone", "market_ticker": FED}]}
    assert [(r.order_id, r.reduced_by) for r in results] == [(placed.order_id, 100), ("ord-gone", 0)]
    assert results[1].error == OrderError("not_found", "gone")


async def test_no_cancel_widens_into_the_account_wide_cancel(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    await client.create_order(OrderRequest.buy_yes(FED, 100, 4200))
    assert await client.cancel_orders([]) == []
    for order_id in ("", "/", "a/b"):
        with pytest.raises(ValueError, match="order_id"):
            await client.cancel_order(order_id)
    assert fake.cancel_all_calls == 0
    assert fake.requests[1:] == []


async def test_cancel_all_is_sent_once_and_only_when_asked(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    await client.create_order(OrderRequest.buy_yes(FED, 100, 4200))
    await client.cancel_all_orders_account_wide()
    (sent,) = fake.sent("DELETE", "/portfolio/events/orders")
    assert sent.content == b""
    assert fake.cancel_all_calls == 1
    assert [o["status"] for o in fake.orders.values()] == ["canceled"]
    fake.fail_next("DELETE", "/portfolio/events/orders", response=kalshi_error(500, "internal_error", "oops"))
    with pytest.raises(KalshiRestError):
        await client.cancel_all_orders_account_wide(subaccount=2)
    assert len(fake.sent("DELETE", "/portfolio/events/orders")) == 2


# ------------------------------------------------------------------------------------------ reads


async def test_orders_follow_the_cursor_with_their_filters(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    for price in (4100, 4200, 4300):
        await client.create_order(OrderRequest.buy_yes(FED, 100, price))
    await client.create_order(OrderRequest.buy_yes("KXCPI-26DEC-T0.3", 100, 5000))
    orders = [o async for o in client.orders(ticker=FED, status="resting", limit=2)]
    assert [o.yes_price for o in orders] == [4100, 4200, 4300]
    assert [o.no_price for o in orders] == [5900, 5800, 5700]
    first, second = fake.sent("GET", "/portfolio/orders")
    assert dict(first.url.params) == {"ticker": FED, "status": "resting", "limit": "2"}
    assert second.url.params["cursor"] == fake.page("x", [{}] * 3, {"limit": "2"}).json()["cursor"]
    order = orders[0]
    assert (order.book_side, order.outcome_side, order.initial_count, order.remaining_count) == ("bid", "yes", 100, 100)
    assert await client.get_order(order.order_id) == order


async def test_positions_fills_balance_and_settlements_are_exact(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    fake.positions.append(
        {
            "ticker": FED,
            "exchange_index": 0,
            "total_traded_dollars": "5.600000",
            "position_fp": "-10.00",
            "market_exposure_dollars": "4.400000",
            "realized_pnl_dollars": "-0.123456",
            "fees_paid_dollars": "0.172480",
            "last_updated_ts": "2026-12-02T05:00:00Z",
        }
    )
    fake.fills.append(
        {
            "fill_id": "f-1",
            "trade_id": "f-1",
            "exchange_index": 0,
            "order_id": "ord-0001",
            "ticker": FED,
            "market_ticker": FED,
            "outcome_side": "no",
            "book_side": "ask",
            "side": "no",
            "action": "buy",
            "count_fp": "10.00",
            "yes_price_dollars": "0.5600",
            "no_price_dollars": "0.4400",
            "is_taker": True,
            "fee_cost": "0.172480",
            "created_time": "2026-12-02T05:00:00Z",
            "ts": 1764651600,
        }
    )
    fake.balance = {
        "balance": 999_827,
        "balance_dollars": "9998.275200",
        "portfolio_value": 440,
        "updated_ts": 1764651600,
        "balance_breakdown": [{"exchange_index": 0, "balance": "9998.275200"}],
    }
    fake.settlements.append(
        {
            "ticker": FED,
            "exchange_index": 0,
            "event_ticker": "KXFED-26DEC",
            "market_result": "no",
            "yes_count_fp": "0.00",
            "yes_total_cost_dollars": "0.000000",
            "no_count_fp": "10.00",
            "no_total_cost_dollars": "4.400000",
            "revenue": 1000,
            "settled_time": "2026-12-03T00:00:00Z",
            "fee_cost": "0.000000",
            "value": 0,
        }
    )
    (position,) = [p async for p in client.positions()]
    assert position == MarketPosition(
        ticker=FED,
        position=-1000,
        market_exposure=4_400_000,
        realized_pnl=-123_456,
        fees_paid=172_480,
        total_traded=5_600_000,
        last_updated_ts="2026-12-02T05:00:00Z",
        exchange_index=0,
    )
    (fill,) = (await client.get_fills(ticker=[FED, "KXCPI-26DEC-T0.3"])).items
    assert (fill.count, fill.yes_price, fill.no_price, fill.fee_cost, fill.is_taker) == (
        1000,
        5600,
        4400,
        172_480,
        True,
    )
    assert fake.sent("GET", "/portfolio/fills")[0].url.params["ticker"] == f"{FED},KXCPI-26DEC-T0.3"
    assert await client.get_balance() == Balance(
        balance=9_998_275_200, portfolio_value=4_400_000, updated_ts=1764651600, by_exchange_index=((0, 9_998_275_200),)
    )
    (settlement,) = (await client.get_settlements()).items
    assert (settlement.revenue, settlement.no_count, settlement.no_total_cost, settlement.value) == (
        10_000_000,
        1000,
        4_400_000,
        0,
    )


async def test_a_malformed_answer_names_the_field(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    fake.fail_next(
        "GET", "/portfolio/balance", response=httpx.Response(200, json={"balance_dollars": 12.5, "portfolio_value": 0})
    )
    with pytest.raises(KalshiRestError, match="balance_dollars has the wrong type"):
        await client.get_balance()


async def test_reconcile_reads_resting_orders_positions_and_balance(
    client: KalshiTradingClient, fake: FakeKalshi
) -> None:
    placed = [await client.create_order(OrderRequest.buy_yes(FED, 100, 4000 + i)) for i in range(3)]
    await client.cancel_order(placed[1].order_id)
    snapshot = await client.reconcile()
    assert [o.order_id for o in snapshot.open_orders] == [placed[0].order_id, placed[2].order_id]
    assert snapshot.positions == ()
    assert snapshot.balance.balance == 10_000_000_000
    (listing,) = fake.sent("GET", "/portfolio/orders")
    assert listing.url.params["status"] == "resting"


# ------------------------------------------------------------------------------------------ trading rules


@pytest.mark.parametrize(
    ("permission", "url", "rule"),
    [
        (TradingPermission(Environment.LOCAL), "https://external-api.kalshi.com/trade-api/v2", "market data only"),
        (TradingPermission(Environment.PAPER), "https://external-api.kalshi.com/trade-api/v2", "demo host"),
        (TradingPermission(Environment.SIM), "https://demo-api.kalshi.co/trade-api/v2", "loopback"),
        (
            TradingPermission(Environment.PRODUCTION, confirm_production=True),
            "https://external-api.kalshi.com/trade-api/v2",
            "trading explicitly enabled",
        ),
    ],
)
def test_no_client_is_built_where_the_rules_forbid_trading(
    permission: TradingPermission, url: str, rule: str, fake: FakeKalshi, credentials: Credentials
) -> None:
    with pytest.raises(TradingRefused, match=rule):
        KalshiTradingClient(url, credentials, permission, transport=fake.transport())
    assert fake.requests == []


async def test_the_rules_are_checked_again_before_every_request(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    await client.get_balance()
    client.permission = TradingPermission(Environment.LOCAL)
    with pytest.raises(TradingRefused, match="local is market data only"):
        await client.create_order(OrderRequest.buy_yes(FED, 100, 4200))
    assert len(fake.requests) == 1
    assert fake.placed() == 0


async def test_sending_the_same_request_again_returns_the_order_it_placed(
    client: KalshiTradingClient, fake: FakeKalshi
) -> None:
    request = OrderRequest.buy_yes(FED, 500, 4200)
    for _ in range(4):
        fake.fail_next("POST", "/portfolio/events/orders", after=True, response=kalshi_error(502, "bad_gateway", "x"))
    with pytest.raises(KalshiRestError):
        await client.create_order(request)
    order_id = next(iter(fake.orders))
    fake.orders[order_id].update(fill_count_fp="2.00", remaining_count_fp="3.00")
    placement = await client.create_order(request)
    assert fake.placed() == 1
    assert (placement.order_id, placement.fill_count, placement.remaining_count) == (order_id, 200, 300)
    assert placement.recovered
    assert (placement.average_fill_price, placement.average_fee_paid) == (None, None)
