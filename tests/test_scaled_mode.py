"""Scaled mode on the real services: a trader process and a web side in another, joined by Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from django.test import Client

from tests.processes import project_env, start_runtrader
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
    db = connection.settings_dict
    database_url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = project_env(
        tmp_path,
        DATABASE_URL=database_url,
        REDIS_URL=os.environ["REDIS_URL"],
        CHANNEL_LAYER_PREFIX=settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
    )
    trader = await asyncio.to_thread(start_runtrader, env, "--no-web", "--markets", MARKETS)
    communicator = WebsocketCommunicator(application, "/v3/ws", headers=[(b"origin", b"http://127.0.0.1:8006")])
    try:
        connected, _ = await communicator.connect()
        assert connected
        assert (await communicator.receive_json_from())["type"] == "history_replay"
        # Live events cross from the trader process through Redis to this consumer.
        kinds: set[str] = set()
        statuses: list[dict[str, object]] = []
        async with asyncio.timeout(20):
            while not ({"trader_status", "orderbook"} <= kinds and statuses and statuses[-1]["state"] == "ready"):
                message = await communicator.receive_json_from(timeout=20)
                kinds.add(message["type"])
                if message["type"] == "trader_status":
                    statuses.append(message["data"])
        # A web worker answers from the rows the trader wrote in PostgreSQL, not from its memory.
        client = Client()
        status = await sync_to_async(client.get)("/v3/status")
        assert status.json()["state"] == "ready"
        assert status.json()["session"]["markets"] == ["KXFED-26DEC-T4.25", "KXCPI-26DEC-T0.3"]
        # The ready status can reach this process before the heartbeat row written with it: allow a moment.
        async with asyncio.timeout(5):
            while (await sync_to_async(client.get)("/v3/health")).status_code != 200:
                await asyncio.sleep(0.1)
        await communicator.send_json_to({"type": "request_history"})
        while (message := await communicator.receive_json_from(timeout=5))["type"] != "history_replay":
            pass
        assert message["data"]["transitions"][-1]["to_state"] == "ready"
    finally:
        await communicator.disconnect()
        code, stderr = await asyncio.to_thread(trader.stop)
    assert code == 0, stderr
