"""Writes: the Django-backed session store the trader core is handed."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import orjson
from channels.db import database_sync_to_async
from django.db import DatabaseError, close_old_connections, connection, reset_queries, transaction
from django.db.models import Q
from django.utils import timezone

from apps.marketdata.spill import spill_load
from apps.trader.core.statemachine import Transition
from apps.trader.models import ConsoleLine, MarketTop, StateTransition, TradingSession

P = ParamSpec("P")
R = TypeVar("R")

_T = TypeVar("_T")


def session_start(
    *,
    environment: str,
    markets: list[str],
    exchange_url: str,
    control_address: str = "",
    replay_of: int | None = None,
) -> TradingSession:
    now = timezone.now()
    return TradingSession.objects.create(
        replay_of_id=replay_of,
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
        # The metrics of the moment go on the session too, so health agrees with the new state at once
        # (the socket is connected when `ready` is entered) instead of a beat later.
        latest = TradingSession.objects.filter(pk=session_id).values_list("latest_metrics", flat=True).first()
        fields: dict[str, Any] = {
            "current_state": transition.to_state.value,
            "heartbeat_at": timezone.now(),
            "latest_metrics": {**(latest or {}), **transition.metrics},
        }
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
    tops: Sequence[dict[str, Any]] = (),
    markets: list[str] | None = None,
    markets_gone: Collection[str] = (),
) -> None:
    """Write one heartbeat in one transaction.

    The session row gets the small status document and the metrics, and ``markets`` when given (markets
    change at runtime: discovery, add/remove from the console); ``console`` lines are appended as
    ConsoleLine rows (pass only new ones); each of ``tops`` has its MarketTop row written (pass only the
    ones that changed); the rows of ``markets_gone`` are deleted.
    """
    _heartbeat_write(
        session_id=session_id,
        state=state,
        state_entered_at=state_entered_at,
        status=status,
        counters=counters,
        console=console,
        tops=[(top["market_ticker"], _top_json(top)) for top in tops],
        markets=markets,
        markets_gone=markets_gone,
    )


def _top_json(top: dict[str, Any]) -> str:
    return orjson.dumps(top).decode()


def _heartbeat_write(
    *,
    session_id: int,
    state: str,
    state_entered_at: datetime,
    status: dict[str, Any],
    counters: dict[str, int],
    console: Sequence[dict[str, Any]],
    tops: Sequence[tuple[str, str]],
    markets: list[str] | None,
    markets_gone: Collection[str],
) -> None:
    """``session_heartbeat`` with the tops already as (ticker, JSON text)."""
    document = {key: value for key, value in status.items() if key not in _STATUS_IN_ROWS}
    fields: dict[str, Any] = {"markets": markets} if markets is not None else {}
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
        if tops:
            market_tops_upsert(session_id, tops)
        if markets_gone:
            MarketTop.objects.filter(session_id=session_id, market_ticker__in=list(markets_gone)).delete()


def market_tops_upsert(session_id: int, tops: Sequence[tuple[str, str]]) -> None:
    """Write MarketTop rows from (ticker, top as JSON text), inserting or replacing each in one statement.

    Raw SQL rather than ``bulk_create``: a heartbeat carries up to 2,000 tops, and the ORM's per-row model
    instances, per-field preparation and client-side quoting cost more than the database's own work.
    """
    table = connection.ops.quote_name(MarketTop._meta.db_table)
    value = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
    sql = (
        f'INSERT INTO {table} (session_id, market_ticker, "top") VALUES (%s, %s, {value}) '
        'ON CONFLICT (session_id, market_ticker) DO UPDATE SET "top" = excluded."top"'
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(session_id, ticker, top) for ticker, top in tops])


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


def sessions_close_abandoned(*, environment: str, stale_after: float) -> int:
    """Mark sessions left 'running' by a process that died without closing them. Returns how many.

    Only a session whose heartbeat is older than ``stale_after`` seconds is abandoned: a fresh heartbeat
    belongs to a live trader (another shard), which must never be marked failed by this process.
    """
    now = timezone.now()
    return (
        TradingSession.objects.filter(environment=environment, status=TradingSession.Status.RUNNING)
        .filter(Q(heartbeat_at__lt=now - timedelta(seconds=stale_after)) | Q(heartbeat_at__isnull=True))
        .update(
            status=TradingSession.Status.FAILED,
            ended_at=now,
            error="the trader process ended without closing the session",
        )
    )


def session_unwritten_load(*, path: Path) -> str:
    """Write a session's transitions and closing that its trader saved because the database was down at
    shutdown (``SessionWriter.spill``), then delete the file. Returns a line saying what was written."""
    document = json.loads(path.read_text())
    session_id = int(document["session_id"])
    # A write the trader was still waiting for at exit may have landed after all: skip what is there.
    written = set(
        StateTransition.objects.filter(session_id=session_id).values_list("timestamp", "from_state", "to_state")
    )
    transitions = [
        StateTransition(
            session_id=session_id,
            from_state=t["from_state"],
            to_state=t["to_state"],
            context=t["context"],
            metrics=t["metrics"],
            timestamp=datetime.fromisoformat(t["timestamp"]),
        )
        for t in document["transitions"]
    ]
    transitions = [t for t in transitions if (t.timestamp, t.from_state, t.to_state) not in written]
    with transaction.atomic():
        StateTransition.objects.bulk_create(transitions)
        heartbeat = document.get("heartbeat")
        if heartbeat is not None:  # the final status and counters
            heartbeat["state_entered_at"] = datetime.fromisoformat(heartbeat["state_entered_at"])
            # The saved console holds the lines of the moment; those already written stay single.
            last = ConsoleLine.objects.filter(session_id=session_id).order_by("-id").first()
            heartbeat["console"] = [
                line
                for line in heartbeat.get("console", [])
                if last is None or datetime.fromisoformat(line["timestamp"]) > last.timestamp
            ]
            session_heartbeat(session_id=session_id, **heartbeat)
        end = document.get("end")
        if end is not None:
            note = f"closed from {path.name} at the next start: the database was unreachable at shutdown"
            error = "; ".join(part for part in (end["error"], note) if part)
            session_end(session_id=session_id, failed=end["failed"], error=error)
    path.unlink()
    return f"session {session_id}: wrote {len(transitions)} transition(s) and its closing, saved at shutdown"


def unwritten_load_all(*, directory: Path) -> list[str]:
    """Write every file a trader saved under ``directory`` at a shutdown the database missed: recorded rows
    first, then the sessions' transitions and closings. Returns one line per file; a file that cannot be
    written yet (the database is still down) is left for the next start and reported."""
    if not directory.is_dir():
        return []
    lines = []
    for path in sorted(directory.glob("recording-*.jsonl")) + sorted(directory.glob("session-*.json")):
        try:
            if path.name.startswith("recording-"):
                lines.append(f"{path.name}: wrote {spill_load(path)} recorded row(s) saved at shutdown")
            else:
                lines.append(f"{path.name}: {session_unwritten_load(path=path)}")
        except (DatabaseError, OSError, ValueError, KeyError) as exc:
            lines.append(f"{path.name}: not written yet ({type(exc).__name__}); kept for the next start")
    return lines


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
    """What the store last wrote for a session, so that a heartbeat writes only what changed (the trader
    sends the tops of the markets that changed; a top that came back to what is written costs no row)."""

    console_last: dict[str, Any] | None = None
    tops: dict[str, str] = field(default_factory=dict)
    """Ticker -> the top as written (JSON text, about 300 bytes): a fifth of the memory of the dict."""


def _new_lines(console: Sequence[dict[str, Any]], last: dict[str, Any] | None) -> Sequence[dict[str, Any]]:
    """The lines of ``console`` after ``last`` (all of them when ``last`` is not among them any more)."""
    if last is not None:
        for index in range(len(console) - 1, -1, -1):
            if console[index] == last:
                return console[index + 1 :]
    return console


class DjangoSessionStore:
    """SessionStore on the Django ORM; every call crosses to a worker thread once.

    On PostgreSQL the calls run on the store's own thread (with its own connection), never on Django's
    shared sync thread: a web request stuck on the database there cannot hold the trader's writes up, nor
    they a request. On SQLite they stay on the shared thread, like the recorder, because SQLite takes one
    writer at a time. Stale connections are closed around each call, so the store recovers from a database
    restart and hands pooled connections back. Heartbeats are written as changes: the store remembers the
    console line and market tops it last wrote, and forgets them only once written.
    """

    def __init__(self, *, own_thread: bool | None = None) -> None:
        self._own_thread = connection.vendor == "postgresql" if own_thread is None else own_thread
        self._executor: ThreadPoolExecutor | None = None
        self._written: dict[int, _Written] = {}

    async def _call(self, function: Callable[..., _T], **kwargs: Any) -> _T:
        function = _forgetting_queries(function)
        if not self._own_thread:
            result: _T = await database_sync_to_async(function)(**kwargs)
            return result
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="session-store")

        def call() -> _T:
            close_old_connections()
            try:
                return function(**kwargs)
            finally:
                close_old_connections()

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def session_start(
        self,
        *,
        environment: str,
        markets: list[str],
        exchange_url: str,
        control_address: str = "",
        replay_of: int | None = None,
    ) -> int:
        session = await self._call(
            session_start,
            environment=environment,
            markets=markets,
            exchange_url=exchange_url,
            control_address=control_address,
            replay_of=replay_of,
        )
        return int(session.pk)

    async def transition_record(self, *, session_id: int, transition: Transition) -> None:
        await self._call(transition_record, session_id=session_id, transition=transition)

    async def session_heartbeat(
        self,
        *,
        session_id: int,
        state: str,
        state_entered_at: datetime,
        status: dict[str, Any],
        counters: dict[str, int],
        console: list[dict[str, Any]],
        tops: Sequence[dict[str, Any]] = (),
        markets: list[str] | None = None,
    ) -> None:
        written = self._written.setdefault(session_id, _Written())
        lines = _new_lines(console, written.console_last)
        encoded = ((top["market_ticker"], _top_json(top)) for top in tops)
        changed = [(ticker, text) for ticker, text in encoded if written.tops.get(ticker) != text]
        watched = set(markets) if markets is not None else None
        gone = [ticker for ticker in written.tops if ticker not in watched] if watched is not None else []
        await self._call(
            _heartbeat_write,
            session_id=session_id,
            state=state,
            state_entered_at=state_entered_at,
            status=status,
            counters=counters,
            console=lines,
            tops=changed,
            markets=markets,
            markets_gone=gone,
        )
        # Only now: a heartbeat that failed (database down) is written whole by the next one.
        if lines:
            written.console_last = lines[-1]
        written.tops.update(changed)
        for ticker in gone:
            del written.tops[ticker]

    async def session_end(self, *, session_id: int, failed: bool, error: str) -> None:
        await self._call(session_end, session_id=session_id, failed=failed, error=error)
        self._written.pop(session_id, None)

    def close(self) -> None:
        """Let the store's thread go (without waiting for a call stuck on a dead database)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
