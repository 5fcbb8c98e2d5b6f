"""Typed readers for settings that record every malformed value instead of stopping at the first.

Settings read each variable through one ``SettingsReader``; a malformed value becomes a one-line problem
naming the variable (never echoing a secret) and a safe default, so the whole module still loads and every
problem is reported in one run. ``settings.py`` raises ``SettingsProblems`` at its end if there were any.
"""

from __future__ import annotations

import builtins
import math
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import SplitResult, urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

_TRUE = frozenset({"1", "true", "yes", "on", "y", "t"})
_FALSE = frozenset({"0", "false", "no", "off", "n", "f", ""})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DATABASE_SCHEMES = ("postgres", "postgresql", "pgsql", "sqlite")
REDIS_SCHEMES = ("redis", "rediss", "unix")
T = TypeVar("T")
_GROUP_PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,50}")


class SettingsProblems(ImproperlyConfigured):
    """Every malformed setting of one load; ``problems`` holds one line per setting."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def exit_on_problems(exc: ImproperlyConfigured) -> NoReturn:
    """Print each problem as one ``configuration error:`` line and exit 2: an operator's answer, no traceback."""
    for problem in getattr(exc, "problems", None) or [str(exc)]:
        print(f"configuration error: {problem}", file=sys.stderr)
    sys.exit(2)


def url_port_problem(parts: SplitResult) -> str | None:
    """Why the URL's port is not 1..65535, or None when it is fine or absent."""
    try:
        port = parts.port
    except ValueError:
        return "its port must be a number 1..65535"
    if port == 0:
        return "its port must be 1..65535"
    return None


def or_exit_on_problems(load: Callable[[], T]) -> T:
    """``load()``, or the problems printed and exit 2 when the settings are malformed."""
    try:
        return load()
    except ImproperlyConfigured as exc:
        exit_on_problems(exc)


class SettingsReader:
    """``environ.Env`` with typed, range-checked readers that record problems instead of raising."""

    def __init__(self, env: environ.Env) -> None:
        self.env = env
        self.problems: builtins.list[builtins.str] = []

    def problem(self, message: builtins.str) -> None:
        self.problems.append(message)

    def raise_problems(self) -> None:
        if self.problems:
            raise SettingsProblems(self.problems)

    def read_env(self, path: Path) -> None:
        self.env.read_env(path, overwrite=False)

    def is_set(self, name: builtins.str) -> builtins.bool:
        """Whether the variable was given at all (in the environment or an env file), even empty."""
        return name in self.env.ENVIRON

    def str(self, name: builtins.str, default: builtins.str = "") -> builtins.str:
        return str(self.env.str(name, default=default))

    def secret(self, name: builtins.str, default: builtins.str = "") -> builtins.str:
        """A secret: never part of a problem. Surrounding whitespace or control characters are refused."""
        value = self.str(name, default)
        if value and (value != value.strip() or any(ord(c) < 32 or c == "\x7f" for c in value)):
            self.problem(f"{name} must not contain whitespace at either end or control characters (value hidden)")
        return value

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        raw = self.env.str(name, default="")
        if raw == "":
            return default
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return False
        self.problem(f"{name} must be true or false (1/0, yes/no, on/off); got {raw[:40]!r}")
        return default

    def list(self, name: builtins.str, default: builtins.list[builtins.str]) -> builtins.list[builtins.str]:
        return list(self.env.list(name, default=default))

    def hosts(self, name: builtins.str, default: builtins.list[builtins.str]) -> builtins.list[builtins.str]:
        """Host names as Django's ALLOWED_HOSTS takes them: ``trader.example.com``, ``.example.com``, ``*``."""
        hosts = self.list(name, default)
        for host in hosts:
            if not host or "://" in host or "/" in host or any(c.isspace() for c in host):
                self.problem(f"{name} lists host names such as trader.example.com, not URLs; got {host[:60]!r}")
                break
        return hosts

    def origins(self, name: builtins.str) -> builtins.list[builtins.str]:
        """Origins as Django's CSRF_TRUSTED_ORIGINS takes them: ``https://trader.example.com``."""
        origins = self.list(name, [])
        for origin in origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                self.problem(f"{name} lists origins such as https://trader.example.com; got {origin[:60]!r}")
                break
        return origins

    def int(
        self,
        name: builtins.str,
        default: builtins.int,
        *,
        minimum: builtins.int | None = None,
        maximum: builtins.int | None = None,
    ) -> builtins.int:
        raw = self.str(name, str(default)).strip()
        try:
            value = int(raw)
        except ValueError:
            self.problem(f"{name} must be a whole number; got {raw[:40]!r}")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.problem(f"{name} must be {minimum}..{maximum}; got {value}")
            return default
        return value

    def float(self, name: builtins.str, default: builtins.float, *, minimum: builtins.float = 0.0) -> builtins.float:
        """A finite number of at least ``minimum`` (nan and inf would switch timers off silently)."""
        raw = self.str(name, str(default)).strip()
        try:
            value = float(raw)
        except ValueError:
            self.problem(f"{name} must be a number; got {raw[:40]!r}")
            return default
        if not math.isfinite(value):
            self.problem(f"{name} must be a finite number; got {raw[:40]!r}")
            return default
        if value < minimum:
            self.problem(f"{name} must be at least {minimum:g}; got {raw[:40]!r}")
            return default
        return value

    def choice(self, name: builtins.str, default: builtins.str, choices: Sequence[builtins.str]) -> builtins.str:
        """One of ``choices``, matched without regard to case; returned as spelled in ``choices``."""
        raw = self.str(name, default).strip()
        for choice in choices:
            if raw.upper() == choice.upper():
                return choice
        listed = ", ".join(c for c in choices if c) + (" or empty" if "" in choices else "")
        self.problem(f"{name} must be one of {listed}; got {raw[:40]!r}")
        return default

    def group_prefix(self, name: builtins.str, default: builtins.str) -> builtins.str:
        """A prefix for channel-layer names: ASCII letters, digits, '-', '_' and '.', short enough for groups."""
        value = self.str(name, default)
        if not _GROUP_PREFIX.fullmatch(value):
            self.problem(f"{name} must be 1..50 ASCII letters, digits, '-', '_' or '.'; got {value[:60]!r}")
            return default
        return value

    def log_level(self, name: builtins.str, default: builtins.str = "INFO") -> builtins.str:
        return self.choice(name, default, LOG_LEVELS)

    def directory(self, name: builtins.str, default: Path) -> Path:
        """A directory that exists (created if missing) and that this process can write into."""
        path = Path(self.str(name, str(default))).expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            self.problem(f"{name} must be a directory; {str(path)!r} is a file")
            return path
        except OSError as exc:
            self.problem(f"{name}: cannot create {str(path)!r}: {exc.strerror}")
            return path
        if not path.is_dir():
            self.problem(f"{name} must be a directory; {str(path)!r} is not one")
            return path
        # os.access says yes to root everywhere; a real file says whether writing works.
        try:
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as exc:
            self.problem(f"{name}: {str(path)!r} is not writable: {exc.strerror}")
        return path

    def database(self, name: builtins.str, default: builtins.str) -> builtins.dict[builtins.str, Any]:
        """Django's DATABASES entry for the URL. Problems never show the URL: it may carry a password."""
        url = self.str(name, default).strip()
        parts = urlsplit(url)
        fallback: builtins.dict[builtins.str, Any] = environ.Env.db_url_config(default)
        example = "postgres://user@host:5432/name or sqlite:////absolute/path.sqlite3"
        if parts.scheme not in DATABASE_SCHEMES:
            self.problem(f"{name} must be a database URL like {example} (value hidden: it may hold a password)")
            return fallback
        port = url_port_problem(parts)
        if port:
            self.problem(f"{name}: {port}")
            return fallback
        config: builtins.dict[builtins.str, Any] = environ.Env.db_url_config(url)
        if not config.get("NAME"):
            self.problem(f"{name} must name a database, like {example}")
            return fallback
        return config

    def redis_url(self, name: builtins.str) -> builtins.str:
        """A Redis URL (redis://, rediss:// or unix://), or empty for none. The value is never shown."""
        url = self.str(name, "").strip()
        if not url:
            return ""
        parts = urlsplit(url)
        if parts.scheme not in REDIS_SCHEMES or not (parts.hostname if parts.scheme != "unix" else parts.path):
            self.problem(f"{name} must be a redis://host:port/db, rediss:// or unix:// URL (value hidden)")
            return ""
        port = url_port_problem(parts)
        if port:
            self.problem(f"{name}: {port}")
            return ""
        # redis-py reads a malformed database number as 0 without a word: another database's data.
        if parts.scheme != "unix" and not re.fullmatch(r"/?(\d+)?", parts.path):
            self.problem(f"{name}: the path must be a database number, like redis://host:6379/0")
            return ""
        return url
