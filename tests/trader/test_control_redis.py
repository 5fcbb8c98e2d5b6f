"""Market control over a Redis channel layer that goes away and comes back: the trader keeps listening."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channels_redis.core import RedisChannelLayer

from apps.exchange.keys import ensure_key_pair
from apps.kalshi.signing import Credentials, load_private_key
from apps.trader.core.states import State
from apps.trader.runtime import TraderRuntime
from tests.support import ConsoleSocket, eventually, eventually_blocking, sim_trader_config
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
        eventually_blocking(self.answers, seconds=10, what="redis-server to listen")

    def answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

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
    communicator = ConsoleSocket(application, "/v3/ws", headers=[(b"origin", b"http://127.0.0.1:8006")])
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


def test_the_layers_sockets_outlast_channels_redis_blocking_read() -> None:
    """redis-py's default 5 s socket timeout equals channels-redis's 5 s BZPOPMIN: every idle receive() failed."""
    [host] = redis_channel_layer("redis://127.0.0.1:6379/0", prefix="p", capacity=1, expiry=1)["CONFIG"]["hosts"]
    assert host["socket_timeout"] > RedisChannelLayer.brpop_timeout


async def test_the_control_listener_survives_idle_time_and_a_redis_restart(
    private_redis: PrivateRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Idle reads end every brpop_timeout; shortened so the listener sits through several of them in a second.
    # (That the sockets outlast the real 5 s read is checked above.)
    idle_reads_done = 0
    blocking_read = RedisChannelLayer._brpop_with_clean

    async def counted_read(self: RedisChannelLayer, *args: Any, **kwargs: Any) -> Any:
        nonlocal idle_reads_done
        result = await blocking_read(self, *args, **kwargs)
        idle_reads_done += result is None
        return result

    monkeypatch.setattr(RedisChannelLayer, "brpop_timeout", 0.3)
    monkeypatch.setattr(RedisChannelLayer, "_brpop_with_clean", counted_read)
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
        # Several blocking reads that found nothing: an idle listener used to die right here.
        idle_reads_before = idle_reads_done
        await eventually(lambda: idle_reads_done >= idle_reads_before + 3, what="three idle blocking reads")
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
