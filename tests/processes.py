"""Running the project's commands as separate processes, the way a user or an operator does."""

from __future__ import annotations

import compileall
import fcntl
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, MutableMapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from apps.exchange.keys import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, ensure_key_pair
from tests.support import eventually_blocking

ROOT = Path(__file__).resolve().parents[1]
_CONSOLE_LINE = re.compile(r"Console: (http://\S+/v3-trader)")
_METRICS_LINE = re.compile(r"Metrics: (http://\S+/metrics)")


BYTECODE_CACHE = Path(tempfile.gettempdir()) / "trader-v3-test-bytecode"
"""Where the suite's processes keep compiled modules when the environment forbids writing them beside the
sources (PYTHONDONTWRITEBYTECODE): otherwise every worker and every one of about a hundred processes the tests
start compiles the project again, a fifth of its start-up."""


def keep_bytecode(environ: MutableMapping[str, str]) -> None:
    """Let the processes started with ``environ`` write compiled modules, outside the source tree if need be."""
    if environ.pop("PYTHONDONTWRITEBYTECODE", None) and "PYTHONPYCACHEPREFIX" not in environ:
        environ["PYTHONPYCACHEPREFIX"] = str(BYTECODE_CACHE)
        seed_bytecode_cache()


def seed_bytecode_cache() -> None:
    """Give ``BYTECODE_CACHE`` the modules the interpreter and the virtualenv were installed compiled.

    With a cache folder set, Python reads compiled modules only from there: without this, the first run after an
    install compiles the standard library and every library again, in every worker at once (about 16 s of wall
    time on two cores). Linking (or copying) is done once per installation; a module whose source changed since is
    recompiled as usual, since a compiled module records its source's size and time."""
    paths = sysconfig.get_paths()
    roots = sorted({paths["stdlib"], paths["purelib"], paths["platlib"]})
    done = BYTECODE_CACHE / f"seeded-{hashlib.sha256(repr(roots).encode()).hexdigest()[:16]}"
    if done.exists():
        return
    BYTECODE_CACHE.mkdir(parents=True, exist_ok=True)
    suffix = f".{sys.implementation.cache_tag}.pyc"
    for root in roots:
        for folder, _, names in os.walk(root):
            if os.path.basename(folder) != "__pycache__":
                continue
            target = BYTECODE_CACHE / Path(folder).parent.relative_to("/")
            target.mkdir(parents=True, exist_ok=True)
            for name in names:
                if name.endswith(suffix):
                    _link_or_copy(os.path.join(folder, name), target / name)
    done.touch()


def compile_project() -> None:
    """Compile the project's modules where the suite's processes will look for them (the cache folder, or beside
    the sources), those not compiled yet or changed since.

    Done once, before the workers start: otherwise, after a checkout or an edit, the workers, the fork server
    and the first processes the tests start all compile the same modules at once (a first run after a fresh
    clone took half as long again as the next). Test modules are left to pytest, which rewrites their asserts."""
    saved = sys.pycache_prefix
    sys.pycache_prefix = os.environ.get("PYTHONPYCACHEPREFIX") or None
    try:
        for folder in ("apps", "trader_v3", "tests"):
            compileall.compile_dir(ROOT / folder, quiet=1)
    finally:
        sys.pycache_prefix = saved


def _link_or_copy(source: str, target: Path) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        pass  # seeded by an interrupted run, or by another run at the same time
    except OSError:  # another file system
        shutil.copyfile(source, target)


def project_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without trader settings, with its own data folder and SQLite file.

    The data folder holds the simulator's key pair, as after a first run: one pair made once per test run and
    copied, since making an RSA key costs about 0.1 s of CPU in every process a test starts.
    """
    copy_sim_key_pair(tmp_path)
    return first_run_env(tmp_path, **extra)


def first_run_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """``project_env`` with an empty data folder, as before a first run: the first start makes the key pair."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KALSHI_", "TRADER_", "ENVIRONMENT", "REDIS"))}
    keep_bytecode(env)
    env.update(DATA_DIR=str(tmp_path), DATABASE_URL=f"sqlite:///{tmp_path / 'trader.sqlite3'}")
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python manage.py ARGS`` in ``env``: its own process, forked from one that imported the libraries."""
    [result] = manage_many([(env, args)], timeout=timeout)
    return result


FORK_SERVER = "TRADER_V3_TEST_FORK_SERVER"
"""The Unix socket of the test run's ``tests.forkmanage``, which all its workers share."""


def start_shared_fork_server() -> subprocess.Popen[bytes]:
    """Start the run's ``tests.forkmanage`` for the processes that inherit this environment (pytest-xdist's
    workers); it serves until its stdin closes."""
    path = shared_dir() / "forkmanage.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.forkmanage", "--listen", str(path)], cwd=ROOT, stdin=subprocess.PIPE
    )
    os.environ[FORK_SERVER] = str(path)
    return process


class _ForkServer:
    """This test process's way to ``tests.forkmanage``: the run's shared one, or else one of its own, started on
    first use and ending when this process does."""

    def __init__(self) -> None:
        self.requests: IO[str] | None = None
        self.process: subprocess.Popen[str] | None = None
        self.lock = threading.Lock()
        self.ids = itertools.count()
        self.started: dict[int, Future[int]] = {}
        self.ended: dict[int, Future[dict[str, Any]]] = {}

    def submit(
        self, env: dict[str, str], args: tuple[str, ...], timeout: float, **extra: Any
    ) -> tuple[Future[int], Future[dict[str, Any]]]:
        """Send one request; its answers: the pid (streaming runs only) and how it ended."""
        with self.lock:
            if self.requests is None:
                self.requests, answers = self._open(env)
                threading.Thread(target=self._read, args=(self.requests, answers), daemon=True).start()
            run_id = next(self.ids)
            futures: tuple[Future[int], Future[dict[str, Any]]] = (Future(), Future())
            self.started[run_id], self.ended[run_id] = futures
            request = {"id": run_id, "args": list(args), "env": env, "timeout": timeout, **extra}
            self.requests.write(json.dumps(request) + "\n")
            self.requests.flush()
            return futures

    def _open(self, env: dict[str, str]) -> tuple[IO[str], IO[str]]:
        """Where requests go and where answers come from."""
        shared = os.environ.get(FORK_SERVER)
        if shared:
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            # The server binds its socket as it starts, the first request usually comes seconds later.
            eventually_blocking(lambda: connection.connect_ex(shared) == 0, seconds=30, what="tests.forkmanage")
            return connection.makefile("w"), connection.makefile("r")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.forkmanage"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        return self.process.stdin, self.process.stdout

    def _read(self, requests: IO[str], answers: IO[str]) -> None:
        for line in answers:
            answer = json.loads(line)
            if "pid" in answer:
                self.started[answer["id"]].set_result(answer["pid"])
            else:
                self.ended.pop(answer["id"]).set_result(answer)
                self.started.pop(answer["id"], None)
        with self.lock:
            if self.requests is requests:
                self.requests = None  # the next request starts, or connects to, a server again
            pending: list[Future[Any]] = [*self.started.values(), *self.ended.values()]
        for future in pending:
            if not future.done():
                future.set_exception(AssertionError("tests.forkmanage ended"))


_fork_server = _ForkServer()


def manage_many(
    runs: list[tuple[dict[str, str], tuple[str, ...]]], timeout: float = 60
) -> list[subprocess.CompletedProcess[str]]:
    """``manage(env, *args)`` for each of ``runs``, side by side. A short command's run costs a fork of a process
    that imported the libraries once (``tests/forkmanage.py``) instead of an interpreter's start-up."""
    ended = [_fork_server.submit(env, args, timeout)[1] for env, args in runs]
    completed = []
    for (_, args), future in zip(runs, ended, strict=True):
        result = future.result()
        command = [sys.executable, "manage.py", *args]
        if result["timed_out"]:
            raise subprocess.TimeoutExpired(command, timeout, result["stdout"], result["stderr"])
        completed.append(subprocess.CompletedProcess(command, result["returncode"], result["stdout"], result["stderr"]))
    return completed


class ForkedProcess:
    """``python manage.py ARGS`` running as a fork of ``tests.forkmanage``: the part of ``subprocess.Popen`` the
    tests use (text ``stdout``/``stderr``, ``poll``, ``wait``, signals)."""

    def __init__(self, env: dict[str, str], args: tuple[str, ...]) -> None:
        self.args = [sys.executable, "manage.py", *args]
        self.returncode: int | None = None
        with tempfile.TemporaryDirectory(prefix="forked-") as pipes:
            paths = [os.path.join(pipes, name) for name in ("stdout", "stderr")]
            for path in paths:
                os.mkfifo(path)
            started, self._ended = _fork_server.submit(env, args, timeout=3600, pipes=paths)
            # Opening a named pipe waits for its writer: the fork opens them in the same order.
            self.stdout: IO[str] | None = open(paths[0])  # noqa: SIM115 (the process's pipe, read as it runs)
            self.stderr: IO[str] | None = open(paths[1])  # noqa: SIM115
            self.pid = started.result(timeout=60)

    def poll(self) -> int | None:
        if self.returncode is None and self._ended.done():
            self.returncode = int(self._ended.result()["returncode"])
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        try:
            self.returncode = int(self._ended.result(timeout=timeout)["returncode"])
        except FutureTimeout:
            raise subprocess.TimeoutExpired(self.args, timeout or 0) from None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def shell_line(env: dict[str, str], code: str) -> str:
    """The last line ``manage.py shell -c CODE`` prints (the shell may print a banner first)."""
    result = manage(env, "shell", "-c", code, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_until_healthy(base: str) -> None:
    """Wait until ``base``/v3/health answers 200, failing after 15 s."""
    eventually_blocking(lambda: http_get(f"{base}/v3/health")[0] == 200, seconds=15, what="the trader to be healthy")


@dataclass
class RunningTrader:
    process: ForkedProcess
    console_url: str = ""
    """Empty with --no-web."""
    metrics_url: str = ""
    """The trader's own metrics port; empty without --metrics-port."""
    log: list[str] = field(default_factory=list)
    """Its stderr lines so far, read as they come: an unread pipe fills up and stops the trader mid-log."""
    _reader: threading.Thread | None = None

    def __post_init__(self) -> None:
        stream = self.process.stderr
        if stream is not None:
            self._reader = threading.Thread(target=self.log.extend, args=(stream,), daemon=True)
            self._reader.start()

    @property
    def base_url(self) -> str:
        return self.console_url.removesuffix("/v3-trader")

    def output(self) -> str:
        """Everything it has written to stderr so far (all of it once it has ended)."""
        if self._reader is not None and self.process.poll() is not None:
            self._reader.join(timeout=5)
        return "".join(self.log)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[int, str]:
        """Send ``sig`` and wait; returns the exit code and everything it wrote to stderr."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        return code, self.output()


SHARED_DIR = "TRADER_V3_TEST_SHARED_DIR"
"""The environment variable naming a folder the whole test run shares (its workers included); see conftest."""


def shared_dir() -> Path:
    """This test run's shared folder; a process started outside pytest gets one of its own."""
    if not os.environ.get(SHARED_DIR):
        os.environ[SHARED_DIR] = tempfile.mkdtemp(prefix="trader-v3-run-")
    return Path(os.environ[SHARED_DIR])


def made_once(name: str, make: Callable[[Path], object]) -> Path:
    """``name`` in the run's shared folder, made by the first process of the run to ask for it: ``make(path)``
    writes it (a file or a folder) at a temporary path that then takes its name, while the others wait."""
    path = shared_dir() / name
    with open(shared_dir() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            partial = shared_dir() / f"{name}.partial"
            make(partial)
            partial.rename(path)
    return path


def migrate(env: dict[str, str]) -> None:
    """Bring ``env``'s database up to date. A fresh SQLite file is a copy of one migrated once per test
    run, shared by its workers: ``manage.py migrate`` is a Django start plus every migration, seconds on a
    busy machine."""
    database_url = env.get("DATABASE_URL", "")
    target = Path(database_url.removeprefix("sqlite:///")) if database_url.startswith("sqlite:///") else None
    if target is None or target.exists():
        migrated = manage(env, "migrate", "--noinput")
        assert migrated.returncode == 0, migrated.stderr
        return

    def migrate_into(path: Path) -> None:
        result = manage({**env, "DATABASE_URL": f"sqlite:///{path}"}, "migrate", "--noinput")
        assert result.returncode == 0, result.stderr

    shutil.copyfile(made_once("migrated.sqlite3", migrate_into), target)


def copy_sim_key_pair(directory: Path) -> None:
    """Put this test run's simulator key pair into ``directory`` (made by the first worker to need it)."""
    if (directory / PRIVATE_KEY_FILE).exists():
        return
    pair = made_once("sim-key-pair", ensure_key_pair)
    for name in (PRIVATE_KEY_FILE, PUBLIC_KEY_FILE):
        shutil.copy2(pair / name, directory / name)  # with its mode: the private key stays 0600


def start_runtrader(env: dict[str, str], *args: str) -> RunningTrader:
    """Migrate, start ``runtrader ARGS`` and wait for the console URL it prints (unless --no-web) and, with
    --metrics-port, the metrics URL."""
    migrate(env)
    process = ForkedProcess(env, ("runtrader", *args))
    trader = RunningTrader(process)
    want_console, want_metrics = "--no-web" not in args, "--metrics-port" in args
    assert process.stdout is not None
    while (want_console and not trader.console_url) or (want_metrics and not trader.metrics_url):
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"runtrader ended early: {trader.stop()[1][-3000:]}")
        if match := _CONSOLE_LINE.search(line):
            trader.console_url = match.group(1)
        if match := _METRICS_LINE.search(line):
            trader.metrics_url = match.group(1)
    return trader


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningWorker:
    """A ``python -m apps.console.webserver`` web worker, as the README's scaled mode runs it."""

    process: subprocess.Popen[str]
    base_url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=30)


def start_web_worker(env: dict[str, str]) -> RunningWorker:
    """Start a web worker on a free loopback port and wait until it answers."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "apps.console.webserver",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "trader_v3.asgi:application",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker = RunningWorker(process, f"http://127.0.0.1:{port}")

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the web worker ended early: {process.stderr.read() if process.stderr else ''}")
        try:
            http_get(f"{worker.base_url}/v3/health")
        except OSError:
            return False
        return True

    try:
        eventually_blocking(answers, seconds=30, what="the web worker to answer")
    except AssertionError:
        worker.stop()
        raise
    return worker


def run_database_url(port: int | None = None) -> str:
    """The URL of the PostgreSQL database this test run uses (through ``port`` instead, e.g. a proxy's)."""
    from django.db import connection

    db = connection.settings_dict
    host = "127.0.0.1" if port is not None else db["HOST"] or "127.0.0.1"
    return f"postgres://{db['USER']}@{host}:{port or db['PORT'] or 5432}/{db['NAME']}"


def services_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A process environment on this test run's PostgreSQL database and Redis channel layer."""
    from django.conf import settings

    return project_env(
        tmp_path,
        DATABASE_URL=run_database_url(),
        REDIS_URL=os.environ["REDIS_URL"],
        CHANNEL_LAYER_PREFIX=settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
        **extra,
    )
