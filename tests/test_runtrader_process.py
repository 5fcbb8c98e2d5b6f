"""runtrader as a user starts it: one process serving the console, the trader and the built-in exchange."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def django_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KALSHI_", "TRADER_", "ENVIRONMENT", "REDIS"))}
    env.update(DATA_DIR=str(tmp_path), DATABASE_URL=f"sqlite:///{tmp_path / 'trader.sqlite3'}", **extra)
    return env


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_runtrader_serves_the_console_reaches_ready_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    env = django_env(tmp_path)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-u", "manage.py", "runtrader", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        console_url = ""
        while not console_url:
            line = process.stdout.readline()
            assert line, f"runtrader ended early: {process.stderr.read() if process.stderr else ''}"
            match = re.search(r"Console: (http://\S+/v3-trader)", line)
            console_url = match.group(1) if match else ""
        base = console_url.removesuffix("/v3-trader")

        health = (0, "")
        while health[0] != 200 and time.monotonic() - started < 10:
            time.sleep(0.1)
            health = get(f"{base}/v3/health")
        assert health[0] == 200, health  # ready, with a fresh heartbeat, within 10 s of starting
        assert json.loads(health[1])["status"] == "healthy"

        status, page = get(console_url)
        assert status == 200
        assert 'id="state-badge"' in page
        assert get(f"{base}/static/console/console.js")[0] == 200

        status, body = get(f"{base}/v3/status")
        document = json.loads(body)
        assert document["state"] == "ready"
        assert len(document["markets"]) == 3
        assert document["metrics"]["snapshots_received"] == 3

        history = _first_ws_message(base.replace("http://", "ws://") + "/v3/ws", origin=base)
        assert history["type"] == "history_replay"
        assert history["data"]["transitions"][-1]["to_state"] == "ready"
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
        stderr = process.stderr.read() if process.stderr else ""
    assert code == 0, stderr
    assert "ready → shutdown | received SIGTERM" in stderr
    assert "Traceback" not in stderr


def _first_ws_message(url: str, *, origin: str) -> dict[str, Any]:
    from websockets.sync.client import connect
    from websockets.typing import Origin

    with connect(url, origin=Origin(origin), open_timeout=5) as ws:
        message: dict[str, Any] = json.loads(ws.recv(timeout=5))
        return message


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_before_ready_still_closes_the_session(tmp_path: Path, sig: signal.Signals) -> None:
    env = django_env(tmp_path)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    process = subprocess.Popen(
        [sys.executable, "-u", "manage.py", "runtrader", "--no-web"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.5)
    process.send_signal(sig)
    assert process.wait(timeout=20) == 0
    code = "from apps.trader.models import TradingSession as T; s = T.objects.get(); print(s.status, s.current_state)"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip().splitlines()[-1] == "stopped shutdown"
