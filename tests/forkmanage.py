"""Runs many short ``manage.py`` commands, each in a process of its own forked from one that imported the libraries.

A fresh interpreter spends most of a short run importing Django, Twisted and cryptography; a fork of a process
that imported them once skips that and nothing else: each run still loads the project's settings and its Django
apps itself, from its own environment and arguments, and exits with its own code. The parent also imports the
project's Django-free layers (the Kalshi protocol, the exchange simulator, the trader's core and its
configuration rules), which read no settings and no environment when imported. The parent configures nothing
(it checks that before forking), so what a run prints is what ``python manage.py`` prints.

Protocol, one JSON object a line: ``{"id", "args": [...], "env": {...}, "timeout": seconds}`` from a client, and
``{"id", "returncode", "stdout", "stderr", "timed_out"}`` back to it when that run has ended (runs end in any
order). A request with ``"pipes": [stdout, stderr]`` (named pipes its requester reads) is answered
``{"id", "pid"}`` at once and its end carries no output. The client is stdin and stdout; with ``--listen PATH``,
every connection to the Unix socket at PATH is one (a whole test run shares one server: its workers would each
pay for the imports otherwise), and stdin only tells, by closing, that the run is over. A client that goes away
takes its runs with it; when stdin closes, the server kills what still runs and ends.
"""

from __future__ import annotations

import gc
import importlib
import itertools
import json
import os
import runpy
import selectors
import signal
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
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
    "django.db.backends.sqlite3.base",
    "django.db.migrations.executor",
    "django.db.migrations.autodetector",
    "django.core.management.commands.migrate",
    "django.contrib.admin.views.main",
    "django.contrib.auth.hashers",
    "django.contrib.staticfiles.finders",
    "django.contrib.sessions.backends.base",
    "django.middleware.common",
    "django.middleware.security",
    "django.template.defaulttags",
    "django.template.loader_tags",
    "django.views.debug",
    "channels.layers",
    "channels.db",
    "daphne.http_protocol",
    "daphne.ws_protocol",
    "twisted.web.http",
    "prometheus_client",
    "h11",
    "statistics",
    "http.server",
    "wsgiref.simple_server",
    "sqlite3",
    "multiprocessing",
)
PROJECT_PRELOAD = (
    "apps.kalshi.client",
    "apps.kalshi.crosscheck",
    "apps.kalshi.discovery",
    "apps.kalshi.privatefeed",
    "apps.kalshi.rest",
    "apps.kalshi.trading",
    "apps.exchange.keys",
    "apps.exchange.simulator",
    "apps.exchange.stream",
    "apps.trader.core.coordinator",
    "apps.trader.core.trading.engine",
    "apps.trader.core.trading.loading",
    "apps.trader.config",
)
"""The project's layers that import no Django model and read settings only when called (checked below): a
trader's start-up spends most of its import time on them, building their dataclasses."""
DJANGO_FREE = ("apps.kalshi", "apps.exchange", "apps.trader.core", "apps.trader.config")
PARALLEL = 8
"""Runs at once: enough to overlap the ones that wait on a silent port."""


def preload() -> None:
    for name in (*PRELOAD, *PROJECT_PRELOAD):
        importlib.import_module(name)
    from django.apps import apps
    from django.conf import settings

    assert not settings.configured, "a preloaded module read the settings"
    assert not apps.ready, "a preloaded module loaded the Django apps"
    assert "twisted.internet.reactor" not in sys.modules, "a preloaded module installed a Twisted reactor"
    project = [name for name in sys.modules if name.split(".")[0] in ("apps", "trader_v3")]
    beyond = [name for name in project if name not in ("apps", "apps.trader") and not name.startswith(DJANGO_FREE)]
    assert not beyond, f"a preloaded module imported more of the project: {beyond}"
    # What exists now is shared with every run: leave it out of their garbage collections (and so unwritten, not
    # copied page by page into each of them).
    gc.freeze()


def child(args: list[str], env: dict[str, str], out: int | str, err: int | str) -> None:
    """In the fork: become ``python manage.py ARGS`` with ``env``, writing to files or named pipes (paths, opened
    here: opening one waits for its reader); never returns."""
    code: Any = 0
    try:
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # stdin is the requests' pipe: never the run's
        os.dup2(os.open(out, os.O_WRONLY) if isinstance(out, str) else out, 1)
        os.dup2(os.open(err, os.O_WRONLY) if isinstance(err, str) else err, 2)
        if isinstance(out, str):
            sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # a reader waits on lines
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


@dataclass
class Client:
    """One requester: where its requests come from and its answers go."""

    read_fd: int
    write_fd: int
    unread: bytes = b""

    def reply(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message) + "\n").encode()
        try:
            while data:
                data = data[os.write(self.write_fd, data) :]
        except OSError:
            pass  # it went away; its runs are being killed


@dataclass
class Run:
    client: Client
    request: dict[str, Any]
    pid: int
    stdout: BinaryIO | None
    """None when the run writes to its requester's named pipes."""
    stderr: BinaryIO | None
    deadline: float
    killed: bool = False


def listening(path: str) -> socket.socket:
    """The Unix socket the run's clients connect to, at ``path``."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    return server


def serve(server: socket.socket | None) -> None:
    """Serve the client on stdin and stdout, or (with ``server``) every client that connects to it."""
    waiting: list[tuple[Client, dict[str, Any]]] = []
    running: dict[int, Run] = {}  # by pidfd, which turns readable when its process exits
    clients: dict[int, Client] = {}  # by the fd its requests come from
    lifeline = sys.stdin.fileno()
    numbers = itertools.count()  # names the files of runs
    with tempfile.TemporaryDirectory(prefix="forkmanage-") as scratch, selectors.DefaultSelector() as events:
        if server is None:
            clients[lifeline] = Client(lifeline, sys.stdout.fileno())
        else:
            events.register(server, selectors.EVENT_READ)
        events.register(lifeline, selectors.EVENT_READ)
        open_requests = True

        def drop(client: Client) -> None:
            """The client went away: so do its waiting and running runs."""
            events.unregister(client.read_fd)
            del clients[client.read_fd]
            waiting[:] = [(c, r) for c, r in waiting if c is not client]
            for run in running.values():
                if run.client is client and not run.killed:
                    os.kill(run.pid, signal.SIGKILL)
                    run.killed = True
            if client.read_fd != lifeline:
                os.close(client.read_fd)

        while open_requests or waiting or running:
            # Runs that stream to named pipes start at once (they may run as long as their test); the others
            # take turns, PARALLEL at a time.
            for client, request in sorted(waiting, key=lambda entry: "pipes" not in entry[1]):
                if "pipes" not in request and len(running) >= PARALLEL:
                    break
                waiting.remove((client, request))
                sys.stdout.flush()
                sys.stderr.flush()
                if "pipes" in request:
                    out = err = None
                    pid = os.fork()
                    if pid == 0:
                        child(request["args"], request["env"], *request["pipes"])
                    client.reply({"id": request["id"], "pid": pid})
                else:
                    number = next(numbers)
                    out = open(Path(scratch) / f"{number}.out", "w+b")  # noqa: SIM115 (closed when it ends)
                    err = open(Path(scratch) / f"{number}.err", "w+b")  # noqa: SIM115
                    pid = os.fork()
                    if pid == 0:
                        child(request["args"], request["env"], out.fileno(), err.fileno())
                pidfd = os.pidfd_open(pid)
                events.register(pidfd, selectors.EVENT_READ)
                deadline = time.monotonic() + float(request.get("timeout", 60))
                running[pidfd] = Run(client, request, pid, out, err, deadline)
            nearest = min((run.deadline for run in running.values()), default=None)
            ready = events.select(timeout=None if nearest is None else max(0.0, nearest - time.monotonic()))
            for run in running.values():
                if time.monotonic() > run.deadline and not run.killed:
                    os.kill(run.pid, signal.SIGKILL)
                    run.killed = True
            for key, _ in ready:
                if server is not None and key.fileobj is server:
                    connection, _ = server.accept()
                    fd = connection.detach()
                    clients[fd] = Client(fd, fd)
                    events.register(fd, selectors.EVENT_READ)
                    continue
                if server is not None and key.fd == lifeline:
                    if not os.read(lifeline, 1 << 16):  # the run is over
                        open_requests = False
                        events.unregister(lifeline)
                        events.unregister(server)
                        server.close()
                        for client in list(clients.values()):
                            drop(client)
                    continue
                if key.fd in clients:
                    client = clients[key.fd]
                    chunk = os.read(client.read_fd, 1 << 16)
                    if not chunk:
                        if client.read_fd == lifeline:
                            open_requests = False
                        drop(client)
                        continue
                    *lines, client.unread = (client.unread + chunk).split(b"\n")
                    waiting.extend((client, json.loads(line)) for line in lines)
                    continue
                run = running.pop(key.fd)
                events.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(run.pid, 0)
                result: dict[str, Any] = {"id": run.request["id"], "returncode": os.waitstatus_to_exitcode(status)}
                for name, stream in (("stdout", run.stdout), ("stderr", run.stderr)):
                    if stream is not None:
                        stream.seek(0)
                        result[name] = stream.read().decode(errors="replace")
                        stream.close()
                result["timed_out"] = run.killed
                if clients.get(run.client.read_fd) is run.client:
                    run.client.reply(result)


if __name__ == "__main__":
    # Bound before the imports: clients may connect at once, and are read once the imports are done.
    shared = listening(sys.argv[2]) if sys.argv[1:2] == ["--listen"] else None
    preload()
    serve(shared)
