"""Trading faults of the built-in exchange: refused, slow, silent and answered-as-failed-but-placed orders."""

from __future__ import annotations

from typing import Any

from apps.exchange.config import DEFAULT_MARKETS
from apps.exchange.faults import Faults, parse_faults
from apps.kalshi.signing import Credentials
from tests.exchange.helpers import api, open_ws, recv, send
from tests.support import StartSim

FED = DEFAULT_MARKETS[0]
ORDERS = "/portfolio/events/orders"


def order(client_order_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "ticker": FED,
        "side": "bid",
        "price": "0.01",
        "count": "1.00",
        "time_in_force": "good_till_canceled",
        "self_trade_prevention_type": "taker_at_cross",
        "client_order_id": client_order_id,
    } | fields


def test_the_trading_faults_have_sim_faults_names() -> None:
    spec = "reject_orders=2,order_delay=0.5,drop_private=1,accept_then_5xx=3"
    assert parse_faults(spec) == Faults(reject_orders=2, order_delay=0.5, drop_private=1, accept_then_5xx=3)


async def test_the_next_n_orders_are_refused_then_orders_are_taken(
    start_sim: StartSim, credentials: Credentials
) -> None:
    sim = await start_sim(faults=Faults(reject_orders=2))
    for attempt in range(2):
        status, body = await api(sim, credentials, "POST", ORDERS, order(f"r-{attempt}"))
        assert (status, body["error"]["code"]) == (400, "invalid_order")
    status, _ = await api(sim, credentials, "POST", ORDERS, order("r-2"))
    assert status == 201
    _, body = await api(sim, credentials, "GET", "/portfolio/orders")
    assert [o["client_order_id"] for o in body["orders"]] == ["r-2"]
    assert sim.stats["faults"]["reject_orders"] == 2


async def test_a_create_answered_500_was_placed_and_its_retry_is_refused_as_a_duplicate(
    start_sim: StartSim, credentials: Credentials
) -> None:
    sim = await start_sim(faults=Faults(accept_then_5xx=1))
    status, body = await api(sim, credentials, "POST", ORDERS, order("once"))
    assert (status, body["error"]["code"]) == (500, "internal_server_error")
    _, body = await api(sim, credentials, "GET", "/portfolio/orders?status=resting")
    assert [o["client_order_id"] for o in body["orders"]] == ["once"]
    status, body = await api(sim, credentials, "POST", ORDERS, order("once"))
    assert (status, body["error"]["code"]) == (409, "order_already_exists")
    _, body = await api(sim, credentials, "GET", "/portfolio/orders")
    assert len(body["orders"]) == 1
    assert sim.desk.order_by_client_id(credentials.key_id, "once").order_id == body["orders"][0]["order_id"]
    assert sim.stats["faults"]["accept_then_5xx"] == 1


async def test_a_dropped_private_message_is_missing_and_the_next_arrives(
    start_sim: StartSim, credentials: Credentials
) -> None:
    sim = await start_sim(faults=Faults(drop_private=1))
    ws = await open_ws(sim, credentials)
    await send(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["user_orders"]}})
    assert (await recv(ws))["type"] == "subscribed"
    for name in ("lost", "kept"):
        status, _ = await api(sim, credentials, "POST", ORDERS, order(name))
        assert status == 201
    frame = await recv(ws)
    assert frame["msg"]["client_order_id"] == "kept"
    assert sim.stats["faults"]["drop_private"] == 1
    await ws.close()


async def test_delayed_order_responses_still_answer(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(faults=Faults(order_delay=0.05))
    status, body = await api(sim, credentials, "POST", ORDERS, order("slow"))
    assert status == 201 and body["client_order_id"] == "slow"
    status, _ = await api(sim, credentials, "GET", "/portfolio/balance")
    assert status == 200
    assert sim.stats["faults"]["order_delay"] == 1  # reads are not delayed
