"""Reads: what the web side shows, computed only from rows the trader wrote."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.trader.core.health import Health, evaluate_health
from apps.trader.models import ConsoleLine, MarketTop, StateTransition, TradingSession

CONSOLE_REPLAY_LINES = 200
"""How many of the session's last console lines a new console replays (the trader keeps as many)."""


def session_current() -> TradingSession | None:
    """The running session with the freshest heartbeat, else the most recent session."""
    running = TradingSession.objects.filter(status=TradingSession.Status.RUNNING).order_by("-heartbeat_at").first()
    return running or TradingSession.objects.order_by("-started_at").first()


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


def market_tops(*, session: TradingSession) -> list[dict[str, Any]]:
    """Every market's top of book as the trader last wrote it, in the session's market order."""
    order = {ticker: index for index, ticker in enumerate(session.markets or [])}
    tops = [row.top for row in MarketTop.objects.filter(session=session)]
    tops.sort(key=lambda top: (order.get(top.get("market_ticker", ""), len(order)), top.get("market_ticker", "")))
    return tops


def console_recent(*, session: TradingSession, limit: int = CONSOLE_REPLAY_LINES) -> list[dict[str, Any]]:
    rows = list(ConsoleLine.objects.filter(session=session).order_by("-id")[:limit])
    rows.reverse()
    return [row.as_event() for row in rows]


def status_current() -> dict[str, Any]:
    """The /v3/status document of the current session."""
    return status_document(session=session_current())


def status_document(*, session: TradingSession | None) -> dict[str, Any]:
    """The /v3/status document of ``session``. It holds no secrets: no key id, no key, no SECRET_KEY."""
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
    document.update(
        state=session.current_state,
        time_in_state=round((now - session.state_entered_at).total_seconds(), 1) if session.state_entered_at else None,
        heartbeat_age=round((now - session.heartbeat_at).total_seconds(), 1) if session.heartbeat_at else None,
        session=session_summary(session),
        markets=market_tops(session=session),
        metrics=session.latest_metrics,
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
    tops = market_tops(session=session)
    status = (
        {**session.latest_status, "metrics": session.latest_metrics, "markets": tops} if session.latest_status else None
    )
    return {
        "session": session_summary(session),
        "transitions": [row.as_event() for row in transitions_recent(session=session)],
        "status": status,
        "console": console_recent(session=session),
        "orderbooks": tops,
    }
