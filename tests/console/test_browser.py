"""The console page in a real headless Chromium, against runtrader started as a user starts it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.processes import project_env, start_runtrader, wait_until_healthy

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LIVE_ROW = re.compile(r'<tr class="market-row[^"]*" data-ticker="([^"]+)" data-stale="false"')


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail("REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)")
        pytest.skip("needs chromium (apt-get install chromium); .ci/run installs it")
    return CHROMIUM


def rendered_dom(chromium: str, url: str) -> str:
    """The page's DOM after its scripts ran for a few seconds of (virtual) time."""
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--virtual-time-budget=4000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_the_console_shows_the_trader_live(tmp_path: Path, chromium: str) -> None:
    trader = start_runtrader(project_env(tmp_path), "--port", "0")
    try:
        wait_until_healthy(trader.base_url)
        # Virtual time runs ahead of the page's real socket on a loaded machine: look up to three times.
        for _ in range(3):
            dom = rendered_dom(chromium, trader.console_url)
            if LIVE_ROW.search(dom) and 'data-health="healthy"' in dom:
                break
    finally:
        trader.stop()

    assert re.search(r'id="state-badge"[^>]*data-state="ready"', dom)
    assert re.search(r'id="socket-indicator"[^>]*data-socket="connected"', dom)
    assert re.search(r'id="health-badge"[^>]*data-health="healthy"', dom)
    rows = LIVE_ROW.findall(dom)
    assert len(rows) == 3
    # Best bids and asks as Kalshi writes them: a 4-decimal price times a 2-decimal size.
    assert len(re.findall(r'<span class="px">\d\.\d{4}</span>', dom)) >= 6
    assert len(re.findall(r'<span class="sz">\d+\.\d{2}</span>', dom)) >= 6
    # The session's history was replayed into the console, in the product's line format.
    assert re.search(
        r'STATE TRANSITION: <span class="st" data-state="kalshi_connectivity_orderbook_client">'
        r'kalshi_connectivity_orderbook_client</span> → <span class="st" data-state="ready">ready</span>',
        dom,
    )
    assert "Context: Orderbooks live for 3 markets" in dom
