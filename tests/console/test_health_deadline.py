"""/v3/health answers within its own deadline, with the reason, even when the database hangs or fails."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from django.db import OperationalError
from django.test import AsyncClient

from apps.console import views
from apps.trader.models import TradingSession

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hanging_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Every read of the current session hangs until the test ends; yields the list of reads started."""
    release = threading.Event()
    reads: list[int] = []

    def hang() -> list[TradingSession]:
        reads.append(1)
        release.wait(timeout=30)
        raise OperationalError("the test is over")

    monkeypatch.setattr(views, "shards_current", hang)
    monkeypatch.setattr(views, "HEALTH_DEADLINE", 0.2)
    yield reads
    release.set()


async def test_a_hanging_database_is_a_503_with_the_reason_and_probes_share_one_read(
    hanging_database: list[int],
) -> None:
    client = AsyncClient()
    for _ in range(3):
        response = await client.get("/v3/health")
        assert response.status_code == 503
        assert response.json() == {"status": "unhealthy", "reason": "database unreachable: no answer within 0.2 s"}
    assert len(hanging_database) == 1  # later probes wait on the read in flight instead of piling up threads


async def test_a_failing_database_is_a_503_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> list[TradingSession]:
        raise OperationalError("connection refused")

    monkeypatch.setattr(views, "shards_current", fail)
    response = await AsyncClient().get("/v3/health")
    assert response.status_code == 503
    assert response.json() == {"status": "unhealthy", "reason": "database unreachable (OperationalError)"}
