"""Each environment keeps its history in its own SQLite file unless DATABASE_URL says otherwise."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from tests.processes import ForkedProcess, manage, project_env, shell_line
from tests.support import eventually_blocking

PRINT_DATABASE = "from django.conf import settings; print(settings.DATABASES['default']['NAME'])"


def default_database(tmp_path: Path, **extra: str) -> str:
    env = project_env(tmp_path, **extra)
    del env["DATABASE_URL"]
    return shell_line(env, PRINT_DATABASE)


def test_sim_and_local_default_to_files_of_their_own_in_the_data_folder(tmp_path: Path) -> None:
    assert default_database(tmp_path) == str(tmp_path / "trader-sim.sqlite3")
    assert default_database(
        tmp_path, ENVIRONMENT="local", SECRET_KEY="a-local-secret-key-of-fifty-characters-or-more-0123456789"
    ) == str(tmp_path / "trader-local.sqlite3")


def test_database_url_still_wins(tmp_path: Path) -> None:
    chosen = tmp_path / "chosen.sqlite3"
    env = project_env(
        tmp_path,
        ENVIRONMENT="local",
        SECRET_KEY="a-local-secret-key-of-fifty-characters-or-more-0123456789",
        DATABASE_URL=f"sqlite:///{chosen}",
    )
    assert shell_line(env, PRINT_DATABASE) == str(chosen)


def sessions_in(database: Path) -> int:
    with contextlib.closing(sqlite3.connect(database)) as db:
        return int(db.execute("SELECT count(*) FROM trader_tradingsession").fetchone()[0])


def test_runtrader_brings_its_own_file_up_to_date_on_a_fresh_data_folder(tmp_path: Path) -> None:
    env = project_env(tmp_path)
    del env["DATABASE_URL"]
    process = ForkedProcess(env, ("runtrader", "--no-web"))
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("Database: applied ") and first.rstrip().endswith(
            f"migration(s) to {tmp_path / 'trader-sim.sqlite3'}"
        ), first + (process.stderr.read() if process.poll() is not None and process.stderr else "")
        eventually_blocking(
            lambda: sessions_in(tmp_path / "trader-sim.sqlite3") == 1,
            seconds=30,
            what="the session to be recorded in the new file",
        )
    finally:
        process.terminate()
        code = process.wait(timeout=30)
    assert code == 0


def test_a_database_url_without_migrations_is_refused_with_the_command_to_run(tmp_path: Path) -> None:
    env = project_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}")
    result = manage(env, "runtrader", "--no-web", timeout=60)
    assert result.returncode == 2
    assert "run `ENVIRONMENT=sim python manage.py migrate` with the same DATABASE_URL" in result.stderr
