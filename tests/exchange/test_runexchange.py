from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

from websockets.asyncio.client import connect

from apps.kalshi.rest import KalshiRestClient
from apps.kalshi.signing import WS_PATH, Credentials, load_private_key
from tests.exchange.helpers import now_ms
from tests.processes import manage

PROJECT = Path(__file__).resolve().parents[2]


async def test_runexchange_serves_with_the_data_folder_key_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "DATA_DIR": str(tmp_path), "ENVIRONMENT": "sim", "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "manage.py",
        "runexchange",
        "--port",
        "0",
        "--rest-port",
        "0",
        "--seed",
        "3",
        "--rate",
        "500",
        "--markets",
        "KXFED-26DEC-T4.25,KXTEST-1",
        "--settle",
        "KXFED-26DEC-T4.25=no@0",
        cwd=PROJECT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    output = ""
    try:
        async with asyncio.timeout(15):
            while "Exchange simulator listening" not in output:
                line = await process.stdout.readline()
                assert line, f"runexchange exited early: {output}"
                output += line.decode()
        match = re.search(r"WebSocket (ws://\S+)\s+REST (http://\S+)", output)
        assert match is not None, output
        assert match.group(2).endswith("/trade-api/v2")
        private_key = (tmp_path / "sim_private_key.pem").read_bytes()
        assert (tmp_path / "sim_public_key.pem").exists()
        credentials = Credentials("any", load_private_key(private_key))
        async with connect(match.group(1), additional_headers=credentials.headers("GET", WS_PATH, now_ms())) as ws:
            await ws.send(
                json.dumps(
                    {
                        "id": 1,
                        "cmd": "subscribe",
                        "params": {"channels": ["orderbook_delta"], "market_ticker": "KXTEST-1"},
                    }
                )
            )
            replies = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(3)]
        assert [r["type"] for r in replies] == ["subscribed", "orderbook_snapshot", "orderbook_delta"]
        async with KalshiRestClient(match.group(2), credentials) as api:
            assert (await api.exchange_status()).exchange_active
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            rest, _ = await process.communicate()
        output += rest.decode()
        assert process.returncode == 0, output
        assert "Stopping" in output
        assert "Settled KXFED-26DEC-T4.25 no: 0 positions paid" in output
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_runexchange_help_documents_the_trading_options() -> None:
    result = manage({**os.environ, "ENVIRONMENT": "sim"}, "runexchange", "--help", timeout=30)
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    for option in (
        "--starting-balance",
        "--api-key",
        "--maker-fee-markets",
        "--write-rate",
        "--read-rate",
        "--settle",
        "--reject-orders",
        "--order-delay",
        "--drop-private",
        "--accept-then-5xx",
    ):
        assert option in text, option
