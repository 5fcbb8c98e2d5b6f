from __future__ import annotations

import pytest
from websockets.exceptions import InvalidStatus

from apps.kalshi.signing import (
    HEADER_KEY,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    WS_PATH,
    Credentials,
)
from tests import keys
from tests.exchange.helpers import now_ms, open_ws, recv, send
from tests.support import TEST_KEY_ID, StartSim


async def _rejected(sim, credentials, headers) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as info:
        await open_ws(sim, credentials, headers=headers)
    response = info.value.response
    return response.status_code, bytes(response.body).decode()


async def test_good_signature_is_accepted(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    ws = await open_ws(sim, credentials)
    await send(ws, {"id": 1, "cmd": "list_subscriptions"})
    assert await recv(ws) == {"id": 1, "type": "ok", "msg": []}
    assert sim.stats["connections"] == 1
    await ws.close()


async def test_query_string_is_not_part_of_the_signature(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    ws = await open_ws(sim, credentials, url=sim.ws_url + "?client=test")
    await send(ws, {"id": 2, "cmd": "list_subscriptions"})
    assert (await recv(ws))["id"] == 2
    await ws.close()


@pytest.mark.parametrize("missing", [HEADER_KEY, HEADER_TIMESTAMP, HEADER_SIGNATURE])
async def test_missing_header_is_401(start_sim: StartSim, credentials: Credentials, missing: str) -> None:
    sim = await start_sim()
    headers = credentials.headers("GET", WS_PATH, now_ms())
    del headers[missing]
    status, body = await _rejected(sim, credentials, headers)
    assert status == 401
    assert missing in body


async def test_no_headers_at_all_is_401(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    status, _ = await _rejected(sim, credentials, {})
    assert status == 401


async def test_signature_from_another_key_is_401(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    other = keys.credentials("stranger", TEST_KEY_ID)
    status, body = await _rejected(sim, credentials, other.headers("GET", WS_PATH, now_ms()))
    assert (status, body.strip()) == (401, "invalid signature")


async def test_signature_over_another_path_is_401(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    status, _ = await _rejected(sim, credentials, credentials.headers("GET", "/trade-api/v2/markets", now_ms()))
    assert status == 401


async def test_garbage_signature_is_401(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    headers = credentials.headers("GET", WS_PATH, now_ms())
    headers[HEADER_SIGNATURE] = "not base64 !!"
    status, _ = await _rejected(sim, credentials, headers)
    assert status == 401


@pytest.mark.parametrize("skew_ms", [-61_000, 61_000])
async def test_timestamp_more_than_60s_off_is_401(start_sim: StartSim, credentials: Credentials, skew_ms: int) -> None:
    sim = await start_sim()
    status, body = await _rejected(sim, credentials, credentials.headers("GET", WS_PATH, now_ms() + skew_ms))
    assert status == 401
    assert "TIMESTAMP" in body


async def test_non_numeric_timestamp_is_401(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    headers = credentials.headers("GET", WS_PATH, now_ms())
    headers[HEADER_TIMESTAMP] = "yesterday"
    status, _ = await _rejected(sim, credentials, headers)
    assert status == 401


async def test_key_id_must_match_when_configured(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(key_id=TEST_KEY_ID)
    ws = await open_ws(sim, credentials)
    await ws.close()
    wrong = Credentials("someone-else", credentials.private_key)
    status, body = await _rejected(sim, credentials, wrong.headers("GET", WS_PATH, now_ms()))
    assert (status, body.strip()) == (401, "unknown API key")


async def test_rejections_do_not_break_the_server(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    for _ in range(3):
        await _rejected(sim, credentials, {})
    assert sim.stats["handshakes_rejected"] == 3
    ws = await open_ws(sim, credentials)
    await send(ws, {"id": 9, "cmd": "list_subscriptions"})
    assert (await recv(ws))["type"] == "ok"
    await ws.close()
