"""Writes: the Django-backed session store the trader core is handed."""

from __future__ import annotations

import asyncio
import functools
import hashlib
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

from apps.kalshi.clock import from_epoch_us
from apps.marketdata.dbwriter import postgres_copy_upsert, sqlite_insert_rows
from apps.marketdata.spill import spill_load
from apps.trader.core.sessionwriter import TRADING_BATCH
from apps.trader.core.statemachine import Transition
from apps.trader.core.trading.records import (
    FillRecord,
    OrderRecord,
    PositionRecord,
    TradingRecord,
    record_from_dict,
)
from apps.trader.models import (
    ConsoleLine,
    Fill,
    MarketTop,
    Order,
    OrderChange,
    PositionSnapshot,
    StateTransition,
    TradingSession,
)

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


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


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
    upsert = 'ON CONFLICT (session_id, market_ticker) DO UPDATE SET "top" = excluded."top"'
    if connection.vendor == "sqlite":
        rows = [(session_id, ticker, top) for ticker, top in tops]
        with connection.cursor() as cursor:  # Django's cursor: its execute wrappers see the statement
            columns = 'session_id, market_ticker, "top"'
            raw = connection.connection
            sqlite_insert_rows(raw, table, columns, rows, times=0, upsert=upsert, execute=cursor.execute)
        return
    if connection.vendor == "postgresql":
        staging = "market_tops_incoming"
        sql = (
            f'INSERT INTO {table} (session_id, market_ticker, "top") '
            f"SELECT %s, market_ticker, CAST(top AS jsonb) FROM {staging} {upsert}"
        )
        postgres_copy_upsert(connection, staging, "market_ticker text, top text", tops, sql, [session_id])
        return
    sql = f'INSERT INTO {table} (session_id, market_ticker, "top") VALUES (%s, %s, %s) {upsert}'
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


def trading_records_write(*, session_id: int, records: Sequence[TradingRecord]) -> None:
    """Write a batch of the trader's trading records in one transaction.

    Each order's row takes the state of its latest record (never an older one) and every record of it adds an
    OrderChange row, in the batch's order; each fill adds a Fill row, linked to its order when the trader
    recorded that order; each position adds a PositionSnapshot row. What is already written is skipped by its
    natural key (a fill's trade id, a change's time and state, a position's market and time), so a batch whose
    first write had an unknown outcome can be written again and adds nothing twice.
    """
    orders = [record for record in records if isinstance(record, OrderRecord)]
    fills = [record for record in records if isinstance(record, FillRecord)]
    positions = [record for record in records if isinstance(record, PositionRecord)]
    with transaction.atomic():
        if orders:
            _orders_write(session_id, orders)
        if fills:
            _fills_write(session_id, fills)
        if positions:
            _positions_write(session_id, positions)


_ORDER_STATE_FIELDS = (
    "exchange_order_id",
    "ticker",
    "side",
    "yes_price",
    "initial_count",
    "fill_count",
    "remaining_count",
    "time_in_force",
    "status",
    "fees",
    "strategy",
    "error_code",
    "updated_at",
)


def _order_state(record: OrderRecord) -> dict[str, Any]:
    return {
        "exchange_order_id": record.order_id,
        "ticker": record.ticker,
        "side": record.side,
        "yes_price": record.yes_price,
        "initial_count": record.initial_count,
        "fill_count": record.fill_count,
        "remaining_count": record.remaining_count,
        "time_in_force": record.time_in_force,
        "status": record.status,
        "fees": record.fees,
        "strategy": record.strategy,
        "error_code": record.error_code,
        "updated_at": from_epoch_us(record.at_us),
    }


def _orders_write(session_id: int, records: Sequence[OrderRecord]) -> None:
    latest: dict[str, OrderRecord] = {}
    first_us: dict[str, int] = {}
    for record in records:
        key = record.client_order_id
        first_us[key] = min(first_us.get(key, record.at_us), record.at_us)
        if key not in latest or record.at_us >= latest[key].at_us:
            latest[key] = record
    existing = {
        row.client_order_id: row
        for row in Order.objects.filter(session_id=session_id, client_order_id__in=list(latest))
    }
    new: list[Order] = []
    changed: list[Order] = []
    linkable: list[Order] = []
    """Orders whose fills may have been written before the order was linkable: new, or with a new exchange id."""
    for key, record in latest.items():
        first = from_epoch_us(first_us[key])
        state = _order_state(record)
        row = existing.get(key)
        if row is None:
            new.append(Order(session_id=session_id, client_order_id=key, created_at=first, **state))
            continue
        if state["updated_at"] < row.updated_at:
            continue  # a batch written again after a later one: the row already says more
        if not state["exchange_order_id"]:
            # The exchange's id, once known, stays: a later record without it (a refused amend) is no news.
            state["exchange_order_id"] = row.exchange_order_id
        if state["exchange_order_id"] != row.exchange_order_id:
            linkable.append(row)
        for name, value in state.items():
            setattr(row, name, value)
        row.created_at = min(row.created_at, first)
        changed.append(row)
    Order.objects.bulk_create(new)
    if changed:
        Order.objects.bulk_update(changed, [*_ORDER_STATE_FIELDS, "created_at"])
    ids = {key: row.pk for key, row in existing.items()}
    ids.update((row.client_order_id, row.pk) for row in new if row.pk is not None)
    unsaved = [row.client_order_id for row in new if row.pk is None]
    if unsaved:  # a database that does not return the keys of a bulk insert
        rows = Order.objects.filter(session_id=session_id, client_order_id__in=unsaved)
        ids.update(rows.values_list("client_order_id", "pk"))
    OrderChange.objects.bulk_create(
        (
            OrderChange(
                order_id=ids[record.client_order_id],
                status=record.status,
                yes_price=record.yes_price,
                initial_count=record.initial_count,
                fill_count=record.fill_count,
                remaining_count=record.remaining_count,
                fees=record.fees,
                reason=record.reason,
                error_code=record.error_code,
                at=from_epoch_us(record.at_us),
            )
            for record in records
        ),
        ignore_conflicts=True,
    )
    linkable += new
    if linkable:
        _fills_link(
            session_id, [(ids[row.client_order_id], row.client_order_id, row.exchange_order_id) for row in linkable]
        )


def _fills_link(session_id: int, orders: Sequence[tuple[int, str, str]]) -> None:
    """Link fills written before their order's row, or before it had the exchange's id, to (pk, client id,
    exchange id) of those orders."""
    by_client = {client: pk for pk, client, _ in orders if client}
    by_exchange = {exchange: pk for pk, _, exchange in orders if exchange}
    orphans = list(
        Fill.objects.filter(session_id=session_id, order__isnull=True)
        .filter(Q(client_order_id__in=list(by_client)) | Q(exchange_order_id__in=list(by_exchange)))
        .only("pk", "client_order_id", "exchange_order_id")
    )
    for fill in orphans:
        fill.order_id = by_exchange.get(fill.exchange_order_id) or by_client.get(fill.client_order_id)
    if orphans:
        Fill.objects.bulk_update(orphans, ["order"])


def _fills_write(session_id: int, records: Sequence[FillRecord]) -> None:
    exchange_ids = {record.order_id for record in records if record.order_id}
    client_ids = {record.client_order_id for record in records if record.client_order_id}
    by_exchange: dict[str, int] = {}
    by_client: dict[str, int] = {}
    known = Order.objects.filter(session_id=session_id).filter(
        Q(exchange_order_id__in=list(exchange_ids)) | Q(client_order_id__in=list(client_ids))
    )
    for pk, client, exchange in known.values_list("pk", "client_order_id", "exchange_order_id"):
        by_client[client] = pk
        if exchange:
            by_exchange[exchange] = pk
    Fill.objects.bulk_create(
        (
            Fill(
                session_id=session_id,
                order_id=by_exchange.get(record.order_id) or by_client.get(record.client_order_id),
                trade_id=record.trade_id,
                exchange_order_id=record.order_id,
                client_order_id=record.client_order_id,
                ticker=record.ticker,
                side=record.side,
                yes_price=record.yes_price,
                count=record.count,
                fee=record.fee,
                is_taker=record.is_taker,
                post_position=record.post_position,
                traded_at=from_epoch_us(record.ts_ms * 1000),
                received_at=from_epoch_us(record.received_us),
            )
            for record in records
        ),
        ignore_conflicts=True,
    )


_POSITION_FIELDS = ("position", "cost", "realized_pnl", "fees_paid", "mark_price", "unrealized_pnl")


def _positions_write(session_id: int, records: Sequence[PositionRecord]) -> None:
    # Of two positions of one market at the same microsecond the later is the position then.
    latest = {(record.ticker, record.at_us): record for record in records}
    PositionSnapshot.objects.bulk_create(
        (
            PositionSnapshot(
                session_id=session_id,
                ticker=record.ticker,
                at=from_epoch_us(record.at_us),
                **{name: getattr(record, name) for name in _POSITION_FIELDS},
            )
            for record in latest.values()
        ),
        update_conflicts=True,
        unique_fields=("session", "ticker", "at"),
        update_fields=_POSITION_FIELDS,
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
    # Written whatever may be there already: the store skips what a write the trader waited for put there.
    trading = [record_from_dict(saved) for saved in document.get("trading", [])]
    with transaction.atomic():
        StateTransition.objects.bulk_create(transitions)
        for start in range(0, len(trading), TRADING_BATCH):
            trading_records_write(session_id=session_id, records=trading[start : start + TRADING_BATCH])
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
    records = f", {len(trading)} trading record(s)" if trading else ""
    return f"session {session_id}: wrote {len(transitions)} transition(s){records} and its closing, saved at shutdown"


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
    tops: dict[str, bytes] = field(default_factory=dict)
    """Ticker -> a 16-byte digest of the top as written: the JSON text with its levels is 600-700 bytes, 7 MB
    at 10,000 markets, for a comparison that a digest answers as well."""


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
        changed = [(ticker, text, _digest(text)) for ticker, text in encoded]
        changed = [top for top in changed if written.tops.get(top[0]) != top[2]]
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
            tops=[(ticker, text) for ticker, text, _ in changed],
            markets=markets,
            markets_gone=gone,
        )
        # Only now: a heartbeat that failed (database down) is written whole by the next one.
        if lines:
            written.console_last = lines[-1]
        written.tops.update((ticker, digest) for ticker, _, digest in changed)
        for ticker in gone:
            del written.tops[ticker]

    async def trading_records(self, *, session_id: int, records: Sequence[TradingRecord]) -> None:
        await self._call(trading_records_write, session_id=session_id, records=records)

    async def session_end(self, *, session_id: int, failed: bool, error: str) -> None:
        await self._call(session_end, session_id=session_id, failed=failed, error=error)
        self._written.pop(session_id, None)

    def close(self) -> None:
        """Let the store's thread go (without waiting for a call stuck on a dead database)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
