"""prunesessions: lists what is older than the age (a dry run) and deletes it, recordings included, with --yes."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.marketdata.models import RecordedDelta, RecordedGap, RecordedMarket, RecordedSnapshot
from apps.trader.models import StateTransition, TradingSession
from apps.trader.pruning import parse_age
from tests.marketdata.conftest import recorded_session

pytestmark = pytest.mark.django_db(transaction=True)


def prune(*args: str) -> str:
    out = io.StringIO()
    call_command("prunesessions", *args, stdout=out)
    return out.getvalue()


def age(session: TradingSession, days: int) -> TradingSession:
    then = timezone.now() - timedelta(days=days)
    TradingSession.objects.filter(pk=session.pk).update(started_at=then - timedelta(hours=2), ended_at=then)
    return session


def rows_of(session: TradingSession) -> int:
    return sum(
        model.objects.filter(session_id=session.pk).count()
        for model in (RecordedSnapshot, RecordedDelta, RecordedGap, RecordedMarket)
    )


@pytest.fixture
def sessions() -> dict[str, TradingSession]:
    old = age(recorded_session(), days=45)
    StateTransition.objects.create(session=old, from_state="startup", to_state="initializing", timestamp=old.started_at)
    recent = age(recorded_session(), days=3)
    running = recorded_session()
    TradingSession.objects.filter(pk=running.pk).update(
        status=TradingSession.Status.RUNNING, ended_at=None, started_at=timezone.now() - timedelta(days=90)
    )
    return {"old": old, "recent": recent, "running": running}


def test_a_dry_run_lists_old_sessions_and_deletes_nothing(sessions: dict[str, TradingSession]) -> None:
    out = prune("--older-than", "30d")
    old = sessions["old"]
    assert f"session {old.pk:>6}  sim" in out
    assert "snapshots 6  deltas 5  gaps 2" in out
    assert f"session {sessions['recent'].pk:>6}" not in out
    assert f"session {sessions['running'].pk:>6}" not in out
    assert "Dry run: 1 session(s), 13 recorded rows would be deleted. Pass --yes to delete them." in out
    assert TradingSession.objects.count() == 3
    assert rows_of(old) > 0


def test_yes_deletes_old_sessions_with_their_recordings_only(sessions: dict[str, TradingSession]) -> None:
    out = prune("--older-than", "30d", "--yes")
    assert "Deleted 1 session(s) and their 13 recorded rows." in out
    old, recent, running = sessions["old"], sessions["recent"], sessions["running"]
    assert not TradingSession.objects.filter(pk=old.pk).exists()
    assert rows_of(old) == 0
    assert not StateTransition.objects.filter(session_id=old.pk).exists()
    assert rows_of(recent) == rows_of(running) == 13 + 2  # 13 rows plus two per-market totals
    assert "No finished session ended more than 30d ago." in prune("--older-than", "30d", "--yes")
    assert "Deleted 1 session(s)" in prune("--older-than", "2d", "--yes")
    assert TradingSession.objects.filter(pk=running.pk).exists()


def test_ages_are_a_number_and_a_unit() -> None:
    assert parse_age("30d") == timedelta(days=30)
    assert parse_age("12h") == timedelta(hours=12)
    assert parse_age("2w") == timedelta(weeks=2)
    with pytest.raises(CommandError, match="--older-than: an age is a number and a unit"):
        prune("--older-than", "a month")
