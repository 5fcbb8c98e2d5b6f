"""Writes: the Django-backed session store the trader core is handed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from apps.trader.core.statemachine import Transition
from apps.trader.models import StateTransition, TradingSession


def session_start(
    *, environment: str, markets: list[str], exchange_url: str, control_address: str = ""
) -> TradingSession:
    now = timezone.now()
    return TradingSession.objects.create(
        environment=environment,
        markets=markets,
        exchange_url=exchange_url,
        control_address=control_address,
        started_at=now,
        status=TradingSession.Status.RUNNING,
        current_state="startup",
        state_entered_at=now,
        heartbeat_at=now,
    )


def transition_record(*, session_id: int, transition: Transition) -> StateTransition:
    with transaction.atomic():
        row = StateTransition.objects.create(
            session_id=session_id,
            from_state=transition.from_state.value,
            to_state=transition.to_state.value,
            context=transition.context,
            metrics=transition.metrics,
            timestamp=transition.timestamp,
        )
        fields: dict[str, Any] = {"current_state": transition.to_state.value, "heartbeat_at": timezone.now()}
        if transition.from_state != transition.to_state:
            fields["state_entered_at"] = transition.timestamp
        TradingSession.objects.filter(pk=session_id).update(**fields)
    return row


def session_heartbeat(
    *,
    session_id: int,
    state: str,
    state_entered_at: datetime,
    status: dict[str, Any],
    counters: dict[str, int],
    console: list[dict[str, Any]],
) -> None:
    metrics = dict(status.get("metrics", {}))
    metrics.pop("event_bus", None)
    # Markets change at runtime (discovery, add/remove from the console); the row follows.
    fields: dict[str, Any] = {"markets": status["market_tickers"]} if "market_tickers" in status else {}
    TradingSession.objects.filter(pk=session_id).update(
        **fields,
        current_state=state,
        state_entered_at=state_entered_at,
        heartbeat_at=timezone.now(),
        latest_metrics=metrics,
        latest_status={**status, "console": console},
        **counters,
    )


def session_end(*, session_id: int, failed: bool, error: str) -> None:
    TradingSession.objects.filter(pk=session_id).update(
        ended_at=timezone.now(),
        status=TradingSession.Status.FAILED if failed else TradingSession.Status.STOPPED,
        current_state="shutdown",
        error=error,
    )


def sessions_close_abandoned(*, environment: str) -> int:
    """Mark sessions left 'running' by a process that died without closing them. Returns how many."""
    return TradingSession.objects.filter(environment=environment, status=TradingSession.Status.RUNNING).update(
        status=TradingSession.Status.FAILED,
        ended_at=timezone.now(),
        error="the trader process ended without closing the session",
    )


class DjangoSessionStore:
    """SessionStore on the Django ORM; every call crosses to a worker thread once.

    database_sync_to_async closes stale connections around each call, so a long-running trader recovers
    from a database restart and hands pooled connections back.
    """

    async def session_start(
        self, *, environment: str, markets: list[str], exchange_url: str, control_address: str = ""
    ) -> int:
        session = await database_sync_to_async(session_start)(
            environment=environment, markets=markets, exchange_url=exchange_url, control_address=control_address
        )
        return int(session.pk)

    async def transition_record(self, *, session_id: int, transition: Transition) -> None:
        await database_sync_to_async(transition_record)(session_id=session_id, transition=transition)

    async def session_heartbeat(
        self,
        *,
        session_id: int,
        state: str,
        state_entered_at: datetime,
        status: dict[str, Any],
        counters: dict[str, int],
        console: list[dict[str, Any]],
    ) -> None:
        await database_sync_to_async(session_heartbeat)(
            session_id=session_id,
            state=state,
            state_entered_at=state_entered_at,
            status=status,
            counters=counters,
            console=console,
        )

    async def session_end(self, *, session_id: int, failed: bool, error: str) -> None:
        await database_sync_to_async(session_end)(session_id=session_id, failed=failed, error=error)
