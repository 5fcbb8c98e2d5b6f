"""Session history on the web: the list, one session's page from its recording, its export, and the links
between console, history and admin. Same access rules as the console."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.core.management import call_command
from django.http import StreamingHttpResponse
from django.test import Client, override_settings

from apps.console import history
from apps.kalshi.environments import Environment
from apps.marketdata.export import FIELDS
from apps.trader.models import TradingSession
from apps.trader.selectors import SESSIONS_PER_PAGE
from apps.trader.services import session_end, session_heartbeat
from tests.marketdata.conftest import at, new_session, recorded_session

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def visitor() -> Client:
    return Client()


@pytest.fixture
def paper() -> Iterator[None]:
    with override_settings(ENVIRONMENT=Environment.PAPER):
        yield


def with_metrics(session: TradingSession, markets_total: int) -> None:
    session_heartbeat(
        session_id=session.pk,
        state="ready",
        state_entered_at=at(0),
        status={"state": "ready", "metrics": {"markets_total": markets_total}},
        counters={"messages_received": 15, "deltas_received": 7, "gaps": 2},
        console=[],
        tops=[],
    )


def text(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def streamed(client: Client, url: str) -> tuple[str, str, str]:
    """The body of a download the server streams from an async iterator (as Daphne serves it)."""
    response = client.get(url)
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)

    async def collect() -> bytes:
        return b"".join([part async for part in response.streaming_content])

    return async_to_sync(collect)().decode(), response["Content-Type"], response["Content-Disposition"]


def charts_of(page: str) -> dict[str, Any]:
    found = re.search(r'<script id="session-charts" type="application/json">(.*?)</script>', page)
    assert found is not None
    charts: dict[str, Any] = json.loads(found[1])
    return charts


def rows(page: str) -> list[str]:
    return re.findall(r'<tr class="session-row" data-session="(\d+)"', page)


def test_the_list_shows_sessions_newest_first_with_counters_and_their_links(visitor: Client) -> None:
    older = recorded_session()
    newer = new_session(["KXC"])
    with_metrics(newer, markets_total=1)

    page = text(visitor, "/v3/sessions")

    assert rows(page) == [str(newer.pk), str(older.pk)]
    row = page[page.index(f'data-session="{newer.pk}"') :].split("</tr>")[0]
    assert ">sim<" in row and 'data-status="running"' in row
    counters = re.findall(r'<td class="num">(\d+)</td>', row)
    assert counters == ["1", "15", "7", "2", "0", "0"]  # markets, messages, deltas, gaps, resyncs, reconnects
    assert f'href="/v3/sessions/{newer.pk}"' in row
    assert f'href="/admin/trader/tradingsession/{newer.pk}/change/"' in row
    assert f'href="/v3/sessions/{newer.pk}/export.jsonl"' in row and f'href="/v3/sessions/{newer.pk}/export.csv"' in row
    assert 'href="/v3-trader"' in page and 'href="/admin/"' in page  # the way back


def test_the_list_pages_through_many_sessions(visitor: Client) -> None:
    made = [new_session(["KXA"]).pk for _ in range(SESSIONS_PER_PAGE + 3)]

    first, second = text(visitor, "/v3/sessions"), text(visitor, "/v3/sessions?page=2")

    assert rows(first) == [str(pk) for pk in reversed(made)][:50]
    assert rows(second) == [str(pk) for pk in reversed(made)][50:]
    assert "page 1 of 2" in first and 'href="?page=2"' in first
    assert rows(text(visitor, "/v3/sessions?page=99")) == rows(second)  # past the end: the last page
    assert rows(text(visitor, "/v3/sessions?page=x")) == rows(first)


def test_a_sessions_page_shows_its_transitions_markets_and_charts_from_the_recording(visitor: Client) -> None:
    session = recorded_session()

    page = text(visitor, f"/v3/sessions/{session.pk}?market=KXA")

    assert re.findall(r'<li><a href="\?market=(\w+)"', page) == ["KXA", "KXB"]
    charts = charts_of(page)
    assert charts["prices"]["market_ticker"] == "KXA"
    assert charts["prices"]["points"][0][1:] == ["0.4200", "0.4500"]
    assert isinstance(charts["rates"], list)
    assert f'href="/admin/trader/tradingsession/{session.pk}/change/"' in page
    assert f'href="/v3/sessions/{session.pk}/export.csv"' in page
    # Without a market the first recorded one is shown; a filter narrows the list.
    assert charts_of(text(visitor, f"/v3/sessions/{session.pk}"))["prices"]["market_ticker"] == "KXA"
    assert re.findall(r'<li><a href="\?market=(\w+)', text(visitor, f"/v3/sessions/{session.pk}?filter=xb")) == ["KXB"]
    assert visitor.get("/v3/sessions/999999").status_code == 404


def test_a_sessions_page_lists_its_transitions(visitor: Client) -> None:
    from apps.trader.core.statemachine import Transition
    from apps.trader.core.states import State
    from apps.trader.services import transition_record

    session = new_session(["KXA"])
    transition_record(
        session_id=session.pk,
        transition=Transition(State.STARTUP, State.INITIALIZING, "Initializing 1 market(s)", at(1), {}),
    )
    session_end(session_id=session.pk, failed=False, error="")

    page = text(visitor, f"/v3/sessions/{session.pk}")

    assert "Initializing 1 market(s)" in page and "2026-11-24 09:30:00" in page


def exported(session_id: int, fmt: str) -> str:
    out = io.StringIO()
    call_command("exportsession", str(session_id), "--format", fmt, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_download_is_what_exportsession_writes_streamed_in_parts(
    visitor: Client, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = recorded_session()
    monkeypatch.setattr(history, "EXPORT_PAGE", 4)  # several parts: the CSV header comes once

    body, content_type, disposition = streamed(visitor, f"/v3/sessions/{session.pk}/export.{fmt}")

    assert body == exported(session.pk, fmt)
    assert content_type.startswith("application/x-ndjson" if fmt == "jsonl" else "text/csv")
    assert disposition == f'attachment; filename="session-{session.pk}.{fmt}"'


def test_an_empty_recording_exports_a_csv_header_and_an_empty_jsonl(visitor: Client) -> None:
    session = new_session(["KXA"])

    assert list(csv.reader(io.StringIO(streamed(visitor, f"/v3/sessions/{session.pk}/export.csv")[0]))) == [
        list(FIELDS)
    ]
    assert streamed(visitor, f"/v3/sessions/{session.pk}/export.jsonl")[0] == ""
    assert visitor.get(f"/v3/sessions/{session.pk}/export.parquet").status_code == 404


def test_outside_sim_the_history_needs_a_staff_login(paper: None, visitor: Client) -> None:
    session = new_session(["KXA"])
    urls = ["/v3/sessions", f"/v3/sessions/{session.pk}", f"/v3/sessions/{session.pk}/export.jsonl"]
    for url in urls:
        response = visitor.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/v3/login?next=")
    member = Client()
    member.force_login(User.objects.create_user("member", password="a long passphrase 7"))
    assert all(member.get(url).status_code == 302 for url in urls)
    owner = Client()
    owner.force_login(User.objects.create_user("owner", password="a long passphrase 7", is_staff=True))
    assert all(owner.get(url).status_code == 200 for url in urls)


def test_the_admin_links_to_the_sessions_console_view_and_export(visitor: Client) -> None:
    session = recorded_session()
    admin = Client()
    admin.force_login(User.objects.create_superuser("admin", password="a long passphrase 7"))

    page = text(admin, f"/admin/trader/tradingsession/{session.pk}/change/")

    assert f'href="/v3/sessions/{session.pk}"' in page  # console view
    assert f'href="/v3/sessions/{session.pk}/export.jsonl"' in page
    assert 'href="/v3/sessions"' in page
    assert re.search(rf'<a href="/v3/sessions/{session.pk}" class="viewsitelink">', page)  # "View on site"
    assert 'href="/v3-trader"' in text(admin, "/admin/")  # "View site" is the console
