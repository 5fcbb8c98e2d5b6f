"""Writes: the Django-backed session store the trader core is handed."""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from channels.db import database_sync_to_async
from django.db import reset_queries, transaction
from django.utils import timezone

from apps.trader.core.statemachine import Transition
from apps.trader.models import ConsoleLine, MarketTop, StateTransition, TradingSession

P = ParamSpec("P")
R = TypeVar("R")


def session_start(*, environment: str, markets: list[str], exchange_url: str) -> TradingSession:
    now = timezone.now()
    return TradingSession.objects.create(
        environment=environment,
        markets=markets,
        exchange_url=exchange_url,
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
    console: Sequence[dict[str, Any]] = (),
    markets_gone: Collection[str] = (),
) -> None:
    """Write one heartbeat in one transaction.

    The session row gets the small status document and the metrics; ``console`` lines are appended as
    ConsoleLine rows (pass only new ones); each market in ``status["markets"]`` has its MarketTop row
    written (pass only the ones that changed); the rows of ``markets_gone`` are deleted.
    """
    document = {key: value for key, value in status.items() if key not in _STATUS_IN_ROWS}
    # Markets change at runtime (discovery, add/remove from the console); the row follows.
    fields: dict[str, Any] = {"markets": status["market_tickers"]} if "market_tickers" in status else {}
    with transaction.atomic():
        TradingSession.objects.filter(pk=session_id).update(
            **fields,
            current_state=state,
            state_entered_at=state_entered_at,
            heartbeat_at=timezone.now(),
            latest_metrics=status.get("metrics", {}),
            latest_status=document,
            **counters,
        )
        if console:
            ConsoleLine.objects.bulk_create(
                ConsoleLine(
                    session_id=session_id,
                    level=line["level"],
                    message=line["message"],
                    context=line.get("context", ""),
                    timestamp=datetime.fromisoformat(line["timestamp"]),
                )
                for line in console
            )
        tops = status.get("markets", [])
        if tops:
            MarketTop.objects.bulk_create(
                [MarketTop(session_id=session_id, market_ticker=top["market_ticker"], top=top) for top in tops],
                update_conflicts=True,
                unique_fields=("session", "market_ticker"),
                update_fields=("top",),
            )
        if markets_gone:
            MarketTop.objects.filter(session_id=session_id, market_ticker__in=list(markets_gone)).delete()


# What a heartbeat keeps out of the session row's status document: metrics go to latest_metrics, market
# tops and console lines to their own rows, so a 1 s heartbeat writes a few KB however long the session.
_STATUS_IN_ROWS = frozenset({"metrics", "markets", "console"})


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


def _forgetting_queries(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` and then empty this thread's debug query log.

    With DEBUG on, Django keeps each connection's last 9,000 statements; a trader that writes every second
    would pin them all for as long as it runs.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        finally:
            reset_queries()

    return wrapper


@dataclass
class _Written:
    """What the store last wrote for a session, so that a heartbeat writes only what changed."""

    console_last: dict[str, Any] | None = None
    tops: dict[str, dict[str, Any]] = field(default_factory=dict)


def _new_lines(console: Sequence[dict[str, Any]], last: dict[str, Any] | None) -> Sequence[dict[str, Any]]:
    """The lines of ``console`` after ``last`` (all of them when ``last`` is not among them any more)."""
    if last is not None:
        for index in range(len(console) - 1, -1, -1):
            if console[index] == last:
                return console[index + 1 :]
    return console


class DjangoSessionStore:
    """SessionStore on the Django ORM; every call crosses to a worker thread once.

    database_sync_to_async closes stale connections around each call, so a long-running trader recovers
    from a database restart and hands pooled connections back. Heartbeats are written as changes: the
    store remembers the console line and market tops it last wrote, and forgets them only once written.
    """

    def __init__(self) -> None:
        self._written: dict[int, _Written] = {}

    async def session_start(self, *, environment: str, markets: list[str], exchange_url: str) -> int:
        session = await database_sync_to_async(_forgetting_queries(session_start))(
            environment=environment, markets=markets, exchange_url=exchange_url
        )
        return int(session.pk)

    async def transition_record(self, *, session_id: int, transition: Transition) -> None:
        await database_sync_to_async(_forgetting_queries(transition_record))(
            session_id=session_id, transition=transition
        )

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
        written = self._written.setdefault(session_id, _Written())
        lines = _new_lines(console, written.console_last)
        tops = {top["market_ticker"]: top for top in status.get("markets", [])}
        changed = [top for ticker, top in tops.items() if written.tops.get(ticker) != top]
        gone = [ticker for ticker in written.tops if ticker not in tops]
        await database_sync_to_async(_forgetting_queries(session_heartbeat))(
            session_id=session_id,
            state=state,
            state_entered_at=state_entered_at,
            status={**status, "markets": changed},
            counters=counters,
            console=lines,
            markets_gone=gone,
        )
        # Only now: a heartbeat that failed (database down) is written whole by the next one.
        if lines:
            written.console_last = lines[-1]
        written.tops = tops

    async def session_end(self, *, session_id: int, failed: bool, error: str) -> None:
        await database_sync_to_async(_forgetting_queries(session_end))(
            session_id=session_id, failed=failed, error=error
        )
        self._written.pop(session_id, None)
