"""Cancelling an order and pulling the kill switch from the console's socket, against stand-in traders.

A stand-in trader is a live session row whose control address is a channel this test reads: what the console
sends it is checked as it arrives, and the test answers as a trader would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.test import Client, override_settings

from apps.kalshi.environments import Environment
from apps.trader import control
from apps.trader.services import session_heartbeat, session_start
from tests.console.test_access import ORIGIN
from tests.support import ConsoleSocket
from trader_v3.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

ORDER = {
    "kind": "order",
    "client_order_id": "quoter-7",
    "order_id": "ord-42",
    "ticker": "KXFED-26DEC-T4.25",
    "status": "canceled",
    "reason": "from the console",
}


class StandIn:
    """A live trader on the channel layer that records the requests it receives."""

    def __init__(self, session_id: int, address: str) -> None:
        self.session_id = session_id
        self.address = address

    async def request(self) -> dict[str, Any]:
        async with asyncio.timeout(10):
            message: dict[str, Any] = await get_channel_layer().receive(self.address)
        return message

    async def answer(self, request: dict[str, Any], **data: Any) -> None:
        await get_channel_layer().send(
            request["reply_channel"],
            {
                "type": control.RESULT_MESSAGE,
                "request_id": request["request_id"],
                "data": {"action": request["action"], **data, "session_id": self.session_id},
            },
        )

    async def nothing_received(self) -> bool:
        """Whether no request waits on this trader's channel (the layer's receive would block)."""
        try:
            async with asyncio.timeout(0.2):
                await get_channel_layer().receive(self.address)
        except TimeoutError:
            return True
        return False


async def a_trader(*, trading: bool | None = True) -> StandIn:
    """A live session (fresh heartbeat) whose status says it trades (True), does not (False), or says nothing."""
    address = await get_channel_layer().new_channel()

    def write() -> int:
        row = session_start(
            environment="sim", markets=["KXFED-26DEC-T4.25"], exchange_url="ws://127.0.0.1:1/x", control_address=address
        )
        status: dict[str, Any] = {"state": "trading_ready"}
        if trading is not None:
            status["trading"] = {"enabled": trading}
        session_heartbeat(
            session_id=row.pk, state="trading_ready", state_entered_at=datetime.now(UTC), status=status, counters={}
        )
        return row.pk

    return StandIn(await sync_to_async(write)(), address)


async def console(client: Client | None = None) -> ConsoleSocket:
    headers = list(ORIGIN)
    if client is not None:
        cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in client.cookies.items())
        headers.append((b"cookie", cookie.encode()))
    communicator = ConsoleSocket(application, "/v3/ws", headers=headers)
    assert (await communicator.connect())[0]
    assert (await communicator.receive_json_from())["type"] == "history_replay"
    return communicator


async def reply(communicator: ConsoleSocket, kind: str) -> dict[str, Any]:
    """The data of the next reply of type ``kind`` (the stream of a stand-in trader is empty)."""
    message = await communicator.receive_json_from()
    assert message["type"] == kind, message
    data: dict[str, Any] = message["data"]
    return data


@pytest.fixture
def paper() -> Iterator[None]:
    with override_settings(ENVIRONMENT=Environment.PAPER):
        yield


async def test_a_cancel_goes_to_the_only_trading_trader_and_its_answer_comes_back() -> None:
    trader = await a_trader()
    communicator = await console()
    try:
        await communicator.send_json_to({"type": "cancel_order", "order_id": "ord-42"})
        request = await trader.request()
        assert {k: request[k] for k in ("type", "action", "order_id", "reason")} == {
            "type": "trader.control",
            "action": "cancel_order",
            "order_id": "ord-42",
            "reason": "from the console",
        }
        sent = await reply(communicator, "control_sent")
        assert sent == {
            "action": "cancel_order",
            "order_id": "ord-42",
            "session_id": trader.session_id,
            "request_id": request["request_id"],
        }
        await trader.answer(request, order_id="ord-42", order=ORDER)
        result = await reply(communicator, "control_result")
        assert result == {
            "action": "cancel_order",
            "order_id": "ord-42",
            "order": ORDER,
            "session_id": trader.session_id,
            "request_id": sent["request_id"],
        }
    finally:
        await communicator.disconnect()


async def test_a_kill_switch_reaches_every_trader_that_may_trade_and_no_other() -> None:
    first, second = await a_trader(), await a_trader(trading=None)  # the second has not said yet
    watcher = await a_trader(trading=False)
    communicator = await console()
    try:
        await communicator.send_json_to({"type": "kill_switch"})
        requests = [await first.request(), await second.request()]
        assert [r["action"] for r in requests] == ["kill_switch", "kill_switch"]
        assert await watcher.nothing_received()
        sent = [await reply(communicator, "control_sent"), await reply(communicator, "control_sent")]
        assert [s["session_id"] for s in sent] == [first.session_id, second.session_id]
        await first.answer(requests[0], cancelled=3)
        await second.answer(requests[1], error="this trader does not trade")
        results = [await reply(communicator, "control_result"), await reply(communicator, "control_result")]
        assert results[0]["cancelled"] == 3
        assert results[1]["error"] == "this trader does not trade"
    finally:
        await communicator.disconnect()


async def test_a_request_may_name_its_trader() -> None:
    first, second = await a_trader(), await a_trader()
    communicator = await console()
    try:
        await communicator.send_json_to({"type": "kill_switch", "session": second.session_id})
        assert (await second.request())["action"] == "kill_switch"
        assert await first.nothing_received()
        await communicator.send_json_to({"type": "cancel_order", "order_id": "quoter-7", "session": first.session_id})
        assert (await first.request())["order_id"] == "quoter-7"
    finally:
        await communicator.disconnect()


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"type": "cancel_order"}, "'order_id' must be an order id"),
        ({"type": "cancel_order", "order_id": ""}, "'order_id' must be an order id"),
        ({"type": "cancel_order", "order_id": "x" * 101}, "'order_id' must be an order id"),
        ({"type": "cancel_order", "order_id": "ord 42\n"}, "'order_id' must be an order id"),
        ({"type": "cancel_order", "order_id": 42}, "'order_id' must be an order id"),
        ({"type": "kill_switch", "session": "12"}, "'session' must be a session id (an integer)"),
        ({"type": "kill_switch", "session": True}, "'session' must be a session id (an integer)"),
        ({"type": "kill_switch", "session": 999}, "session 999 is not a live trader"),
    ],
)
async def test_a_bad_request_is_answered_with_the_reason_and_nothing_is_sent(
    request_: dict[str, Any], error: str
) -> None:
    trader = await a_trader()
    communicator = await console()
    try:
        await communicator.send_json_to(request_)
        data = await reply(communicator, "error")
        assert data["message"].startswith(error)
        assert data["action"] == request_["type"]
        assert await trader.nothing_received()
    finally:
        await communicator.disconnect()


async def test_with_several_traders_a_cancel_must_name_its_session() -> None:
    first, second = await a_trader(), await a_trader()
    communicator = await console()
    try:
        await communicator.send_json_to({"type": "cancel_order", "order_id": "ord-42"})
        data = await reply(communicator, "error")
        assert data["message"] == (
            f"several traders trade (sessions {first.session_id}, {second.session_id}); name the order's session"
        )
        assert await first.nothing_received() and await second.nothing_received()
    finally:
        await communicator.disconnect()


async def test_a_trader_that_does_not_trade_is_not_asked() -> None:
    watcher = await a_trader(trading=False)
    communicator = await console()
    try:
        await communicator.send_json_to({"type": "kill_switch"})
        assert (await reply(communicator, "error"))["message"] == "no live trader trades"
        await communicator.send_json_to({"type": "cancel_order", "order_id": "o-1", "session": watcher.session_id})
        assert (await reply(communicator, "error"))["message"] == f"session {watcher.session_id} does not trade"
        assert await watcher.nothing_received()
    finally:
        await communicator.disconnect()


async def test_a_trader_that_does_not_answer_a_kill_switch_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "TRADING_REPLY_TIMEOUT", 0.3)
    trader = await a_trader()
    communicator = await console()
    try:
        await communicator.send_json_to({"type": "kill_switch"})
        sent = await reply(communicator, "control_sent")
        assert await reply(communicator, "error") == {
            "message": f"no trader answered: kill_switch sent to session {trader.session_id} got no reply within 0.3 s",
            "request_id": sent["request_id"],
            "action": "kill_switch",
        }
    finally:
        await communicator.disconnect()


def staff_browser(username: str) -> tuple[Client, User]:
    client = Client()
    user = User.objects.create_user(username, password="a long passphrase 7", is_staff=True)
    client.force_login(user)
    return client, user


async def test_outside_sim_staff_pull_the_kill_switch_under_their_name(paper: None) -> None:
    trader = await a_trader()
    client, _ = await sync_to_async(staff_browser)("owner")
    communicator = await console(client)
    try:
        await communicator.send_json_to({"type": "kill_switch"})
        assert (await trader.request())["reason"] == "from the console by owner"
    finally:
        await communicator.disconnect()


async def test_outside_sim_a_user_no_longer_staff_is_refused_and_nothing_is_sent(paper: None) -> None:
    trader = await a_trader()
    client, user = await sync_to_async(staff_browser)("owner")
    communicator = await console(client)
    try:
        # Staff rights withdrawn while the console is open: the next request is refused.
        await User.objects.filter(pk=user.pk).aupdate(is_staff=False)
        for request in ({"type": "kill_switch"}, {"type": "cancel_order", "order_id": "ord-42"}):
            data = await reply_to(communicator, request)
            assert data == {"message": f"{request['type']} needs a staff login outside sim", "action": request["type"]}
        assert await trader.nothing_received()
    finally:
        await communicator.disconnect()


async def test_in_sim_a_visitor_may_pull_the_kill_switch() -> None:
    trader = await a_trader()
    communicator = await console(Client())
    try:
        await communicator.send_json_to({"type": "kill_switch"})
        assert (await trader.request())["action"] == "kill_switch"
    finally:
        await communicator.disconnect()


async def reply_to(communicator: ConsoleSocket, request: dict[str, Any]) -> dict[str, Any]:
    await communicator.send_json_to(request)
    return await reply(communicator, "error")
