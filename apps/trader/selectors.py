"""Reads: what the web side shows, computed only from rows the trader wrote."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.trader.core.health import Health, evaluate_health
from apps.trader.models import StateTransition, TradingSession


def session_current() -> TradingSession | None:
    """The running session with the freshest heartbeat, else the most recent session."""
    running = TradingSession.objects.filter(status=TradingSession.Status.RUNNING).order_by("-heartbeat_at").first()
    return running or TradingSession.objects.order_by("-started_at").first()


def sessions_live() -> list[TradingSession]:
    """Running sessions whose heartbeat is fresh: the traders that can take control requests, oldest first."""
    fresh_after = timezone.now() - timedelta(seconds=settings.TRADER_HEARTBEAT_STALE_SECONDS)
    return list(
        TradingSession.objects.filter(status=TradingSession.Status.RUNNING, heartbeat_at__gte=fresh_after)
        .exclude(control_address="")
        .order_by("started_at", "id")
    )


def transitions_recent(*, session: TradingSession, limit: int = 200) -> list[StateTransition]:
    rows = list(StateTransition.objects.filter(session=session).order_by("-timestamp", "-id")[:limit])
    rows.reverse()
    return rows


def session_health(*, session: TradingSession | None) -> Health:
    if session is None:
        return Health("unhealthy", "no trader session has run yet")
    if session.status != TradingSession.Status.RUNNING:
        return Health("unhealthy", f"the latest session is {session.status}")
    age = (timezone.now() - session.heartbeat_at).total_seconds() if session.heartbeat_at else None
    return evaluate_health(
        state=session.current_state,
        heartbeat_age=age,
        metrics=session.latest_metrics,
        heartbeat_stale_after=settings.TRADER_HEARTBEAT_STALE_SECONDS,
        feed_idle_timeout=settings.TRADER_FEED_IDLE_TIMEOUT,
    )


def status_current() -> dict[str, Any]:
    """The /v3/status document. It holds no secrets: no key id, no key, no SECRET_KEY."""
    session = session_current()
    health = session_health(session=session)
    document: dict[str, Any] = {
        "environment": str(settings.ENVIRONMENT),
        "health": health.as_dict(),
        "state": None,
        "time_in_state": None,
        "session": None,
        "markets": [],
        "metrics": {},
    }
    if session is None:
        return document
    now = timezone.now()
    latest = session.latest_status or {}
    document.update(
        state=session.current_state,
        time_in_state=round((now - session.state_entered_at).total_seconds(), 1) if session.state_entered_at else None,
        heartbeat_age=round((now - session.heartbeat_at).total_seconds(), 1) if session.heartbeat_at else None,
        session=session_summary(session),
        markets=latest.get("markets", []),
        metrics=latest.get("metrics", session.latest_metrics),
    )
    return document


def session_summary(session: TradingSession) -> dict[str, Any]:
    return {
        "id": session.pk,
        "environment": session.environment,
        "markets": session.markets,
        "exchange_url": session.exchange_url,
        "started_at": session.started_at.isoformat(),
        "ended_at": session.ended_at.isoformat() if session.ended_at else None,
        "status": session.status,
        "current_state": session.current_state,
        "error": session.error,
        "counters": {
            "messages_received": session.messages_received,
            "snapshots_received": session.snapshots_received,
            "deltas_received": session.deltas_received,
            "reconnects": session.reconnects,
            "gaps": session.gaps,
            "resyncs": session.resyncs,
            "bytes_received": session.bytes_received,
        },
    }


def console_history() -> dict[str, Any]:
    """The ``history_replay`` payload a new console receives: the session's story so far."""
    session = session_current()
    if session is None:
        return {"session": None, "transitions": [], "status": None, "console": [], "orderbooks": []}
    latest = dict(session.latest_status or {})
    console = latest.pop("console", [])
    return {
        "session": session_summary(session),
        "transitions": [row.as_event() for row in transitions_recent(session=session)],
        "status": latest or None,
        "console": console,
        "orderbooks": latest.get("markets", []),
    }
