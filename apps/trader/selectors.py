"""Reads: what the web side shows, computed only from rows the trader wrote."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from apps.trader.core.health import Health, evaluate_health
from apps.trader.models import ConsoleLine, MarketTop, StateTransition, TradingSession

CONSOLE_REPLAY_LINES = 200
"""How many of the session's last console lines a new console replays (the trader keeps as many)."""

SHARD_ENDED_SHOWN_FOR = timedelta(minutes=10)
"""How long a shard that stopped stays in the fleet's status, so every web worker shows that it went away."""


def shards_current() -> list[TradingSession]:
    """The trader shards a web worker shows: every running session (freshest heartbeat first), then those
    that ended in the last ten minutes (latest first); with none of either, the most recent session."""
    since = timezone.now() - SHARD_ENDED_SHOWN_FOR
    rows = TradingSession.objects.filter(Q(status=TradingSession.Status.RUNNING) | Q(ended_at__gte=since))
    running = [s for s in rows if s.status == TradingSession.Status.RUNNING]
    ended = [s for s in rows if s.status != TradingSession.Status.RUNNING]
    running.sort(key=lambda s: s.heartbeat_at or s.started_at, reverse=True)
    ended.sort(key=lambda s: s.ended_at or s.started_at, reverse=True)
    if running or ended:
        return running + ended
    latest = TradingSession.objects.order_by("-started_at").first()
    return [latest] if latest is not None else []


def sessions_live(*, stale_after: float | None = None) -> list[TradingSession]:
    """Running sessions whose heartbeat is fresh (within ``stale_after`` seconds, by default
    TRADER_HEARTBEAT_STALE_SECONDS): the traders alive right now, in any environment, oldest first."""
    stale_after = settings.TRADER_HEARTBEAT_STALE_SECONDS if stale_after is None else stale_after
    fresh_since = timezone.now() - timedelta(seconds=stale_after)
    return list(
        TradingSession.objects.filter(status=TradingSession.Status.RUNNING, heartbeat_at__gte=fresh_since).order_by(
            "started_at", "id"
        )
    )


def session_sharing_markets(*, markets: list[str], stale_after: float) -> tuple[TradingSession, list[str]] | None:
    """A live session that already trades any of ``markets``, with the shared tickers; None if there is none.

    One market belongs to one trader: two would record and control the same book twice.
    """
    wanted = set(markets)
    for session in sessions_live(stale_after=stale_after):
        shared = [ticker for ticker in session.markets if ticker in wanted]
        if shared:
            return session, shared
    return None


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


def fleet_health(*, shards: list[TradingSession]) -> Health:
    """The health of every shard together: one running shard answers for itself; with several, any unhealthy
    shard makes the fleet unhealthy, and a shard that stopped while its markets are watched by no one else
    makes it degraded."""
    running = [s for s in shards if s.status == TradingSession.Status.RUNNING]
    if not running:
        return session_health(session=shards[0] if shards else None)
    verdicts = [(s, session_health(session=s)) for s in running]
    watched = {ticker for s in running for ticker in s.markets}
    orphaned = [s for s in shards if s not in running and not set(s.markets) <= watched]
    if len(verdicts) == 1 and not orphaned:
        return verdicts[0][1]
    unhealthy = [f"session {s.pk}: {h.reason}" for s, h in verdicts if h.status == "unhealthy"]
    if unhealthy:
        return Health("unhealthy", "; ".join(unhealthy))
    degraded = [f"session {s.pk}: {h.reason}" for s, h in verdicts if h.status == "degraded"]
    degraded += [f"session {s.pk} {s.status}; its markets are not watched" for s in orphaned]
    if degraded:
        return Health("degraded", "; ".join(degraded))
    live = sum(len(s.markets) for s in running)
    return Health("healthy", f"ready; {len(running)} shards, {live} markets live")


def shard_status(session: TradingSession) -> dict[str, Any]:
    """One shard's part of the status: its session, state, health, books and metrics, from its rows."""
    now = timezone.now()
    return {
        "session": session_summary(session),
        "state": session.current_state,
        "health": session_health(session=session).as_dict(),
        "time_in_state": round((now - session.state_entered_at).total_seconds(), 1)
        if session.state_entered_at
        else None,
        "heartbeat_age": round((now - session.heartbeat_at).total_seconds(), 1) if session.heartbeat_at else None,
        "markets": market_tops(session=session),
        "metrics": session.latest_metrics,
    }


def status_current() -> dict[str, Any]:
    """The /v3/status document. It holds no secrets: no key id, no key, no SECRET_KEY.

    The top level describes the running shard with the freshest heartbeat (the only one in the embedded
    mode) with the fleet's health and every running shard's books; ``shards`` lists each shard."""
    shards = shards_current()
    document: dict[str, Any] = {
        "environment": str(settings.ENVIRONMENT),
        "health": fleet_health(shards=shards).as_dict(),
        "state": None,
        "time_in_state": None,
        "session": None,
        "markets": [],
        "metrics": {},
        "shards": [shard_status(s) for s in shards],
    }
    if not shards:
        return document
    primary = document["shards"][0]
    document.update({key: primary[key] for key in ("state", "time_in_state", "heartbeat_age", "session", "metrics")})
    document["markets"] = _running_books(shards, document["shards"])
    return document


def _running_books(shards: list[TradingSession], documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The books of every running shard, or the latest shard's when none runs."""
    running = [d for s, d in zip(shards, documents, strict=True) if s.status == TradingSession.Status.RUNNING]
    return [book for d in (running or documents[:1]) for book in d["markets"]]


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
    """The ``history_replay`` payload a new console receives: the story so far of the freshest shard, the
    other shards' latest status, and the books of every running shard."""
    shards = shards_current()
    if not shards:
        return {"session": None, "transitions": [], "status": None, "console": [], "orderbooks": [], "shards": []}
    session = shards[0]
    documents = [shard_status(s) for s in shards]
    status = (
        {**session.latest_status, "metrics": session.latest_metrics, "markets": documents[0]["markets"]}
        if session.latest_status
        else None
    )
    return {
        "session": session_summary(session),
        "transitions": [row.as_event() for row in transitions_recent(session=session)],
        "status": status,
        "console": console_recent(session=session),
        "orderbooks": _running_books(shards, documents),
        "shards": documents,
    }
