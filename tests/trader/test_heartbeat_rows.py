"""A heartbeat writes what changed: new console lines as rows, changed market tops, a small status document.

The web side (``/v3/status``, the console's ``history_replay``) still shows everything, read from rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test import override_settings

from apps.trader import services
from apps.trader.core.statemachine import Transition
from apps.trader.core.states import State
from apps.trader.models import ConsoleLine, MarketTop
from apps.trader.selectors import console_history, market_detail, market_page, status_current
from apps.trader.services import DjangoSessionStore, session_end, session_heartbeat, session_start

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 12, 1, 4, 0, 0, 123456, tzinfo=UTC)
FED, CPI = "KXFED-26DEC-T4.25", "KXCPI-26DEC-T0.3"


def line(n: int) -> dict[str, Any]:
    stamp = T0 + timedelta(seconds=n)
    return {"level": "info", "message": f"line {n}", "context": "", "timestamp": stamp.isoformat()}


def top(ticker: str, seq: int) -> dict[str, Any]:
    return {
        "market_ticker": ticker,
        "sid": 1,
        "seq": seq,
        "yes_bid": {"price": "0.4200", "size": "12.50"},
        "yes_ask": {"price": "0.4400", "size": "3.00"},
        "spread": "0.0200",
        "stale": False,
        "updated_at": T0.isoformat(),
    }


def status() -> dict[str, Any]:
    return {
        "state": "ready",
        "health": {"status": "healthy", "reason": ""},
        "timestamp": T0.isoformat(),
        "environment": "sim",
        "metrics": {"deltas_received": 42, "markets_total": 2, "event_bus": {"dropped": 0}},
    }


class Statements:
    """Every statement the ORM's worker thread runs while installed (Django's execute_wrapper hook)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, tuple[Any, ...]]] = []

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        # executemany's parameters are one tuple per row: flattened, as one multi-row INSERT's would be.
        flat = [value for row in params for value in row] if many else list(params or ())
        self.seen.append((sql, tuple(flat)))
        return execute(sql, params, many, context)

    def touching(self, table: str) -> list[tuple[str, tuple[Any, ...]]]:
        return [(sql, params) for sql, params in self.seen if table in sql]


@pytest.fixture
async def statements() -> AsyncIterator[Statements]:
    spy = Statements()

    def install() -> None:
        connection.execute_wrappers.append(spy)

    def remove() -> None:
        connection.execute_wrappers.remove(spy)

    await database_sync_to_async(install)()
    yield spy
    await database_sync_to_async(remove)()


async def beat(
    store: DjangoSessionStore,
    session_id: int,
    console: list[dict[str, Any]],
    *tops: Any,
    markets: list[str] | None = None,
) -> None:
    """A heartbeat carrying the tops that changed since the last one (and the market list when it changed)."""
    await store.session_heartbeat(
        session_id=session_id,
        state="ready",
        state_entered_at=T0,
        status=status(),
        counters={"deltas_received": 42},
        console=console,
        tops=list(tops),
        markets=markets,
    )


async def test_it_writes_each_console_line_once_and_only_the_market_tops_that_changed(
    statements: Statements, monkeypatch: pytest.MonkeyPatch
) -> None:
    upserted: list[list[str]] = []
    upsert = services.market_tops_upsert

    def upsert_watched(session_id: int, tops: Sequence[tuple[str, str]]) -> None:
        upserted.append([ticker for ticker, _ in tops])
        upsert(session_id, tops)

    monkeypatch.setattr(services, "market_tops_upsert", upsert_watched)
    store = DjangoSessionStore(own_thread=False)  # on the thread the spy watches, whatever the database
    session_id = await store.session_start(environment="sim", markets=[FED, CPI], exchange_url="ws://127.0.0.1:1/x")
    console = [line(0), line(1)]
    await beat(store, session_id, console, top(FED, 1), top(CPI, 1))
    statements.seen.clear()

    await beat(store, session_id, console)  # nothing changed
    assert statements.touching("trader_consoleline") == []
    assert statements.touching("trader_markettop") == []
    assert not [sql for sql, _ in statements.touching("trader_tradingsession") if '"markets"' in sql]
    await beat(store, session_id, console, top(FED, 1))  # a top that came back to what is written
    assert statements.touching("trader_markettop") == []

    console = [*console, line(2)]
    await beat(store, session_id, console, top(FED, 1), top(CPI, 2))
    inserted = statements.touching("trader_consoleline")
    assert len(inserted) == 1 and "line 2" in inserted[0][1] and "line 1" not in inserted[0][1]
    # Only the top that changed, in one statement (up to a thousand rows a statement on SQLite).
    assert upserted[-1] == [CPI]
    assert len(statements.touching("trader_markettop")) == 1

    history = await database_sync_to_async(console_history)()
    assert [entry["message"] for entry in history["console"]] == ["line 0", "line 1", "line 2"]
    assert history["console"][0] == {**line(0), "session_id": session_id}
    page = await database_sync_to_async(market_page)()
    assert [(t["market_ticker"], t["seq"]) for t in page["markets"]] == [(CPI, 2), (FED, 1)]
    assert history["status"]["metrics"]["deltas_received"] == 42

    # A market removed from the session's list loses its row; /v3/status reads the rows.
    await beat(store, session_id, console, top(FED, 3), markets=[FED])
    document = await database_sync_to_async(status_current)()
    assert document["session"]["markets_total"] == 1
    assert document["metrics"]["event_bus"] == {"dropped": 0}
    fed = await database_sync_to_async(market_detail)(ticker=FED)
    cpi = await database_sync_to_async(market_detail)(ticker=CPI)
    assert fed is not None and fed["book"]["seq"] == 3
    assert cpi is None  # no shard watches it any more


async def test_a_new_console_replays_the_last_200_lines_in_order() -> None:
    store = DjangoSessionStore()
    session_id = await store.session_start(environment="sim", markets=[FED], exchange_url="ws://127.0.0.1:1/x")
    window: list[dict[str, Any]] = []
    for n in range(260):
        window = [*window, line(n)][-200:]  # the trader keeps its last 200 lines
        if n % 37 == 0 or n == 259:
            await beat(store, session_id, window, top(FED, n))

    history = await database_sync_to_async(console_history)()
    assert [entry["message"] for entry in history["console"]] == [f"line {n}" for n in range(60, 260)]


async def test_a_heartbeat_that_failed_is_written_whole_by_the_next_one() -> None:
    store = DjangoSessionStore()
    session_id = await store.session_start(environment="sim", markets=[FED], exchange_url="ws://127.0.0.1:1/x")
    with pytest.raises(KeyError):  # a malformed line fails the whole heartbeat's transaction
        await beat(store, session_id, [line(0), {"level": "info"}], top(FED, 1))

    await beat(store, session_id, [line(0), line(1)], top(FED, 1))
    history = await database_sync_to_async(console_history)()
    assert [entry["message"] for entry in history["console"]] == ["line 0", "line 1"]
    assert (await database_sync_to_async(market_detail)(ticker=FED) or {}).get("book", {})["seq"] == 1


async def test_with_debug_on_the_trader_keeps_no_query_log() -> None:
    store = DjangoSessionStore()
    with override_settings(DEBUG=True):
        session_id = await store.session_start(environment="sim", markets=[FED], exchange_url="ws://127.0.0.1:1/x")
        for n in range(20):
            await beat(store, session_id, [line(n)], top(FED, n))
        await store.transition_record(
            session_id=session_id, transition=Transition(State.STARTUP, State.INITIALIZING, "go", T0, {})
        )
        logged = await database_sync_to_async(lambda: len(connection.queries_log))()
        await store.session_end(session_id=session_id, failed=False, error="")
    assert logged == 0


def test_the_admin_shows_and_deletes_a_session_with_heartbeat_rows(admin_client: Any) -> None:
    session = session_start(environment="sim", markets=[FED], exchange_url="ws://127.0.0.1:1/x")
    session_heartbeat(
        session_id=session.pk,
        state="ready",
        state_entered_at=T0,
        status=status(),
        counters={"deltas_received": 42},
        console=[line(0), line(1)],
        tops=[top(FED, 1)],
    )
    session_end(session_id=session.pk, failed=False, error="")

    page = admin_client.get(f"/admin/trader/tradingsession/{session.pk}/change/")
    assert page.status_code == 200
    deleted = admin_client.post(f"/admin/trader/tradingsession/{session.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302
    assert not ConsoleLine.objects.exists() and not MarketTop.objects.exists()
