"""A console socket survives what a hostile or broken client sends, and cuts off one that keeps at it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from apps.console import limits
from tests.support import ConsoleSocket
from trader_v3.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

DEEP = "[" * 2048 + "]" * 2048


async def connect() -> WebsocketCommunicator:
    communicator = ConsoleSocket(
        application, "/v3/ws", headers=[(b"origin", b"http://127.0.0.1:8006"), (b"host", b"127.0.0.1:8006")]
    )
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_json_from())["type"] == "history_replay"
    return communicator


async def everything_until_closed(communicator: WebsocketCommunicator) -> list[dict[str, Any]]:
    """Every ASGI message the consumer sent, up to and including its close."""
    sent = []
    while True:
        message = await communicator.receive_output(timeout=10)
        sent.append(message)
        if message["type"] == "websocket.close":
            return sent


async def test_json_nested_too_deeply_gets_an_error_and_the_socket_stays_up() -> None:
    communicator = await connect()
    await communicator.send_to(text_data=DEEP)
    reply = await communicator.receive_json_from()
    assert reply == {"type": "error", "data": {"message": "message is nested too deeply"}}
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from() == {"type": "pong", "data": {}}
    await communicator.disconnect()


async def test_history_requests_beyond_the_burst_are_refused_with_the_wait() -> None:
    communicator = await connect()
    for _ in range(limits.HISTORY_BURST + 2):
        await communicator.send_json_to({"type": "request_history"})
    replies = [await communicator.receive_json_from() for _ in range(limits.HISTORY_BURST + 2)]
    assert [r["type"] for r in replies] == ["history_replay"] * limits.HISTORY_BURST + ["error"] * 2
    assert replies[-1]["data"]["message"].startswith("too many history requests; try again in ")
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from() == {"type": "pong", "data": {}}
    await communicator.disconnect()


async def test_a_client_that_keeps_sending_refused_messages_is_closed_with_policy_violation() -> None:
    communicator = await connect()
    for _ in range(limits.REFUSAL_BURST + 5):
        await communicator.send_to(text_data="{not json")
    sent = await everything_until_closed(communicator)
    assert (sent[-1]["type"], sent[-1]["code"]) == ("websocket.close", limits.CLOSE_ABUSE)
    errors = [json.loads(m["text"])["data"]["message"] for m in sent[:-1]]
    assert errors[-1] == "too many refused messages; closing"
    assert set(errors[:-1]) == {"message is not valid JSON"}
    await communicator.disconnect()


async def test_5000_abusive_messages_without_reading_cut_the_client_off_with_bounded_output() -> None:
    """What the consumer hands to the server for this client stays small, however much it is sent."""
    abuse = ['{"type": "request_history"}', DEEP, "x" * 100_000, "\x00garbage", '{"type": 1}']
    communicator = await connect()
    for n in range(5000):
        await communicator.send_to(text_data=abuse[n % len(abuse)])
    sent = await everything_until_closed(communicator)
    assert sent[-1]["code"] == limits.CLOSE_ABUSE
    replies = [json.loads(m["text"]) for m in sent[:-1]]
    # At most the burst allowances (plus what refills while the test runs): never one reply per message.
    assert len(replies) <= limits.HISTORY_BURST + limits.REFUSAL_BURST + 5
    assert sum(len(m["text"]) for m in sent[:-1]) < 64 * 1024
    # Nothing more comes out for the rest of the abuse, and the consumer is still alive to leave cleanly.
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()
