"""Pruning: deleting finished sessions older than an age, with their transitions and recordings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Sum
from django.db.models.functions import Coalesce

from apps.marketdata.models import RecordedMarket
from apps.trader.models import TradingSession

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """ "30d" -> 30 days; units s, m, h, d, w. Raises ValueError for anything else."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"an age is a number and a unit (s, m, h, d or w), e.g. 30d; not {text!r}")
    amount, unit = match.groups()
    return timedelta(**{_UNITS[unit]: int(amount)})


@dataclass(frozen=True)
class PrunableSession:
    id: int
    environment: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    snapshots: int
    deltas: int
    gaps: int

    @property
    def recorded(self) -> int:
        return self.snapshots + self.deltas + self.gaps


def sessions_prunable(*, older_than: timedelta, now: datetime) -> list[PrunableSession]:
    """Finished sessions that ended (or, if they never said so, started) before ``now - older_than``.

    A running session is never prunable.
    """
    cutoff = now - older_than
    sessions = (
        TradingSession.objects.exclude(status=TradingSession.Status.RUNNING)
        .annotate(finished=Coalesce("ended_at", "started_at"))
        .filter(finished__lt=cutoff)
        .order_by("started_at", "id")
    )
    found = []
    for session in sessions:
        totals = RecordedMarket.objects.filter(session=session).aggregate(s=Sum("snapshots"), d=Sum("deltas"))
        found.append(
            PrunableSession(
                id=session.pk,
                environment=session.environment,
                status=session.status,
                started_at=session.started_at,
                ended_at=session.ended_at,
                snapshots=totals["s"] or 0,
                deltas=totals["d"] or 0,
                gaps=session.recorded_gaps.count(),
            )
        )
    return found


def sessions_delete(*, session_ids: list[int]) -> int:
    """Delete sessions with their transitions and recordings, one transaction each. Returns how many."""
    deleted = 0
    for session_id in session_ids:
        with transaction.atomic():
            finished = TradingSession.objects.filter(pk=session_id).exclude(status=TradingSession.Status.RUNNING)
            count, _ = finished.delete()
            deleted += 1 if count else 0
    return deleted
