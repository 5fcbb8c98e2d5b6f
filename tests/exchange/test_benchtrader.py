"""``manage.py benchtrader`` runs end to end and prints its table (figures are not judged here)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.processes import manage, project_env


def test_a_small_run_prints_every_field_with_exact_books_and_every_row(tmp_path: Path) -> None:
    env = project_env(tmp_path)
    args = ("--markets", "3", "--messages", "300", "--consoles", "2", "--rate", "200", "--console-seconds", "1")
    result = manage(env, "benchtrader", *args, timeout=200)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "\nSQLite\n" in out and "PostgreSQL" not in out
    header = next(line for line in out.splitlines() if line.strip().startswith("markets"))
    for column in (
        "limit msgs/s",
        "trader msgs/s",
        "of limit",
        "launch->ready",
        "peak RSS",
        "rows recorded/sent",
        "books (recording)",
        "tops (heartbeat)",
        "console p50/p99",
    ):
        assert column in header
    row = next(line for line in out.splitlines() if re.match(r"\s+3 ", line))
    # 3 snapshots, 300 flood deltas and 200 paced ones: every one recorded, every book exact.
    assert re.search(r" 503/503 +exact +exact ", row), row
    assert re.search(r"\d+/\d+ ms", row), row
    assert " ! " not in out
