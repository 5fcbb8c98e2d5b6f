"""The V2 order client against scripted Kalshi answers the built-in exchange never gives: a 5xx or a timeout
around a create or a decrease, a 409 for an order that cannot be found, a 2xx carrying an error, malformed
bodies, a key id echoed in an error; and the orders it refuses to build. Everything the exchange can answer
is tested against it, in test_trading_against_exchange.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from apps.kalshi.backoff import Backoff
from apps.kalshi.environments import Environment, TradingPermission
from apps.kalshi.portfolio import DecreaseRequest, OrderRequest
from apps.kalshi.resterrors import KalshiRestError
from apps.kalshi.signing import Credentials
from apps.kalshi.trading import KalshiTradingClient
from tests.kalshi.fakekalshi import FakeKalshi, kalshi_error
from tests.support import TEST_KEY_ID

URL = "http://127.0.0.1:8008/trade-api/v2"
SIM = TradingPermission(Environment.SIM)
FED = "KXFED-26DEC-T4.00"


@pytest.fixture
def fake(credentials: Credentials) -> FakeKalshi:
    return FakeKalshi(credentials.private_key.public_key())


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


def test_buying_no_is_asking_yes_at_the_complement() -> None:
    order = OrderRequest.buy_no(FED, 100, 3000)
    assert (order.side, order.price) == ("ask", 7000)
    assert OrderRequest.sell_no(FED, 100, 3000).side == "bid"
    assert OrderRequest.buy_no(FED, 100, 3000).client_order_id != order.client_order_id


@pytest.mark.parametrize(("count", "price"), [(0, 5000), (-100, 5000), (100, 0), (100, 10_000), (100, 10_001)])
def test_it_refuses_an_order_it_cannot_send(count: int, price: int) -> None:
    with pytest.raises(ValueError, match=r"count|price"):
        OrderRequest.buy_yes(FED, count, price)


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


async def test_an_error_that_echoes_the_key_id_is_redacted(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    fake.fail_next(
        "GET", "/portfolio/balance", response=kalshi_error(403, "forbidden", f"key {TEST_KEY_ID} lacks read scope")
    )
    with pytest.raises(KalshiRestError) as caught:
        await client.get_balance()
    assert TEST_KEY_ID not in str(caught.value)
    assert "<key id>" in caught.value.message


# ------------------------------------------------------------------------------------------ retries


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


# ------------------------------------------------------------------------------------------ answers


async def test_a_malformed_answer_names_the_field(client: KalshiTradingClient, fake: FakeKalshi) -> None:
    fake.fail_next(
        "GET", "/portfolio/balance", response=httpx.Response(200, json={"balance_dollars": 12.5, "portfolio_value": 0})
    )
    with pytest.raises(KalshiRestError, match="balance_dollars has the wrong type"):
        await client.get_balance()
