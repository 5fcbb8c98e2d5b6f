"""The session admin as an operator reads it: read-only pages, times to the second, metrics as a table,
short market columns, and deletion that never touches a running session."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.test import Client

from apps.trader.models import StateTransition, TradingSession
from apps.trader.services import session_end, session_start

pytestmark = pytest.mark.django_db

MARKETS = [f"KXM-{n:05d}" for n in range(10_000)]


def finished_session(markets: list[str] | None = None) -> TradingSession:
    session = session_start(environment="sim", markets=markets or ["KXA", "KXB"], exchange_url="ws://127.0.0.1:1/x")
    StateTransition.objects.create(
        session=session,
        from_state="startup",
        to_state="initializing",
        context="Loading configuration",
        timestamp=datetime(2026, 12, 2, 1, 3, 7, tzinfo=UTC),
    )
    TradingSession.objects.filter(pk=session.pk).update(
        latest_metrics={"feed": {"messages": 1234, "gaps": 2}, "recorder": {"rows_written": 1200}, "uptime_s": 61}
    )
    session_end(session_id=session.pk, failed=False, error="")
    return TradingSession.objects.get(pk=session.pk)


def test_a_session_page_is_read_only_with_times_to_the_second_and_a_metrics_table(admin_client: Client) -> None:
    session = finished_session()
    page = admin_client.get(f"/admin/trader/tradingsession/{session.pk}/change/").content.decode()
    assert 'name="_save"' not in page and 'name="_continue"' not in page
    assert "2026-12-02 01:03:07" in page  # the transition, to the second
    assert '<table class="trader-metrics">' in page
    assert "<tr><th>feed.messages</th><td>1234</td></tr>" in page
    assert "<tr><th>recorder.rows_written</th><td>1200</td></tr>" in page
    assert f"/admin/trader/tradingsession/{session.pk}/delete/" in page
    assert admin_client.post(f"/admin/trader/tradingsession/{session.pk}/change/", {}).status_code == 403


def test_the_list_names_a_few_markets_of_a_large_session(admin_client: Client) -> None:
    finished_session()
    assert 'data-filter-title="market"' in admin_client.get("/admin/trader/tradingsession/").content.decode()
    finished_session(MARKETS)
    listing = admin_client.get("/admin/trader/tradingsession/").content.decode()
    assert "KXM-00000, KXM-00001, KXM-00002 and 9997 more" in listing
    assert 'id="nav-sidebar"' not in listing  # the app list would take a fifth of a 1400 px screen
    assert '<td class="field-duration">0:00:00</td>' in listing  # started and ended in the same second
    assert "KXM-00003" not in listing  # neither in the column nor as 10,000 filter links
    assert 'data-filter-title="market"' not in listing  # too many to list; search finds them
    searched = admin_client.get("/admin/trader/tradingsession/?q=KXM-09999").content.decode()
    assert "1 trading session" in searched and "KXM-00000, KXM-00001" in searched


def test_a_running_session_cannot_be_deleted_one_by_one_or_in_bulk(admin_client: Client) -> None:
    finished = finished_session()
    running = session_start(environment="sim", markets=["KXA"], exchange_url="ws://127.0.0.1:1/x")
    page = admin_client.get(f"/admin/trader/tradingsession/{running.pk}/change/").content.decode()
    assert f"/admin/trader/tradingsession/{running.pk}/delete/" not in page
    assert admin_client.post(f"/admin/trader/tradingsession/{running.pk}/delete/", {"post": "yes"}).status_code == 403

    admin_client.post(
        "/admin/trader/tradingsession/",
        {"action": "delete_selected", "_selected_action": [finished.pk, running.pk], "post": "yes"},
    )
    assert list(TradingSession.objects.values_list("pk", flat=True)) == [running.pk]


def test_the_delete_confirmation_counts_what_goes_with_the_session(admin_client: Client) -> None:
    session = finished_session()
    page = admin_client.get(f"/admin/trader/tradingsession/{session.pk}/delete/").content.decode()
    assert "Trading sessions: 1" in page
    assert "State transitions: 1" in page
    assert admin_client.post(f"/admin/trader/tradingsession/{session.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not TradingSession.objects.exists() and not StateTransition.objects.exists()
