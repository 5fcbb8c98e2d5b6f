"""Several traders on one database: a live trader is never marked failed by another, and a market has one trader."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from apps.exchange.config import DEFAULT_MARKETS
from apps.trader.models import TradingSession
from apps.trader.selectors import session_sharing_markets
from apps.trader.services import sessions_close_abandoned
from tests.processes import RunningTrader, http_get, manage, project_env, start_runtrader
from tests.support import eventually


def a_session(*, environment: str = "sim", markets: list[str], heartbeat_age: float | None) -> TradingSession:
    now = timezone.now()
    return TradingSession.objects.create(
        environment=environment,
        markets=markets,
        exchange_url="ws://127.0.0.1:1/trade-api/ws/v2",
        started_at=now - timedelta(minutes=5),
        heartbeat_at=None if heartbeat_age is None else now - timedelta(seconds=heartbeat_age),
    )


@pytest.mark.django_db
def test_it_closes_only_sessions_whose_heartbeat_is_stale() -> None:
    live = a_session(markets=["A"], heartbeat_age=2)
    dead = a_session(markets=["B"], heartbeat_age=60)
    never_beat = a_session(markets=["C"], heartbeat_age=None)
    elsewhere = a_session(environment="paper", markets=["D"], heartbeat_age=60)

    assert sessions_close_abandoned(environment="sim", stale_after=10) == 2

    statuses = {s.pk: (s.status, s.error) for s in TradingSession.objects.all()}
    assert statuses[live.pk] == (TradingSession.Status.RUNNING, "")
    assert statuses[dead.pk] == (TradingSession.Status.FAILED, "the trader process ended without closing the session")
    assert statuses[never_beat.pk][0] == TradingSession.Status.FAILED
    assert statuses[elsewhere.pk] == (TradingSession.Status.RUNNING, "")
    assert sessions_close_abandoned(environment="sim", stale_after=10) == 0


@pytest.mark.django_db
def test_it_finds_a_live_session_on_the_same_markets_only() -> None:
    live = a_session(environment="paper", markets=["A", "B"], heartbeat_age=1)
    a_session(markets=["C"], heartbeat_age=60)

    assert session_sharing_markets(markets=["B", "D"], stale_after=10) == (live, ["B"])
    assert session_sharing_markets(markets=["C"], stale_after=10) is None  # its trader is gone
    assert session_sharing_markets(markets=["D", "E"], stale_after=10) is None


def sessions(database: Path) -> dict[int, tuple[str, list[str], str]]:
    """Every session row the traders wrote: id → (status, markets, current state)."""
    with sqlite3.connect(database) as db:
        rows = db.execute("select id, status, markets, current_state from trader_tradingsession order by id").fetchall()
    return {row[0]: (row[1], json.loads(row[2]), row[3]) for row in rows}


async def test_a_second_trader_is_refused_on_shared_markets_and_runs_as_a_shard_on_others(tmp_path: Path) -> None:
    env = project_env(tmp_path)
    database = tmp_path / "trader.sqlite3"
    first: RunningTrader = await asyncio.to_thread(start_runtrader, env, "--port", "0")
    shard: RunningTrader | None = None
    try:
        await eventually(lambda: http_get(f"{first.base_url}/v3/health")[0] == 200, seconds=20)
        [first_id] = sessions(database)
        shared, other = DEFAULT_MARKETS[1], DEFAULT_MARKETS[3]

        refused = await asyncio.to_thread(
            manage, env, "runtrader", "--no-web", "--markets", f"{other},{shared}", timeout=30
        )
        assert refused.returncode == 2, refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert line.startswith(f"configuration error: --markets / TRADER_MARKETS: session {first_id} (sim) ")
        assert f"already running on {shared};" in line
        # The live trader is untouched: still running, and a web side still reports it healthy.
        assert sessions(database) == {first_id: ("running", DEFAULT_MARKETS[:3], "ready")}
        assert http_get(f"{first.base_url}/v3/health")[0] == 200

        shard = await asyncio.to_thread(start_runtrader, env, "--no-web", "--markets", other)
        await eventually(
            lambda: (
                [row[1:] for row in sessions(database).values()] == [(DEFAULT_MARKETS[:3], "ready"), ([other], "ready")]
            ),
            seconds=20,
        )
        assert [row[0] for row in sessions(database).values()] == ["running", "running"]
        # A new shard's first heartbeat follows its ready transition by up to a second.
        await eventually(lambda: http_get(f"{first.base_url}/v3/health")[0] == 200, seconds=5)
    finally:
        results = [await asyncio.to_thread(t.stop) for t in (shard, first) if t is not None]
    assert [code for code, _ in results] == [0] * len(results), [stderr[-2000:] for _, stderr in results]
    assert [row[0] for row in sessions(database).values()] == ["stopped", "stopped"]


async def test_a_trader_that_died_frees_its_markets_once_its_heartbeat_is_stale(tmp_path: Path) -> None:
    env = project_env(tmp_path, TRADER_HEARTBEAT_STALE_SECONDS="3")
    database = tmp_path / "trader.sqlite3"
    markets = DEFAULT_MARKETS[0]
    dead = await asyncio.to_thread(start_runtrader, env, "--no-web", "--markets", markets)
    await eventually(lambda: [row[2] for row in sessions(database).values()] == ["ready"], seconds=20)
    await asyncio.to_thread(dead.stop, signal.SIGKILL)
    [dead_id] = sessions(database)

    # While its heartbeat is fresh (kept so here, however slowly a busy machine starts the next process),
    # its markets are taken.
    with heartbeat_kept_fresh(database, dead_id):
        refused = await asyncio.to_thread(manage, env, "runtrader", "--no-web", "--markets", markets, timeout=30)
    assert refused.returncode == 2, refused.stderr
    assert f"session {dead_id} (sim) is already running on {markets};" in refused.stderr
    assert "free once its heartbeat is 3 s old" in refused.stderr

    await eventually(lambda: heartbeat_age(database, dead_id) > 3, seconds=10)
    successor = await asyncio.to_thread(start_runtrader, env, "--no-web", "--markets", markets)
    try:
        await eventually(lambda: [row[2] for row in sessions(database).values()] == ["ready", "ready"], seconds=20)
        assert [row[0] for row in sessions(database).values()] == ["failed", "running"]
    finally:
        code, stderr = await asyncio.to_thread(successor.stop)
    assert code == 0, stderr[-2000:]


@contextlib.contextmanager
def heartbeat_kept_fresh(database: Path, session_id: int) -> Iterator[None]:
    """Beat for the session every 0.5 s, as its trader did (UTC without an offset, as Django writes it)."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.closing(sqlite3.connect(database, timeout=20)) as db, db:
                now = timezone.now().astimezone(UTC).replace(tzinfo=None).isoformat(" ")
                db.execute("update trader_tradingsession set heartbeat_at = ? where id = ?", (now, session_id))
            if stop.wait(0.5):
                return

    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    try:
        yield
    finally:
        stop.set()
        beating.join(timeout=30)


def heartbeat_age(database: Path, session_id: int) -> float:
    with sqlite3.connect(database) as db:
        [(beat,)] = db.execute("select heartbeat_at from trader_tradingsession where id = ?", (session_id,)).fetchall()
    return (timezone.now() - datetime.fromisoformat(beat).replace(tzinfo=UTC)).total_seconds()
