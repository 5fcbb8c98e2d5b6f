"""``manage.py soak`` is a benchmark; these only prove it runs end to end and prints its report.

Figures (RSS, growth) are not checked here: timing and memory goals belong to the command's own output.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.processes import manage, migrate, project_env

ROW = re.compile(r"^\s+\d+:\d\d\s+\d+\.\d\s+(warm-up|[+-]\d+\.\d %)(\s+[\d,]+){6}\s+\w+$")


def test_it_runs_the_trader_under_faults_and_reports_memory_books_and_rows(tmp_path: Path) -> None:
    env = project_env(tmp_path)
    migrate(env)

    result = manage(
        env,
        *("soak", "--minutes", "0.05", "--rate", "500", "--faults", "--fault-period", "1"),
        *("--interval", "1", "--warmup", "1", "--heal-timeout", "60"),
        timeout=180,
    )

    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Soak: 0.05 min at 500 msgs/s, with faults")
    assert lines[2].startswith("Trader: runtrader pid ")
    assert lines[3].split() == [
        "time",
        "RSS",
        "MB",
        "growth",
        "msgs/s",
        "deltas",
        "gaps",
        "reconnects",
        "recorded",
        "backlog",
        "state",
    ]
    rows = [line for line in lines if ROW.match(line)]
    assert len(rows) >= 2, result.stdout
    assert any(line.startswith("RSS: ") and "% (target < 5 %" in line for line in lines)
    assert any(line.startswith("Books: exact: 3 markets") for line in lines), result.stdout
    assert any(line.startswith("Recorded: ") and line.count("nothing lost") == 1 for line in lines), result.stdout
    assert "Shutdown: runtrader exited 0" in lines
    assert (tmp_path / "soak-trader.log").read_text().count("STATE TRANSITION") >= 3


def test_help_explains_every_option(tmp_path: Path) -> None:
    result = manage(project_env(tmp_path), "soak", "--help")

    assert result.returncode == 0
    for option in ("--minutes", "--rate", "--faults", "--fault-period", "--markets", "--interval", "--warmup"):
        assert option in result.stdout
    for option in ("--seed", "--heal-timeout", "--log"):
        assert option in result.stdout


def test_it_refuses_a_bad_option_with_one_line(tmp_path: Path) -> None:
    result = manage(project_env(tmp_path), "soak", "--minutes", "0")

    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == ["CommandError: --minutes must be a positive number; got 0.0"]
