"""The admin shows a session's counters, recorded markets and gaps, and lists gaps on their own page."""

from __future__ import annotations

import pytest

from apps.trader.models import TradingSession
from tests.marketdata.conftest import recorded_session

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_session_page_shows_its_counters_markets_and_gaps(admin_client) -> None:
    session = recorded_session()
    TradingSession.objects.filter(pk=session.pk).update(gaps=1, resyncs=2, bytes_received=123_456)
    page = admin_client.get(f"/admin/trader/tradingsession/{session.pk}/change/").content.decode()
    assert "Recorded markets" in page and "Recorded gaps" in page
    assert "KXA" in page and "KXB" in page
    assert "Seq gap" in page and "Connection lost" in page
    assert "123456" in page and "Bytes received" in page


def test_gaps_have_their_own_list(admin_client) -> None:
    session = recorded_session()
    page = admin_client.get("/admin/marketdata/recordedgap/").content.decode()
    assert f"Session {session.pk}" in page
    assert "KXA, KXB" in page
    healed = admin_client.get("/admin/marketdata/recordedgap/?healed_at__isnull=True").content.decode()
    assert "0 recorded gaps" in healed
