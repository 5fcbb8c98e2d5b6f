"""/v3/status carries each trader's trading block, and no secret: no key id, no key, no password in a URL."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.utils import timezone

from apps.trader.services import session_heartbeat, session_start
from tests.console.trading_sample import trading_block
from tests.support import TEST_KEY_ID

pytestmark = pytest.mark.django_db(transaction=True)


def a_trader(status: dict[str, object], *, exchange_url: str = "ws://127.0.0.1:9/x") -> int:
    session = session_start(environment="sim", markets=["KXFED-26DEC-T4.25"], exchange_url=exchange_url)
    session_heartbeat(
        session_id=session.pk,
        state="trading_ready",
        state_entered_at=timezone.now(),
        status={"state": "trading_ready", "metrics": {"markets_total": 1}, **status},
        counters={},
    )
    return session.pk


def test_the_status_carries_the_trading_block_of_each_trader(client: Client) -> None:
    block = trading_block(orders=3)
    session = a_trader({"trading": block})
    document = client.get("/v3/status").json()
    assert document["trading"] == block
    assert [(s["session"]["id"], s["trading"]) for s in document["shards"]] == [(session, block)]


def test_a_trader_that_does_not_trade_says_so(client: Client) -> None:
    a_trader({})
    document = client.get("/v3/status").json()
    assert document["trading"] == {"enabled": False}
    assert document["shards"][0]["trading"] == {"enabled": False}


def test_with_no_trader_the_status_says_nothing_trades(client: Client) -> None:
    assert client.get("/v3/status").json()["trading"] == {"enabled": False}


def test_no_secret_shows(client: Client) -> None:
    a_trader({"trading": trading_block()}, exchange_url="wss://trader:hunter2@127.0.0.1:9/trade-api/ws/v2")
    text = client.get("/v3/status").content.decode()
    document = json.loads(text)
    assert document["session"]["exchange_url"] == "wss://127.0.0.1:9/trade-api/ws/v2"
    for secret in ("hunter2", "trader:", TEST_KEY_ID, "sim-local-key", "PRIVATE KEY", "key_id"):
        assert secret not in text, secret
