"""Prometheus metrics of a trading trader: its counters, refusals by rule, fills by liquidity and its figures."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.trader.services import session_heartbeat, session_start
from tests.console.trading_sample import trading_block
from tests.support import metric_samples as samples
from tests.support import metric_value as value

pytestmark = pytest.mark.django_db(transaction=True)

TRADING_METRICS = {
    "trading_orders_placed": 7,
    "trading_orders_amended": 1,
    "trading_orders_filled": 1,
    "trading_orders_cancelled": 3,
    "trading_orders_rejected": 0,
    "trading_orders_refused": 3,
    "trading_fills": 2,
    "trading_maker_fills": 1,
    "trading_taker_fills": 1,
    "trading_account_syncs": 1,
    "trading_kill_switch": 0,
    "trading_strategy_failures": 0,
    "trading_refused_max_position": 2,
    "trading_refused_price_band": 1,
}


def a_trader(metrics: dict[str, Any], status: dict[str, Any]) -> str:
    session = session_start(environment="sim", markets=["KXFED-26DEC-T4.25"], exchange_url="ws://127.0.0.1:9/x")
    session_heartbeat(
        session_id=session.pk,
        state="trading_ready",
        state_entered_at=timezone.now(),
        status={"state": "trading_ready", "metrics": {"markets_total": 1, **metrics}, **status},
        counters={},
    )
    return str(session.pk)


def scrape(client: Client) -> list[Any]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return samples(response.content.decode())


def test_a_trading_trader_s_counters_refusals_and_figures_are_metrics(client: Client) -> None:
    shard = a_trader(TRADING_METRICS, {"trading": trading_block(orders=3)})
    found = scrape(client)
    assert value(found, "trader_trading_orders_placed_total", shard=shard) == 7
    assert value(found, "trader_trading_orders_cancelled_total", shard=shard) == 3
    assert value(found, "trader_trading_refused_orders_total", shard=shard, rule="max_position") == 2
    assert value(found, "trader_trading_refused_orders_total", shard=shard, rule="price_band") == 1
    assert value(found, "trader_trading_fills_total", shard=shard, liquidity="maker") == 1
    assert value(found, "trader_trading_fills_total", shard=shard, liquidity="taker") == 1
    assert value(found, "trader_trading_open_orders", shard=shard) == 3
    assert value(found, "trader_trading_ready", shard=shard) == 1
    assert value(found, "trader_trading_killed", shard=shard) == 0
    assert value(found, "trader_trading_dollars", shard=shard, figure="balance") == 9987.25
    assert value(found, "trader_trading_dollars", shard=shard, figure="unrealized_pnl") == -0.3


def test_a_pulled_kill_switch_shows(client: Client) -> None:
    shard = a_trader(
        TRADING_METRICS | {"trading_kill_switch": 1}, {"trading": trading_block(killed="from the console")}
    )
    found = scrape(client)
    assert value(found, "trader_trading_kill_switch_total", shard=shard) == 1
    assert value(found, "trader_trading_killed", shard=shard) == 1
    assert value(found, "trader_trading_ready", shard=shard) == 0


def test_a_trader_that_does_not_trade_has_no_trading_series(client: Client) -> None:
    a_trader({}, {"trading": {"enabled": False}})
    found = scrape(client)
    assert any(s.name == "trader_markets" for s in found)
    assert not [s for s in found if s.name.startswith("trader_trading_")]
