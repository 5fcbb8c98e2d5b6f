"""``manage.py benchtrader`` runs end to end and prints its table (figures are not judged here)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.processes import manage, project_env


def test_a_small_run_prints_every_field_with_exact_books_and_every_row(tmp_path: Path) -> None:
    env = project_env(tmp_path)
    args = ("--markets", "3", "--messages", "300", "--consoles", "2", "--rate", "200", "--console-seconds", "1")
    result = manage(env, "benchtrader", *args, "--rounds", "2", timeout=200)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "\nSQLite\n" in out and "PostgreSQL" not in out
    header = next(line for line in out.splitlines() if line.strip().startswith("markets"))
    for column in (
        "limit msgs/s",
        "trader msgs/s",
        "of limit",
        "spread",
        "launch->ready",
        "peak RSS",
        "rows recorded/sent",
        "books (recording)",
        "tops (heartbeat)",
        "console p50/p99",
    ):
        assert column in header
    assert "; 2 rounds, each row the median run" in out
    [row] = [line for line in out.splitlines() if re.match(r"\s+3 ", line)]  # one row for the case's two runs
    assert re.search(r" \d+\.\d-\d+\.\d% ", row), row  # the spread of the ratio over the rounds
    # 3 snapshots, 300 flood deltas and 200 paced ones: every one recorded, every book exact.
    assert re.search(r" 503/503 +exact +exact ", row), row
    assert re.search(r"\d+/\d+ ms", row), row
    assert " ! " not in out


def test_help_explains_every_option(tmp_path: Path) -> None:
    result = manage(project_env(tmp_path), "benchtrader", "--help")

    assert result.returncode == 0
    for option in ("--markets", "--messages", "--postgres", "--no-sqlite", "--consoles", "--rate"):
        assert option in result.stdout
    for option in ("--console-seconds", "--rounds", "--seed", "--keep"):
        assert option in result.stdout


def test_a_bad_option_is_refused_with_one_line(tmp_path: Path) -> None:
    env = project_env(tmp_path)

    rounds = manage(env, "benchtrader", "--rounds", "0")
    markets = manage(env, "benchtrader", "--markets", "ten")

    assert [rounds.returncode, markets.returncode] == [1, 1]
    assert rounds.stderr.strip().splitlines() == ["CommandError: --rounds must be at least 1; got 0"]
    assert markets.stderr.strip().splitlines() == ["CommandError: --markets must be comma-separated numbers; got 'ten'"]
