"""Adding and removing markets of a running trader from the console's socket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from apps.exchange.keys import ensure_key_pair
from apps.kalshi.signing import Credentials, load_private_key
from apps.trader.core.states import State
from apps.trader.runtime import TraderRuntime
from tests.support import sim_trader_config
from trader_v3.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def status_until(communicator: WebsocketCommunicator, condition) -> Any:
    async with asyncio.timeout(15):
        while True:
            message = await communicator.receive_json_from(timeout=15)
            if message["type"] == "trader_status" and condition(message["data"]):
                return message["data"]


async def test_a_console_adds_and_removes_markets_on_the_live_subscription(tmp_path: Path) -> None:
    private, public = ensure_key_pair(tmp_path)
    config = sim_trader_config(
        Credentials(key_id="sim-local-key", private_key=load_private_key(private.read_bytes())),
        public.read_bytes(),
        markets=["KXFED-26DEC-T4.25"],
    )
    runtime = TraderRuntime(config)
    run = asyncio.create_task(runtime.run(handle_signals=False))
    communicator = WebsocketCommunicator(application, "/v3/ws", headers=[(b"origin", b"http://127.0.0.1:8006")])
    try:
        assert (await communicator.connect())[0]
        await status_until(communicator, lambda s: s["state"] == State.READY)

        await communicator.send_json_to({"type": "add_markets", "markets": ["KXCPI-26DEC-T0.3", "KXNBA-26-LAL"]})
        status = await status_until(
            communicator, lambda s: len(s["markets"]) == 3 and not any(m["stale"] for m in s["markets"])
        )
        assert {m["market_ticker"] for m in status["markets"]} == {
            "KXFED-26DEC-T4.25",
            "KXCPI-26DEC-T0.3",
            "KXNBA-26-LAL",
        }
        assert all(m["yes_bid"] and m["seq"] for m in status["markets"])

        await communicator.send_json_to({"type": "remove_markets", "markets": ["KXFED-26DEC-T4.25"]})
        status = await status_until(communicator, lambda s: len(s["markets"]) == 2)
        assert "KXFED-26DEC-T4.25" not in {m["market_ticker"] for m in status["markets"]}
        assert status["metrics"]["reconnects"] == 0

        await communicator.send_json_to({"type": "add_markets", "markets": ["<script>"]})
        async with asyncio.timeout(5):
            while (reply := await communicator.receive_json_from())["type"] != "error":
                pass
        assert "is not a market ticker" in reply["data"]["message"]
    finally:
        await communicator.disconnect()
        runtime.request_shutdown("done")
        await run
