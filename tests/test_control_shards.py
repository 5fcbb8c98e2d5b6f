"""Two trader shards on the real Redis and PostgreSQL: a console's request reaches only the shard it is for."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.exchange.keys import ensure_key_pair
from apps.kalshi.signing import Credentials, load_private_key
from apps.trader.models import TradingSession
from apps.trader.runtime import TraderRuntime
from apps.trader.selectors import sessions_live
from tests.processes import services_env, start_runtrader
from tests.support import ConsoleSocket, eventually, sim_trader_config
from trader_v3.asgi import application

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

FED, CPI, BTC, NBA, ETH = (
    "KXFED-26DEC-T4.25",
    "KXCPI-26DEC-T0.3",
    "KXBTCD-26DEC31-T100000",
    "KXNBA-26-LAL",
    "KXETHD-26DEC31-T4000",
)


async def ask(communicator: WebsocketCommunicator, request: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Send a control request; (control_sent, control_result) data."""
    await communicator.send_json_to(request)
    found: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(20):
        while "control_result" not in found:
            message = await communicator.receive_json_from(timeout=20)
            if message["type"] == "error":
                raise AssertionError(message)
            if message["type"] in ("control_sent", "control_result"):
                found[message["type"]] = message["data"]
    return found["control_sent"], found["control_result"]


async def live_sessions() -> list[TradingSession]:
    return await sync_to_async(sessions_live)()


async def test_a_request_reaches_only_the_shard_that_owns_the_market(tmp_path: Path) -> None:
    env = services_env(tmp_path)
    # Shard A is a runtrader process; shard B runs in this process, started after A (runtrader closes the
    # sessions it finds running when it starts). Each shard has its own built-in exchange.
    shard_a = await asyncio.to_thread(start_runtrader, env, "--no-web", "--markets", f"{FED},{CPI}")

    async def any_live() -> bool:
        return bool(await live_sessions())

    await eventually(any_live, seconds=30, what="shard A's session")
    private, public = ensure_key_pair(tmp_path)
    shard_b = TraderRuntime(
        sim_trader_config(
            Credentials(key_id="sim-local-key", private_key=load_private_key(private.read_bytes())),
            public.read_bytes(),
            markets=[BTC],
        )
    )
    run_b = asyncio.create_task(shard_b.run(handle_signals=False))
    communicator = ConsoleSocket(application, "/v3/ws", headers=[(b"origin", b"http://127.0.0.1:8006")])
    try:
        live: list[TradingSession] = []

        async def both_ready() -> bool:
            live[:] = await live_sessions()
            return len(live) == 2 and all(s.current_state == "ready" for s in live)

        await eventually(both_ready, seconds=30, what="both shards ready")
        a = next(s.pk for s in live if s.markets == [FED, CPI])
        assert shard_b.coordinator is not None
        b = shard_b.coordinator.session_id
        assert (await communicator.connect())[0]

        # An add goes to one shard: the one with the fewest markets (B).
        sent, result = await ask(communicator, {"type": "add_markets", "markets": [NBA]})
        assert sent["session_id"] == b
        assert (result["session_id"], result["added"], result["refused"]) == (b, [NBA], {})
        # A remove goes to the shard that watches the market (A), and only there.
        sent, result = await ask(communicator, {"type": "remove_markets", "markets": [CPI]})
        assert (sent["session_id"], result["session_id"], result["removed"]) == (a, a, [CPI])
        # A request may name its shard.
        sent, result = await ask(communicator, {"type": "add_markets", "markets": [ETH], "session": a})
        assert (result["session_id"], result["added"]) == (a, [ETH])

        assert shard_b.coordinator.options.markets == [BTC, NBA]

        async def a_markets() -> list[str]:
            row = await TradingSession.objects.aget(pk=a)
            return list(row.markets)

        async def a_markets_written() -> bool:
            return await a_markets() == [FED, ETH]

        await eventually(a_markets_written, what="shard A's market list written")
    finally:
        await communicator.disconnect()
        shard_b.request_shutdown("done")
        await run_b
        code, stderr = await asyncio.to_thread(shard_a.stop)
    assert code == 0, stderr
