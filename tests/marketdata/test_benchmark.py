"""benchrecording runs end to end on a small scale (its figures are for people, not for assertions)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.db import connection

from tests.processes import manage, run_database_url

SMALL = ["--rows", "3000", "--markets", "3", "--capacity", "500", "--batch-size", "100"]


def bench(tmp_path: Path, *args: str) -> str:
    """Run the command as a user does: its own process, its own scratch databases."""
    env = {**os.environ, "DATA_DIR": str(tmp_path), "TMPDIR": str(tmp_path)}
    result = manage(env, "benchrecording", *SMALL, *args, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_it_measures_sqlite_and_loses_nothing(tmp_path: Path) -> None:
    out = bench(tmp_path, "--no-postgres")
    assert "SQLite: 3,003 rows (3,000 deltas, 3 snapshots) in " in out
    assert "rows/s; missing 0" in out
    assert "peak RSS" in out and "peak queued" in out and "the feed waited" in out


@pytest.mark.django_db(transaction=True)
def test_it_measures_postgresql_when_there_is_one(tmp_path: Path) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL runs only: DATABASE_URL is not PostgreSQL")
    url = run_database_url()
    connection.close()
    out = bench(tmp_path, "--postgres", url)
    assert "SQLite: 3,003 rows" in out
    assert "PostgreSQL: 3,003 rows" in out
    assert out.count("missing 0") == 2
