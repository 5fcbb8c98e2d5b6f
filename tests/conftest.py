from __future__ import annotations

import asyncio
import gc
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import channel_layers
from django.apps import AppConfig
from django.conf import settings
from django.db import connections
from django.db.models.signals import post_migrate
from django.test import override_settings

from apps.exchange.config import SimulatorConfig
from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.signing import Credentials
from tests import keys
from tests.processes import (
    FORK_SERVER,
    SHARED_DIR,
    compile_project,
    keep_bytecode,
    shared_dir,
    start_shared_fork_server,
)
from tests.support import TEST_KEY_ID, StartSim


def pytest_configure(config: pytest.Config) -> None:
    # Before pytest-xdist starts its workers: they, and every process a test starts, inherit these.
    keep_bytecode(os.environ)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        compile_project()
    if not os.environ.get(SHARED_DIR):
        config.stash[_own_shared_dir] = shared_dir()
    if not os.environ.get(FORK_SERVER):
        config.stash[_own_fork_server] = start_shared_fork_server()


def pytest_collection_finish(session: pytest.Session) -> None:
    # What exists now (the libraries, the project, the collected tests) lives until the run ends: leave it out of
    # the garbage collector's full collections, which otherwise walk all of it again and again.
    gc.freeze()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    here = Path(__file__).parent

    def place(item: pytest.Item) -> int:
        return rank.get(item.path.relative_to(here).as_posix(), len(rank))

    items.sort(key=place)  # stable: every file keeps its own order, and the rest keep theirs


def pytest_unconfigure(config: pytest.Config) -> None:
    if _own_fork_server in config.stash:
        server = config.stash[_own_fork_server]
        assert server.stdin is not None
        server.stdin.close()  # it ends the runs still going, then itself
        server.wait(timeout=60)
    if _own_shared_dir in config.stash:
        shutil.rmtree(config.stash[_own_shared_dir], ignore_errors=True)


_own_shared_dir = pytest.StashKey[Path]()
_own_fork_server = pytest.StashKey[subprocess.Popen[bytes]]()

LONGEST_FIRST = (
    "test_database_outage.py",  # PostgreSQL only: about two minutes of outages
    "console/test_browser.py",
    "trader/test_soak_command.py",
    "console/test_web_server.py",
    "trader/test_sessions.py",
    "exchange/test_benchtrader.py",
    "trader/test_configuration.py",
    "kalshi/test_client_faults.py",
    "test_scaled_mode.py",
    "marketdata/test_fidelity.py",
    "test_runtrader_process.py",
    "trader/test_trading_against_exchange.py",
    "marketdata/test_benchmark.py",
    "console/test_trading_control.py",
    "trader/test_faults_mixed.py",
    "console/test_admin_while_running.py",
    "trader/test_discovery_and_crosscheck.py",
    "kalshi/test_trading_against_exchange.py",
    "console/test_control.py",
    "exchange/test_books.py",
    "trader/test_trader_against_exchange.py",
    "exchange/test_faults.py",
    "trader/test_metrics.py",
    "exchange/test_runexchange.py",
    "trader/test_trading_admin.py",
)
"""The files that take longest, longest first, as ``pytest --durations=0`` measures them summed by file on SQLite
and on PostgreSQL + Redis. The parallel run hands out whole files in collection order (``--dist loadfile
--no-loadscope-reorder``), so these start at once and the short files fill the workers' ends, instead of one
long file starting last and running alone at the end."""


def services_configured() -> bool:
    return bool(os.environ.get("REDIS_URL")) and os.environ.get("DATABASE_URL", "").startswith("postgres")


@pytest.fixture(autouse=True)
def _real_services(request: pytest.FixtureRequest) -> None:
    """Tests marked ``services`` need the real PostgreSQL and Redis.

    Without DATABASE_URL and REDIS_URL they are skipped (``make test``); with REQUIRE_SERVICES=1 (CI)
    a missing service is a failure, never a skip.
    """
    if request.node.get_closest_marker("services") is None or services_configured():
        return
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail("REQUIRE_SERVICES=1 but DATABASE_URL (PostgreSQL) and REDIS_URL are not both set")
    pytest.skip("needs DATABASE_URL (PostgreSQL) and REDIS_URL; .ci/run provides them")


@pytest.fixture(scope="session", autouse=True)
def _close_worker_thread_connections(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """The async ORM opens connections on asgiref's worker thread; close them before the test database goes.

    Otherwise PostgreSQL refuses to drop the test database while that thread still holds a session. So it does
    while a server process of a finished test's trader is still ending (its client is gone, the backend exits a
    moment later): those sessions are ended here, so the drop never races them.
    """
    yield
    with django_db_blocker.unblock():
        asyncio.run(sync_to_async(connections.close_all)())
        connection = connections["default"]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            connection.close()


@pytest.fixture(scope="session", autouse=True)
def _flush_puts_back_content_types_and_permissions(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """After each transactional test Django empties every table, then rebuilds the content types and permissions
    app by app from its post_migrate handlers: some seventy queries, five seconds of CPU in a run of the suite.
    The rows the migrations made are the same every time: they are read once here and put back, ids and all, in
    two inserts."""
    from django.contrib.auth.management import create_permissions
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.management import create_contenttypes
    from django.contrib.contenttypes.models import ContentType

    connection = connections["default"]
    if connection.settings_dict["NAME"] != connection.creation._get_test_db_name():  # type: ignore[attr-defined]
        yield  # no test of this run uses the database: pytest-django made none
        return
    with django_db_blocker.unblock():
        content_types = list(ContentType.objects.values())
        permissions = list(Permission.objects.values())

    def put_back(sender: AppConfig, using: str, **kwargs: Any) -> None:
        if sender.label != "contenttypes":  # the signal comes once for every app; the rows go back once
            return
        ContentType.objects.db_manager(using).bulk_create(ContentType(**row) for row in content_types)
        Permission.objects.db_manager(using).bulk_create(Permission(**row) for row in permissions)
        ContentType.objects.clear_cache()  # it holds the content types of before the flush

    django_handlers = (
        (create_contenttypes, None),
        (create_permissions, "django.contrib.auth.management.create_permissions"),
    )
    for handler, uid in django_handlers:
        post_migrate.disconnect(handler, dispatch_uid=uid)
    post_migrate.connect(put_back, dispatch_uid=__name__)
    yield
    post_migrate.disconnect(dispatch_uid=__name__)
    for handler, uid in django_handlers:
        post_migrate.connect(handler, dispatch_uid=uid)


@pytest.fixture(scope="session", autouse=True)
def _channel_layer_of_this_worker() -> Iterator[None]:
    """The workers of a parallel run (pytest-xdist) share one Redis: each gets a channel-layer prefix of its own,
    so no worker's consoles hear another worker's traders. Processes a test starts take it from the settings."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    layer = settings.CHANNEL_LAYERS["default"]
    if not worker or "prefix" not in layer["CONFIG"]:
        yield
        return
    config = {**layer["CONFIG"], "prefix": f"{layer['CONFIG']['prefix']}-{worker}"}
    with override_settings(CHANNEL_LAYERS={"default": {**layer, "CONFIG": config}}):
        yield


@pytest.fixture(autouse=True)
def _fresh_channel_layers() -> None:
    """Each test makes its own channel layers: a Redis layer's locks and pools belong to the event loop that made
    them, and each test has a loop of its own (a lock left held by an earlier test's loop broke a later one)."""
    channel_layers.backends.clear()


@pytest.fixture(scope="session", autouse=True)
def _quick_password_hashing() -> Iterator[None]:
    """Users made in this process get a cheap hash: PBKDF2's million rounds cost about a second per user here,
    and no test is about the hash's strength."""
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(scope="session")
def key_pair() -> tuple[bytes, bytes]:
    """An RSA key pair (private PEM, public PEM) for signing requests to test simulators."""
    return keys.key_pair("suite")


@pytest.fixture(scope="session")
def credentials() -> Credentials:
    """Credentials that sign with ``key_pair``."""
    return keys.credentials("suite", TEST_KEY_ID)


@pytest.fixture
async def start_sim(key_pair: tuple[bytes, bytes]) -> AsyncIterator[StartSim]:
    """Start simulators that trust ``key_pair``; still books unless a message_rate is given."""
    started: list[ExchangeSimulator] = []

    async def start(**overrides: Any) -> ExchangeSimulator:
        options: dict[str, Any] = {"public_key_pem": key_pair[1], "seed": 7, "message_rate": 0.0}
        options.update(overrides)
        sim = ExchangeSimulator(SimulatorConfig(**options))
        await sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        await sim.stop()
