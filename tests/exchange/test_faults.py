from __future__ import annotations

import asyncio
import json
import socket

import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from apps.exchange.config import DEFAULT_MARKETS
from apps.exchange.faults import Faults
from apps.kalshi.messages import MalformedMessage, parse_message
from apps.kalshi.signing import Credentials
from tests.exchange.helpers import (
    drain,
    http_get,
    open_ws,
    recv,
    recv_n,
    recv_until,
    send,
    subscribe,
)
from tests.support import StartSim, eventually

FED, CPI = DEFAULT_MARKETS[:2]


async def _read_until_closed(ws, within: float = 5.0) -> ConnectionClosed:
    try:
        async with asyncio.timeout(within):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc
    raise AssertionError("unreachable")


async def test_drop_every_aborts_connections_at_runtime(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(message_rate=500.0)
    ws = await open_ws(sim, credentials)
    await subscribe(ws, [FED])
    sim.faults.drop_every = 0.1
    closed = await _read_until_closed(ws)
    assert isinstance(closed, ConnectionClosedError)
    assert closed.rcvd is None
    assert sim.stats["faults"]["drop"] >= 1
    sim.faults.drop_every = None
    await eventually(lambda: sim.stats["connections"] == 0, what="no connections")
    ws = await open_ws(sim, credentials)
    await subscribe(ws, [FED])
    await recv_n(ws, 5)
    await ws.close()


async def test_drop_connections_now(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    first, second = await open_ws(sim, credentials), await open_ws(sim, credentials)
    await eventually(lambda: sim.stats["connections"] == 2, what="two connections")
    assert sim.drop_connections() == 2
    for ws in (first, second):
        assert isinstance(await _read_until_closed(ws), ConnectionClosedError)


async def test_skip_seq_every_consumes_seqs_without_sending(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(message_rate=4000.0, faults=Faults(skip_seq_every=7))
    ws = await open_ws(sim, credentials)
    (sid,), frames = await subscribe(ws, [FED, CPI])
    frames += await recv_n(ws, 200)
    seqs = [f["seq"] for f in frames if f.get("sid") == sid]
    missing = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
    # Snapshots are seq 1-2; the k-th delta is seq k+2 and every 7th delta is skipped.
    assert missing == [k + 2 for k in range(7, seqs[-1] - 1, 7)]
    assert seqs == sorted(seqs)
    assert sim.stats["faults"]["skip_seq"] >= len(missing)
    await ws.close()


async def test_stall_stops_data_but_not_pings(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(message_rate=2000.0, ping_interval=0.05)
    ws = await open_ws(sim, credentials)
    await subscribe(ws, [FED])
    before = await recv_n(ws, 20)
    sim.faults.stall = True
    in_flight = await drain(ws, 0.15)
    pings = len(ws.pings)
    assert await drain(ws, 0.3) == []
    assert len(ws.pings) > pings
    sim.faults.stall = False
    after = await recv_n(ws, 20)
    seqs = [f["seq"] for f in before + in_flight + after]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # a stall is silence, not a gap
    assert sim.stats["faults"]["stall"] == 1
    # A timed stall ends by itself (long enough that a busy machine still reads the silence inside it).
    sim.stall_data(1.0)
    await drain(ws, 0.1)
    assert await drain(ws, 0.05) == []
    await recv_n(ws, 5, within=3.0)
    assert sim.stats["faults"]["stall"] == 2
    await ws.close()


async def test_periodic_stalls(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(message_rate=1000.0, faults=Faults(stall_every=0.1, stall_for=0.05))
    await eventually(lambda: sim.stats["faults"]["stall"] >= 2, seconds=3.0, what="two stalls")


async def test_heartbeat_pings_and_no_ping(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(ping_interval=0.05)
    ws = await open_ws(sim, credentials)
    await eventually(lambda: len(ws.pings) >= 3, what="three pings")
    assert set(ws.pings) == {b"heartbeat"}
    # The client's own pings are answered.
    pong = await ws.ping(b"")
    await asyncio.wait_for(pong, 2)
    sim.faults = Faults(no_ping=True)  # replacing the whole object works too
    skipped = sim.stats["faults"]["no_ping"]
    await eventually(lambda: sim.stats["faults"]["no_ping"] > skipped, what="a skipped ping")
    count = len(ws.pings)
    await eventually(lambda: sim.stats["faults"]["no_ping"] >= skipped + 4, what="three more skipped pings")
    assert len(ws.pings) == count
    sim.faults.no_ping = False
    await eventually(lambda: len(ws.pings) > count, what="pings again")
    await ws.close()


@pytest.mark.parametrize("code", [10, 25])
async def test_error_every_ends_the_subscription(start_sim: StartSim, credentials: Credentials, code: int) -> None:
    sim = await start_sim(message_rate=2000.0, faults=Faults(error_every=5, error_code=code))
    ws = await open_ws(sim, credentials)
    (sid,), _ = await subscribe(ws, [FED])
    frames = await recv_until(ws, lambda f: f["type"] == "error")
    assert [f["seq"] for f in frames[:-1]] == [2, 3, 4, 5, 6]
    assert frames[-1] == {"type": "error", "sid": sid, "msg": {"code": code, "msg": frames[-1]["msg"]["msg"]}}
    assert parse_message(json.dumps(frames[-1])).terminal  # type: ignore[union-attr]
    assert [f for f in await drain(ws, 0.1) if f.get("sid") == sid] == []
    await send(ws, {"id": 2, "cmd": "list_subscriptions"})
    assert (await recv(ws))["msg"] == []
    # The client resubscribes and gets a fresh sid starting at seq 1.
    sim.faults.error_every = None
    (new_sid,), frames = await subscribe(ws, [FED], command_id=3)
    assert new_sid != sid
    assert frames[-1]["seq"] == 1
    await ws.close()


async def test_fail_subscriptions_now(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    ws = await open_ws(sim, credentials)
    (sid,), _ = await subscribe(ws, [FED])
    await subscribe(ws, [CPI], command_id=2, channels=("ticker",))
    assert sim.fail_subscriptions(25) == 1  # every orderbook subscription, not the ticker one
    assert await recv(ws) == {
        "type": "error",
        "sid": sid,
        "msg": {"code": 25, "msg": "Subscription buffer overflow"},
    }
    await ws.close()


async def test_reject_handshake_switch(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(faults=Faults(reject_handshake=True))
    with pytest.raises(InvalidStatus) as info:
        await open_ws(sim, credentials)
    assert info.value.response.status_code == 401
    sim.faults.reject_handshake = False
    ws = await open_ws(sim, credentials)
    await ws.close()
    assert sim.stats["faults"]["reject_handshake"] == 1


async def test_malformed_frames(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(message_rate=3000.0, faults=Faults(malformed_every=4))
    ws = await open_ws(sim, credentials)
    await send(ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_ticker": FED}})
    problems: list[str] = []
    seqs: list[int] = []
    for _ in range(100):
        raw = await ws.recv()
        try:
            message = parse_message(raw)
        except MalformedMessage as exc:
            problems.append(str(exc))
        else:
            seq = getattr(message, "seq", None)
            if seq is not None:
                seqs.append(seq)
    assert len(problems) == 20
    assert any(p.startswith("not JSON") for p in problems)
    assert any("JSON object" in p for p in problems)
    assert any(p.startswith("orderbook_delta:") for p in problems)
    assert seqs == list(range(1, len(seqs) + 1))  # malformed frames use no seq
    assert sim.stats["faults"]["malformed"] >= 20
    await ws.close()


async def test_oversized_frames_exceed_a_default_client_limit(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(message_rate=1000.0, faults=Faults(oversized_every=3))
    ws = await open_ws(sim, credentials, max_size=2**20)
    await subscribe(ws, [FED])
    closed = await _read_until_closed(ws)
    assert closed.sent is not None
    assert closed.sent.code == 1009
    # A client without a limit receives it whole.
    sim.faults.oversized_bytes = 5000
    ws = await open_ws(sim, credentials, max_size=None)
    await subscribe(ws, [FED])
    sizes = [len(await ws.recv()) for _ in range(12)]
    assert max(sizes) >= 5000
    assert sim.stats["faults"]["oversized"] >= 2
    await ws.close()


async def test_slow_reader_overflow_gets_error_25(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(message_rate=5000.0, outbound_limit=50, socket_send_buffer=4096)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (sim.config.host, sim.port))
    ws = await open_ws(sim, credentials, sock=sock, max_queue=1)
    await send(
        ws, {"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_tickers": [FED, CPI]}}
    )
    # Only the reply, which comes before any data: on a busy machine the overflow can end the subscription
    # before both snapshots have been read.
    sid = (await recv_until(ws, lambda f: f["type"] == "subscribed"))[-1]["msg"]["sid"]
    # Stop reading until the exchange gives up on this subscription.
    await eventually(lambda: sim.stats["faults"]["buffer_overflow"] >= 1, what="a buffer overflow")
    frames = await recv_until(ws, lambda f: f["type"] == "error")
    assert frames[-1] == {
        "type": "error",
        "sid": sid,
        "msg": {"code": 25, "msg": "Subscription buffer overflow"},
    }
    assert [f for f in await drain(ws, 0.1) if f.get("sid") == sid] == []
    assert sim.stats["subscriptions"] == 0
    await ws.close()


async def test_rest_429_for_the_first_k_requests(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    sim.faults.rest_429 = 2
    path = "/trade-api/v2/exchange/status"
    results = [await http_get(sim, path, credentials) for _ in range(3)]
    assert [status for status, _, _ in results] == [429, 429, 200]
    assert all("retry-after" not in headers for _, headers, _ in results)
    assert json.loads(results[0][2]) == {"error": "too many requests"}
    assert sim.stats["faults"]["rest_429"] == 2
    assert sim.faults.rest_429 == 0
