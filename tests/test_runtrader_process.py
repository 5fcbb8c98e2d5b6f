"""runtrader as a user starts it: one process serving the console, the trader and the built-in exchange."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.processes import first_run_env, http_get, project_env, shell_line, start_runtrader
from tests.support import eventually_blocking


def test_runtrader_serves_the_console_reaches_ready_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    trader = start_runtrader(first_run_env(tmp_path), "--port", "0")
    assert (tmp_path / "sim_private_key.pem").exists(), "a first start makes the simulator's key pair"
    try:
        base = trader.base_url
        # Ready, with a fresh heartbeat. How fast is benchtrader's to measure (its launch->ready column): on a
        # machine busy with the rest of the suite a start can take seconds.
        eventually_blocking(lambda: http_get(f"{base}/v3/health")[0] == 200, what="healthy")
        health = http_get(f"{base}/v3/health")
        assert json.loads(health[1])["status"] == "healthy"

        status, page = http_get(trader.console_url)
        assert status == 200
        assert 'id="state-badge"' in page
        assert http_get(f"{base}/static/console/main.js")[0] == 200

        status, body = http_get(f"{base}/v3/status")
        document = json.loads(body)
        assert document["state"] == "ready"
        assert document["market_counts"]["total"] == 3
        _, body = http_get(f"{base}/v3/status?markets=1")
        assert len(json.loads(body)["markets"]) == 3
        assert document["metrics"]["snapshots_received"] == 3

        history = _first_ws_message(base.replace("http://", "ws://") + "/v3/ws", origin=base)
        assert history["type"] == "history_replay"
        assert history["data"]["transitions"][-1]["to_state"] == "ready"
    finally:
        code, stderr = trader.stop()
    assert code == 0, stderr
    assert "ready → shutdown | received SIGTERM" in stderr
    assert "Traceback" not in stderr


def session_written(tmp_path: Path) -> bool:
    """Whether the trader has opened its session: it is starting, and may not be ready yet."""
    with sqlite3.connect(tmp_path / "trader.sqlite3") as db:
        return bool(db.execute("select count(*) from trader_tradingsession").fetchone()[0])


def _first_ws_message(url: str, *, origin: str) -> dict[str, Any]:
    from websockets.sync.client import connect
    from websockets.typing import Origin

    with connect(url, origin=Origin(origin), open_timeout=5) as ws:
        message: dict[str, Any] = json.loads(ws.recv(timeout=5))
        return message


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_before_ready_still_closes_the_session(tmp_path: Path, sig: signal.Signals) -> None:
    env = project_env(tmp_path)
    trader = start_runtrader(env, "--no-web")
    eventually_blocking(lambda: session_written(tmp_path), seconds=20, what="the session row")
    code, stderr = trader.stop(sig)
    assert code == 0, stderr
    row = "from apps.trader.models import TradingSession as T; s = T.objects.get(); print(s.status, s.current_state)"
    assert shell_line(env, row) == "stopped shutdown"


def test_a_sigterm_the_moment_the_console_is_announced_still_exits_0_and_closes_the_session(tmp_path: Path) -> None:
    env = project_env(tmp_path)
    trader = start_runtrader(env, "--port", "0")
    code, stderr = trader.stop(signal.SIGTERM)
    assert code == 0, stderr
    row = "from apps.trader.models import TradingSession as T; s = T.objects.get(); print(s.status, s.current_state)"
    assert shell_line(env, row) == "stopped shutdown"


def orders_by_status(tmp_path: Path) -> dict[str, int]:
    with sqlite3.connect(tmp_path / "trader.sqlite3") as db:
        return dict(db.execute("select status, count(*) from trader_order group by status").fetchall())


def test_sigterm_cancels_the_strategys_resting_orders_before_the_session_closes(tmp_path: Path) -> None:
    trader = start_runtrader(project_env(tmp_path), "--no-web", "--strategy", "tests.trading.strategies.RestingBids")
    try:
        eventually_blocking(lambda: orders_by_status(tmp_path).get("resting") == 3, what="three bids resting")
    finally:
        code, stderr = trader.stop(signal.SIGTERM)
    assert code == 0, stderr
    assert "trading_ready → shutdown | received SIGTERM" in stderr
    # Each row's last state is the exchange's answer to the cancel, written before the session closed.
    assert orders_by_status(tmp_path) == {"canceled": 3}
    with sqlite3.connect(tmp_path / "trader.sqlite3") as db:
        assert db.execute("select status from trader_tradingsession").fetchall() == [("stopped",)]
    assert "Traceback" not in stderr
