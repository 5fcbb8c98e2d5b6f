"""Market control over a Redis channel layer that goes away and comes back: the trader keeps listening."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from apps.exchange.keys import ensure_key_pair
from apps.kalshi.signing import Credentials, load_private_key
from apps.trader.core.states import State
from apps.trader.runtime import TraderRuntime
from tests.support import eventually, sim_trader_config
from tests.trader.conftest import EventLog
from trader_v3.asgi import application
from trader_v3.layers import redis_channel_layer

pytestmark = pytest.mark.django_db(transaction=True)

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class PrivateRedis:
    """A redis-server of this test's own on a free loopback port, without persistence."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_redis(tmp_path: Path, settings: Any) -> Iterator[PrivateRedis]:
    if not Path(REDIS_SERVER).exists():
        pytest.skip("needs redis-server")
    redis = PrivateRedis(tmp_path)
    redis.start()
    # The project's own Redis layer configuration, pointed at this server (channels resets its layers).
    settings.CHANNEL_LAYERS = {
        "default": redis_channel_layer(redis.url, prefix="control_test", capacity=500, expiry=10)
    }
    try:
        yield redis
    finally:
        redis.stop()


async def add_market(ticker: str) -> dict[str, Any]:
    """Ask from a fresh console; the trader's answer."""
    communicator = WebsocketCommunicator(application, "/v3/ws", headers=[(b"origin", b"http://127.0.0.1:8006")])
    try:
        assert (await communicator.connect())[0]
        await communicator.send_json_to({"type": "add_markets", "markets": [ticker]})
        async with asyncio.timeout(15):
            while (message := await communicator.receive_json_from(timeout=15))["type"] not in (
                "control_result",
                "error",
            ):
                pass
        reply: dict[str, Any] = message
        return reply
    finally:
        await communicator.disconnect()


async def test_the_control_listener_survives_idle_time_and_a_redis_restart(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    private, public = ensure_key_pair(tmp_path)
    config = sim_trader_config(
        Credentials(key_id="sim-local-key", private_key=load_private_key(private.read_bytes())),
        public.read_bytes(),
        markets=["KXFED-26DEC-T4.25"],
    )
    runtime = TraderRuntime(config)
    log = EventLog()
    runtime.bus.subscribe("log", log)
    run = asyncio.create_task(runtime.run(handle_signals=False))

    def lines() -> list[str]:
        return [line["message"] for line in log.of("console")]

    try:
        await eventually(lambda: runtime.coordinator is not None and runtime.coordinator.machine.state is State.READY)
        # Longer than redis-py's default 5 s socket timeout: an idle listener used to die right here.
        await asyncio.sleep(6)
        reply = await add_market("KXCPI-26DEC-T0.3")
        assert reply["type"] == "control_result" and reply["data"]["added"] == ["KXCPI-26DEC-T0.3"], reply

        private_redis.stop()
        await eventually(lambda: any(m.startswith("CONTROL: channel layer unreachable") for m in lines()), 30)
        private_redis.start()
        await eventually(lambda: "CONTROL: channel layer reachable again; listening for requests" in lines(), 30)

        reply = await add_market("KXNBA-26-LAL")
        assert reply["type"] == "control_result" and reply["data"]["added"] == ["KXNBA-26-LAL"], reply
        assert runtime.coordinator is not None
        assert runtime.coordinator.options.markets == ["KXFED-26DEC-T4.25", "KXCPI-26DEC-T0.3", "KXNBA-26-LAL"]
        assert runtime.coordinator.supervisor.failures == {}  # the listener rode it out, nothing crashed
        assert runtime.coordinator.machine.state is State.READY
    finally:
        runtime.request_shutdown("done")
        await run
