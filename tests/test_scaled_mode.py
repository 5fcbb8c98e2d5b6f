"""Scaled mode on the real services: a trader process and a web side in another, joined by Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.test import Client
from websockets.sync.client import connect as ws_connect
from websockets.typing import Origin

from tests.processes import RunningWorker, http_get, services_env, start_runtrader, start_web_worker
from tests.support import ConsoleSocket, eventually, eventually_blocking, metric_one_hot, metric_samples, metric_value
from trader_v3.asgi import application

MARKETS = "KXFED-26DEC-T4.25,KXCPI-26DEC-T0.3"

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_the_services_are_the_real_ones() -> None:
    assert connection.vendor == "postgresql"
    assert settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    with connection.cursor() as cursor:
        cursor.execute("select 1")
        assert cursor.fetchone() == (1,)


async def test_a_console_in_this_process_follows_a_trader_in_another(tmp_path: Path) -> None:
    env = services_env(tmp_path)
    trader = await asyncio.to_thread(start_runtrader, env, "--no-web", "--markets", MARKETS)
    communicator = ConsoleSocket(application, "/v3/ws", headers=[(b"origin", b"http://127.0.0.1:8006")])
    try:
        connected, _ = await communicator.connect()
        assert connected
        assert (await communicator.receive_json_from())["type"] == "history_replay"
        # Live events cross from the trader process through Redis to this consumer.
        kinds: set[str] = set()
        statuses: list[dict[str, object]] = []
        async with asyncio.timeout(20):
            while not ({"trader_status", "orderbooks"} <= kinds and statuses and statuses[-1]["state"] == "ready"):
                message = await communicator.receive_json_from(timeout=20)
                kinds.add(message["type"])
                if message["type"] == "trader_status":
                    statuses.append(message["data"])
        # A web worker answers from the rows the trader wrote in PostgreSQL, not from its memory.
        client = Client()
        status = await sync_to_async(client.get)("/v3/status")
        assert status.json()["state"] == "ready"
        assert status.json()["session"]["markets_total"] == 2
        page = await sync_to_async(client.get)("/v3/status?markets=1")
        assert [book["market_ticker"] for book in page.json()["markets"]] == ["KXCPI-26DEC-T0.3", "KXFED-26DEC-T4.25"]

        # The ready status can reach this process before the heartbeat row written with it: allow a moment.
        async def healthy() -> bool:
            return bool((await sync_to_async(client.get)("/v3/health")).status_code == 200)

        await eventually(healthy, seconds=5, what="the worker's health from the heartbeat row")
        await communicator.send_json_to({"type": "request_history"})
        while (message := await communicator.receive_json_from(timeout=5))["type"] != "history_replay":
            pass
        assert message["data"]["transitions"][-1]["to_state"] == "ready"
    finally:
        await communicator.disconnect()
        code, stderr = await asyncio.to_thread(trader.stop)
    assert code == 0, stderr


SHARDS = {"a": "KXFED-26DEC-T4.25", "b": "KXCPI-26DEC-T0.3"}
ADDED = "KXNBA-26-LAL"


def fleet(worker: RunningWorker) -> dict[str, Any]:
    code, body = http_get(f"{worker.base_url}/v3/status")
    assert code == 200, body
    document: dict[str, Any] = json.loads(body)
    return document


def shards_by_market(worker: RunningWorker, document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The shard that watches each of the test's markets, as ``/v3/status?market=T`` names it."""
    by_session = {shard["session"]["id"]: shard for shard in document["shards"]}
    owners = {}
    for ticker in (*SHARDS.values(), ADDED):
        code, body = http_get(f"{worker.base_url}/v3/status?market={ticker}")
        if code == 200:
            owners[ticker] = by_session[json.loads(body)["session_id"]]
    return owners


def replay_from(worker: RunningWorker) -> dict[str, Any]:
    url = worker.base_url.replace("http://", "ws://") + "/v3/ws"
    with ws_connect(url, origin=Origin(worker.base_url), open_timeout=10) as socket:
        message = json.loads(socket.recv(timeout=10))
    assert message["type"] == "history_replay"
    data: dict[str, Any] = message["data"]
    return data


def control_from(worker: RunningWorker, request: dict[str, Any]) -> dict[str, Any]:
    """Send a control request through ``worker``'s console socket; the trader's ``control_result`` data."""
    url = worker.base_url.replace("http://", "ws://") + "/v3/ws"
    with ws_connect(url, origin=Origin(worker.base_url), open_timeout=10) as socket:
        socket.send(json.dumps(request))
        while True:
            message = json.loads(socket.recv(timeout=20))
            assert message["type"] != "error", message
            if message["type"] == "control_result":
                data: dict[str, Any] = message["data"]
                return data


def test_two_shards_and_two_web_workers_share_one_picture(tmp_path: Path) -> None:
    env = services_env(tmp_path)
    shards = {
        name: start_runtrader(env, "--no-web", "--markets", ticker, "--metrics-port", "0")
        for name, ticker in SHARDS.items()
    }
    workers = [start_web_worker(env), start_web_worker(env)]
    try:
        for worker in workers:
            eventually_blocking(
                lambda w=worker: fleet(w)["health"]["status"] == "healthy" and len(fleet(w)["shards"]) == 2,
                what=f"{worker.base_url} to see two healthy shards",
            )
        for worker in workers:
            document = fleet(worker)
            assert document["health"] == {"status": "healthy", "reason": "ready; 2 shards, 2 markets live"}
            by_market = shards_by_market(worker, document)
            assert set(by_market) == set(SHARDS.values())
            assert by_market[SHARDS["a"]]["session"]["id"] != by_market[SHARDS["b"]]["session"]["id"]
            assert document["market_counts"]["total"] == 2
            page = json.loads(http_get(f"{worker.base_url}/v3/status?markets=1")[1])
            assert {book["market_ticker"] for book in page["markets"]} == set(SHARDS.values())
            assert http_get(f"{worker.base_url}/v3/health")[0] == 200
            page = http_get(f"{worker.base_url}/v3-trader")[1]
            assert all(f'data-ticker="{ticker}"' in page for ticker in SHARDS.values())
            replay = replay_from(worker)
            assert {shard["session"]["id"] for shard in replay["shards"]} == {
                shard["session"]["id"] for shard in document["shards"]
            }
            # Any worker's /metrics has every shard, from the same rows.
            found = metric_samples(http_get(f"{worker.base_url}/metrics")[1])
            ready = [s.labels["shard"] for s in found if s.name == "trader_state" and s.labels["state"] == "ready"]
            assert sorted(ready) == sorted(str(shard["session"]["id"]) for shard in document["shards"])
            assert all(metric_value(found, "trader_state", shard=shard, state="ready") == 1 for shard in ready)
        for trader in shards.values():
            own = metric_samples(http_get(trader.metrics_url)[1])  # each shard's own port: itself alone
            assert metric_one_hot(own, "trader_state", "state") == ["ready"]
            assert metric_value(own, "trader_markets") == 1

        # Adding a market reaches one shard: the one with the fewest markets (the older one on a tie).
        owners = shards_by_market(workers[0], fleet(workers[0]))
        result = control_from(workers[1], {"type": "add_markets", "markets": [ADDED]})
        assert result["added"] == [ADDED]
        assert result["session_id"] == owners[SHARDS["a"]]["session"]["id"]
        for worker in workers:
            eventually_blocking(
                lambda w=worker: ADDED in shards_by_market(w, fleet(w)), what=f"{worker.base_url} to show {ADDED}"
            )
            by_market = shards_by_market(worker, fleet(worker))
            assert by_market[ADDED]["session"]["id"] == result["session_id"]
            assert fleet(worker)["market_counts"]["total"] == 3  # one shard took it, not both

        stopped_session = shards_by_market(workers[0], fleet(workers[0]))[SHARDS["a"]]["session"]["id"]
        code, stderr = shards["a"].stop()
        assert code == 0, stderr[-3000:]
        for worker in workers:
            eventually_blocking(
                lambda w=worker: fleet(w)["health"]["status"] == "degraded",
                what=f"{worker.base_url} to see shard a stop",
            )
            document = fleet(worker)
            assert document["health"]["reason"] == f"session {stopped_session} stopped; its markets are not watched"
            assert shards_by_market(worker, document)[SHARDS["a"]]["session"]["status"] == "stopped"
            assert shards_by_market(worker, document)[SHARDS["b"]]["state"] == "ready"
            assert http_get(f"{worker.base_url}/v3/health")[0] == 200
    finally:
        for worker in workers:
            worker.stop()
        for trader in shards.values():
            trader.stop()
