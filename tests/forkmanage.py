"""Runs many short ``manage.py`` commands, each in a process of its own forked from one that imported the libraries.

A fresh interpreter spends most of a short run importing Django, Twisted and cryptography; a fork of a process
that imported them once skips that and nothing else: each run still loads the project's settings and code
itself, from its own environment and arguments, and exits with its own code. The parent configures nothing
(it checks that before forking), so what a run prints is what ``python manage.py`` prints.

Protocol: a JSON list of ``{"args": [...], "env": {...}, "timeout": seconds}`` on stdin; a JSON list of
``{"returncode", "stdout", "stderr"}`` in the same order on stdout.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import selectors
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, BinaryIO

ROOT = Path(__file__).resolve().parents[1]

# Libraries only: none of them reads settings or installs a Twisted reactor on import (checked below).
PRELOAD = (
    "asyncio",
    "django.core.management",
    "django.db.models",
    "django.http",
    "django.urls",
    "django.core.serializers.json",
    "django.contrib.admin.options",
    "twisted.internet.tcp",
    "twisted.internet.asyncioreactor",
    "autobahn.twisted.websocket",
    "OpenSSL.SSL",
    "cryptography.x509",
    "cryptography.hazmat.primitives.asymmetric.rsa",
    "psycopg",
    "redis.asyncio",
    "websockets.asyncio.client",
    "websockets.asyncio.server",
    "httpx",
    "environ",
    "orjson",
    "sqlparse",
)
PARALLEL = 8
"""Runs at once: enough to overlap the ones that wait on a silent port."""


def preload() -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    from django.conf import settings

    assert not settings.configured, "a preloaded module read the settings"
    assert "twisted.internet.reactor" not in sys.modules, "a preloaded module installed a Twisted reactor"
    assert not any(name.split(".")[0] in ("apps", "trader_v3") for name in sys.modules), "the project was imported"


def child(args: list[str], env: dict[str, str], out: int, err: int) -> None:
    """In the fork: become ``python manage.py ARGS`` with ``env``; never returns."""
    code: Any = 0
    try:
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.environ.clear()
        os.environ.update(env)
        os.chdir(ROOT)
        sys.argv = ["manage.py", *args]
        runpy.run_path(str(ROOT / "manage.py"), run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr, flush=True)
            code = 1
        os._exit(code)


def run_all(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    waiting = list(enumerate(runs))
    running: dict[int, tuple[int, int, BinaryIO, BinaryIO, float]] = {}  # pidfd -> index, pid, out, err, deadline
    with tempfile.TemporaryDirectory(prefix="forkmanage-") as scratch, selectors.DefaultSelector() as exits:
        while waiting or running:
            while waiting and len(running) < PARALLEL:
                index, run = waiting.pop(0)
                out = open(Path(scratch) / f"{index}.out", "w+b")  # noqa: SIM115 (closed when the run ends)
                err = open(Path(scratch) / f"{index}.err", "w+b")  # noqa: SIM115
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    child(run["args"], run["env"], out.fileno(), err.fileno())
                pidfd = os.pidfd_open(pid)
                exits.register(pidfd, selectors.EVENT_READ)
                running[pidfd] = (index, pid, out, err, time.monotonic() + float(run.get("timeout", 60)))
            # A pidfd turns readable when its process exits.
            nearest = min(deadline for *_, deadline in running.values())
            ready = exits.select(timeout=max(0.0, nearest - time.monotonic()))
            if not ready:
                for _, pid, _, _, deadline in running.values():
                    if time.monotonic() > deadline:
                        os.kill(pid, signal.SIGKILL)
                continue
            for key, _ in ready:
                index, pid, stdout, stderr, _ = running.pop(key.fd)
                exits.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                result = results[index] = {"returncode": os.waitstatus_to_exitcode(status)}
                for name, stream in (("stdout", stdout), ("stderr", stderr)):
                    stream.seek(0)
                    result[name] = stream.read().decode(errors="replace")
                    stream.close()
    return [results[index] for index in range(len(runs))]


def main() -> None:
    runs = json.load(sys.stdin)
    preload()
    json.dump(run_all(runs), sys.stdout)


if __name__ == "__main__":
    main()
