"""Who may watch the console: anyone in sim; outside sim only a logged-in staff user. Health stays open."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client, override_settings

from apps.console.presence import console_counts
from apps.kalshi.environments import Environment
from tests.console.test_probes import a_trader
from tests.support import ConsoleSocket
from trader_v3.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = [(b"origin", b"http://127.0.0.1:8006"), (b"host", b"127.0.0.1:8006")]


@pytest.fixture
def paper() -> Iterator[None]:
    with override_settings(ENVIRONMENT=Environment.PAPER):
        yield


def browser(username: str | None, *, staff: bool = False) -> Client:
    """A browser: logged in as a new user named ``username``, or an anonymous visitor when None."""
    client = Client()
    if username is not None:
        client.force_login(User.objects.create_user(username, password="a long passphrase 7", is_staff=staff))
    return client


@pytest.fixture
def owner() -> Client:
    return browser("owner", staff=True)


@pytest.fixture
def member() -> Client:
    return browser("member")


@pytest.fixture
def visitor() -> Client:
    return browser(None)


def test_in_sim_a_visitor_sees_the_console_and_the_status(visitor: Client) -> None:
    a_trader()
    assert visitor.get("/v3-trader").status_code == 200
    assert visitor.get("/v3/status").json()["state"] == "ready"


def test_outside_sim_a_visitor_is_sent_to_the_login(paper: None, visitor: Client) -> None:
    response = visitor.get("/v3-trader")
    assert response.status_code == 302
    assert response["Location"] == "/v3/login?next=/v3-trader"
    login = visitor.get(response["Location"])
    assert login.status_code == 200
    assert 'name="password"' in login.content.decode()
    assert "console/console.css" in login.content.decode()


def test_outside_sim_a_visitor_gets_401_from_status(paper: None, visitor: Client) -> None:
    a_trader()
    response = visitor.get("/v3/status")
    assert response.status_code == 401
    assert response.json() == {"error": "login required", "login": "/v3/login"}


def test_outside_sim_a_member_who_is_not_staff_is_kept_out(paper: None, member: Client) -> None:
    a_trader()
    assert member.get("/v3-trader")["Location"] == "/v3/login?next=/v3-trader"
    assert "which is not a staff account" in member.get("/v3/login").content.decode()
    response = member.get("/v3/status")
    assert response.status_code == 403
    assert response.json() == {"error": "this needs a staff account"}


def test_outside_sim_the_owner_sees_the_console_and_the_status(paper: None, owner: Client) -> None:
    session = a_trader()
    page = owner.get("/v3-trader")
    assert page.status_code == 200
    assert 'action="/v3/logout"' in page.content.decode()
    assert owner.get("/v3/status").json()["session"]["id"] == session.pk


def test_metrics_follow_the_status_rule_outside_sim(
    paper: None, visitor: Client, member: Client, owner: Client
) -> None:
    session = a_trader()
    assert visitor.get("/metrics").status_code == 401
    assert member.get("/metrics").status_code == 403
    response = owner.get("/metrics")
    assert response.status_code == 200
    assert f'trader_state{{environment="sim",shard="{session.pk}",state="ready"}} 1.0' in response.content.decode()


def test_in_sim_a_visitor_gets_the_metrics(visitor: Client) -> None:
    session = a_trader()
    text = visitor.get("/metrics").content.decode()
    assert f'trader_feed_deltas_total{{environment="sim",shard="{session.pk}"}} 5.0' in text


def test_the_owner_logs_in_with_a_password_and_lands_on_the_console(paper: None) -> None:
    User.objects.create_user("owner", password="a long passphrase 7", is_staff=True)
    client = Client(enforce_csrf_checks=True)
    form = client.get("/v3/login?next=/v3-trader")
    token = form.cookies["csrftoken"].value
    wrong = client.post(
        "/v3/login", {"username": "owner", "password": "nope", "next": "/v3-trader", "csrfmiddlewaretoken": token}
    )
    assert wrong.status_code == 200
    assert "Wrong user name or password" in wrong.content.decode()
    response = client.post(
        "/v3/login",
        {"username": "owner", "password": "a long passphrase 7", "next": "/v3-trader", "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302
    assert response["Location"] == "/v3-trader"
    assert client.get("/v3-trader").status_code == 200
    client.post("/v3/logout", {"csrfmiddlewaretoken": client.cookies["csrftoken"].value})
    assert client.get("/v3-trader").status_code == 302


def test_health_stays_open_and_tells_only_the_verdict_and_its_reason(paper: None, visitor: Client) -> None:
    a_trader()
    response = visitor.get("/v3/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "reason": "ready; 2 markets live"}


async def socket_for(client: Client) -> WebsocketCommunicator:
    cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in client.cookies.items())
    headers = ORIGIN + ([(b"cookie", cookie.encode())] if cookie else [])
    return ConsoleSocket(application, "/v3/ws", headers=headers)


async def test_outside_sim_the_socket_is_refused_to_a_visitor_and_a_member(paper: None) -> None:
    before = console_counts().connected
    for persona in ("visitor", "member"):
        client = await sync_to_async(browser)(None if persona == "visitor" else persona)
        communicator = await socket_for(client)
        connected, _ = await communicator.connect()
        assert not connected, persona
        assert console_counts().connected == before  # a refused socket is no console
        await communicator.disconnect()  # as the server does once the close is sent
    assert console_counts().connected == before


async def test_outside_sim_the_owner_gets_the_stream(paper: None) -> None:
    before = console_counts().connected
    communicator = await socket_for(await sync_to_async(browser)("owner", staff=True))
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_json_from())["type"] == "history_replay"
    assert console_counts().connected == before + 1  # the metrics count it while it is open
    await communicator.disconnect()
    assert console_counts().connected == before


async def test_in_sim_a_visitor_gets_the_stream() -> None:
    communicator = await socket_for(await sync_to_async(browser)(None))
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_json_from())["type"] == "history_replay"
    await communicator.disconnect()
