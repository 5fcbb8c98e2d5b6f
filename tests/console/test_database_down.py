"""With the database down, the status, the console page and the console's history say so instead of failing."""

from __future__ import annotations

import pytest
from django.db import OperationalError
from django.test import Client

from apps.console import consumers, views
from tests.support import ConsoleSocket
from trader_v3.asgi import application

pytestmark = pytest.mark.django_db


@pytest.fixture
def database_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> object:
        raise OperationalError("connection refused")

    monkeypatch.setattr(views, "status_current", refuse)
    monkeypatch.setattr(views, "shards_current", refuse)
    monkeypatch.setattr(consumers, "console_history", refuse)


@pytest.mark.usefixtures("database_down")
def test_status_is_a_503_that_says_the_database_is_unreachable(client: Client) -> None:
    response = client.get("/v3/status")
    assert response.status_code == 503
    assert response.json()["error"].startswith("database unreachable")
    assert response.json()["reason"] == "OperationalError"


@pytest.mark.usefixtures("database_down")
def test_the_console_page_is_a_503_page_not_a_traceback(client: Client) -> None:
    response = client.get("/v3-trader")
    assert response.status_code == 503
    assert response.content.decode().startswith("503 database unreachable")
    assert response["Retry-After"] == "5"


@pytest.mark.usefixtures("database_down")
async def test_a_console_socket_stays_open_and_is_told_why_history_is_missing() -> None:
    communicator = ConsoleSocket(application, "/v3/ws", headers=[(b"origin", b"http://127.0.0.1:8006")])
    connected, _ = await communicator.connect()
    assert connected
    message = await communicator.receive_json_from()
    assert message == {
        "type": "error",
        "data": {"message": "history unavailable: database unreachable (OperationalError)"},
    }
    await communicator.send_json_to({"type": "ping"})
    assert (await communicator.receive_json_from())["type"] == "pong"
    await communicator.disconnect()
