"""``manage.py benchtrader`` runs end to end and prints its table (figures are not judged here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from apps.workbench.management.commands.benchtrader import CaseResult, median_runs
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
        "CPU/msg",
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
    assert re.search(r" \d+\.\d us ", row), row
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


def run(database: str, markets: int, trader_rate: float, **fields: Any) -> CaseResult:
    """One round's result of a case, every row recorded and every book exact unless ``fields`` say otherwise."""
    exact = {"messages_sent": 1010, "rows_recorded": 1010, "books_recorded_exact": markets, "tops_exact": markets}
    return CaseResult(database, markets, limit_rate=100_000.0, trader_rate=trader_rate, **{**exact, **fields})


def test_rounds_give_each_case_its_median_run_the_spread_and_the_worst_exactness() -> None:
    runs = [
        run("SQLite", 10, 40_000.0),
        run("SQLite", 10_000, 20_000.0),
        run("SQLite", 10, 30_000.0, problems=["the trader exited 1"]),
        run("SQLite", 10_000, 25_000.0, rows_recorded=1009, books_recorded_exact=9_999),
        run("SQLite", 10, 50_000.0),
        run("SQLite", 10_000, 22_000.0),
    ]

    medians, spreads = median_runs(runs)

    assert [(r.markets, r.trader_rate) for r in medians] == [(10, 40_000.0), (10_000, 22_000.0)]
    assert spreads == {("SQLite", 10): (0.3, 0.5), ("SQLite", 10_000): (0.2, 0.25)}
    assert medians[0].problems == ["the trader exited 1"]
    # A row lost or a book wrong in any round shows in the case's row, whichever run is the median.
    assert (medians[1].rows_recorded, medians[1].books_recorded_exact) == (1009, 9_999)
