"""Adding and removing markets of a running trader from the console's socket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from apps.exchange.keys import ensure_key_pair
from apps.kalshi.signing import Credentials, load_private_key
from apps.trader import control
from apps.trader.core.states import State
from apps.trader.runtime import TraderRuntime
from apps.trader.services import session_start
from tests.support import ConsoleSocket, sim_trader_config
from trader_v3.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)


async def status_until(communicator: WebsocketCommunicator, condition) -> Any:
    async with asyncio.timeout(15):
        while True:
            message = await communicator.receive_json_from(timeout=15)
            if message["type"] == "trader_status" and condition(message["data"]):
                return message["data"]


async def books_until(communicator: WebsocketCommunicator, tickers: set[str]) -> dict[str, dict[str, Any]]:
    """The latest book per market from ``orderbooks`` events, once every one of ``tickers`` is live."""
    books: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(15):
        while not (tickers <= books.keys() and all(b["seq"] and not b["stale"] for b in books.values())):
            message = await communicator.receive_json_from(timeout=15)
            if message["type"] == "orderbooks":
                books.update((book["market_ticker"], book) for book in message["data"]["books"])
                for ticker in books.keys() - tickers:
                    del books[ticker]
    return books


async def next_of(communicator: WebsocketCommunicator, kind: str) -> dict[str, Any]:
    """The data of the next message of type ``kind``, skipping the live stream around it."""
    async with asyncio.timeout(15):
        while (message := await communicator.receive_json_from(timeout=15))["type"] != kind:
            pass
    data: dict[str, Any] = message["data"]
    return data


async def console() -> WebsocketCommunicator:
    communicator = ConsoleSocket(application, "/v3/ws", headers=[(b"origin", b"http://127.0.0.1:8006")])
    assert (await communicator.connect())[0]
    return communicator


async def test_a_console_adds_and_removes_markets_and_hears_what_the_trader_did(tmp_path: Path) -> None:
    private, public = ensure_key_pair(tmp_path)
    config = sim_trader_config(
        Credentials(key_id="sim-local-key", private_key=load_private_key(private.read_bytes())),
        public.read_bytes(),
        markets=["KXFED-26DEC-T4.25"],
    )
    runtime = TraderRuntime(config)
    run = asyncio.create_task(runtime.run(handle_signals=False))
    communicator = await console()
    try:
        await status_until(communicator, lambda s: s["state"] == State.READY)
        session_id = runtime.coordinator.session_id if runtime.coordinator else None

        await communicator.send_json_to({"type": "add_markets", "markets": ["kxcpi-26dec-t0.3", "KXNOPE-26DEC-T1"]})
        sent = await next_of(communicator, "control_sent")
        assert sent["session_id"] == session_id
        result = await next_of(communicator, "control_result")
        assert result == {
            "action": "add_markets",
            "requested": ["KXCPI-26DEC-T0.3", "KXNOPE-26DEC-T1"],
            "added": ["KXCPI-26DEC-T0.3"],
            "refused": {"KXNOPE-26DEC-T1": "exchange error 11: Invalid parameter"},
            "pending": [],
            "session_id": session_id,
            "request_id": sent["request_id"],
        }
        await status_until(
            communicator, lambda s: s["metrics"]["markets_total"] == 2 and s["metrics"]["stale_markets"] == 0
        )
        books = await books_until(communicator, {"KXFED-26DEC-T4.25", "KXCPI-26DEC-T0.3"})
        assert all(book["yes_bid"] and book["seq"] for book in books.values())

        # The refused ticker is in no request the trader makes: the market already live is refused here,
        # in the web worker, and the other is removed by the trader that watches it.
        await communicator.send_json_to({"type": "add_markets", "markets": ["KXFED-26DEC-T4.25"]})
        result = await next_of(communicator, "control_result")
        assert result["refused"] == {"KXFED-26DEC-T4.25": f"already watched by session {session_id}"}
        await communicator.send_json_to({"type": "remove_markets", "markets": ["KXFED-26DEC-T4.25"]})
        result = await next_of(communicator, "control_result")
        assert (result["removed"], result["refused"]) == (["KXFED-26DEC-T4.25"], {})
        status = await status_until(communicator, lambda s: s["metrics"]["markets_total"] == 1)
        assert status["metrics"]["reconnects"] == 0

        await communicator.send_json_to({"type": "add_markets", "markets": ["KXNBA-26-LAL\n"]})
        reply = await next_of(communicator, "error")
        assert "is not a market ticker" in reply["message"]
    finally:
        await communicator.disconnect()
        runtime.request_shutdown("done")
        await run


async def test_with_no_trader_running_a_request_is_answered_at_once() -> None:
    communicator = await console()
    await communicator.send_json_to({"type": "add_markets", "markets": ["KXFED-26DEC-T4.25"]})
    reply = await next_of(communicator, "error")
    assert reply["message"] == "no trader is running (no live session with a fresh heartbeat)"
    await communicator.disconnect()


async def test_a_trader_that_does_not_answer_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "REPLY_TIMEOUT", 0.3)
    deaf = await get_channel_layer().new_channel()  # a live session nobody listens for
    session = await database_sync_to_async(session_start)(
        environment="sim", markets=["KXFED-26DEC-T4.25"], exchange_url="ws://127.0.0.1:1/x", control_address=deaf
    )
    communicator = await console()
    await communicator.send_json_to({"type": "remove_markets", "markets": ["KXFED-26DEC-T4.25"]})
    sent = await next_of(communicator, "control_sent")
    reply = await next_of(communicator, "error")
    assert reply == {
        "message": f"no trader answered: remove_markets KXFED-26DEC-T4.25 sent to session {session.pk} "
        "got no reply within 0.3 s",
        "request_id": sent["request_id"],
        "action": "remove_markets",
    }
    await communicator.send_json_to({"type": "add_markets", "markets": ["KXCPI-26DEC-T0.3"], "session": 999})
    assert (await next_of(communicator, "error"))["message"] == "session 999 is not a live trader"
    await communicator.disconnect()
