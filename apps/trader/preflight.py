"""Before the trader starts: can it reach its database and Redis? Each answer comes within a few seconds.

Without this an unreachable PostgreSQL surfaced as a pool timeout (30 s) and a traceback. Each problem is
one line naming the variable; passwords inside the URLs are never part of it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor

CONNECT_TIMEOUT = 3
"""Seconds per service; libpq's minimum connect_timeout is 2."""


def _reason(error: BaseException, *secrets: str) -> str:
    """The error's first line, without any secret it might quote."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text.removeprefix("connection failed: ")


def database_problem(alias: str = "default", *, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """Why the database cannot be used, or None. PostgreSQL is tried directly, bypassing the pool's 30 s wait."""
    settings_dict: dict[str, Any] = connections[alias].settings_dict
    if settings_dict["ENGINE"] != "django.db.backends.postgresql":
        try:
            with connections[alias].cursor() as cursor:
                cursor.execute("select 1")
        except DatabaseError as exc:
            return f"DATABASE_URL: cannot open the database: {_reason(exc)}"
        finally:
            connections[alias].close()
        return None
    import psycopg

    password = str(settings_dict.get("PASSWORD") or "")
    where = f"{settings_dict.get('HOST') or 'localhost'}:{settings_dict.get('PORT') or 5432}"
    try:
        # The same parameters Django connects with (SSL and other OPTIONS included), without the pool.
        params = connections[alias].get_connection_params()
    except ImproperlyConfigured as exc:
        return f"DATABASE_URL: {_reason(exc, password)}"
    params["connect_timeout"] = max(2, round(timeout))
    try:
        with psycopg.connect(**params) as connection:
            connection.execute("select 1")
    except psycopg.Error as exc:
        return f"DATABASE_URL: cannot connect to PostgreSQL at {where}: {_reason(exc, password)}"
    return None


def redis_problem(url: str, *, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """Why Redis at ``url`` cannot be used, or None (also None when no Redis is configured)."""
    if not url:
        return None
    import redis

    parts = urlsplit(url)
    where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"REDIS_URL: cannot connect to Redis at {where}: {_reason(exc, parts.password or '')}"
    finally:
        client.close()
    return None


def service_problems() -> list[str]:
    """Every service the trader needs that it cannot reach, one line each; both are tried at once."""
    from django.conf import settings

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="preflight") as pool:
        checks = [pool.submit(database_problem), pool.submit(redis_problem, settings.REDIS_URL)]
        return [problem for check in checks if (problem := check.result())]


def unapplied_migrations() -> list[str]:
    """Names of migrations the database still lacks; the trader cannot record into an old schema."""
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, _backwards in plan]


def uses_default_database() -> bool:
    """Whether the trader records into its environment's own SQLite file (no DATABASE_URL given)."""
    database = connections[DEFAULT_DB_ALIAS].settings_dict
    return database["ENGINE"] == "django.db.backends.sqlite3" and str(database["NAME"]) == str(
        settings.DEFAULT_DATABASE_FILE
    )


def database_up_to_date() -> tuple[str, str]:
    """Make sure the database has every migration: (what was done, for the terminal; a problem, or '').

    The environment's own SQLite file belongs to the trader: it is brought up to date here, so `--env paper`
    works on a fresh data folder. Any other database (DATABASE_URL) is only checked: migrating a shared
    PostgreSQL is the operator's call.
    """
    pending = unapplied_migrations()
    if not pending:
        return "", ""
    if uses_default_database():
        call_command("migrate", interactive=False, verbosity=0)
        return f"Database: applied {len(pending)} migration(s) to {settings.DEFAULT_DATABASE_FILE}", ""
    shown = ", ".join(pending[:3]) + (", ..." if len(pending) > 3 else "")
    return "", (
        f"DATABASE_URL: the database lacks {len(pending)} migration(s) ({shown}); run "
        f"`ENVIRONMENT={settings.ENVIRONMENT} python manage.py migrate` with the same DATABASE_URL"
    )
