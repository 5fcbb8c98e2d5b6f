"""Bad configuration stops manage.py before any connection: one line per problem naming the variable, exit 2.

Every variable of .env.example has at least one malformed value here (a test checks that), each run as the
operator would run it, in its own process.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import ROOT, manage, manage_many, project_env, shell_line

SECRET = "s3cr3t-value-that-must-never-be-printed"
PAPER = {"ENVIRONMENT": "paper", "SECRET_KEY": SECRET, "KALSHI_API_KEY_ID": SECRET}
TICKER = "KXFED-26DEC-T4.25"


def runtrader_command(*args: str) -> tuple[str, ...]:
    """``runtrader ARGS``, with --no-web unless ARGS hold --web."""
    web = () if "--web" in args else ("--no-web",)
    return ("runtrader", *web, *(arg for arg in args if arg != "--web"))


def runtrader(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return manage(project_env(tmp_path, **env), *runtrader_command(*args), timeout=60)


def a_key(tmp_path: Path, bits: int = 2048) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    path = tmp_path / f"key-{bits}.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


@pytest.fixture
def ports() -> Iterator[dict[str, str]]:
    with loopback_ports() as ports:
        yield ports


@contextlib.contextmanager
def loopback_ports() -> Iterator[dict[str, str]]:
    """``closed``: a loopback port nothing listens on. ``silent``: one that accepts and never answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes handshakes; nobody ever reads or writes
        yield {"closed": str(closed), "silent": str(silent.getsockname()[1])}


def case(line: str, *args: str, **env: str) -> object:
    shown = " ".join([*args, *(f"{k}={v}" for k, v in env.items() if k not in ("SECRET_KEY", "KALSHI_API_KEY_ID"))])
    return pytest.param(args, env, line, id=shown.replace(SECRET, "SECRET")[:80])


CASES = [
    case("ENVIRONMENT must be one of sim, paper, local, production; got 'staging'", ENVIRONMENT="staging"),
    case("SECRET_KEY is required when ENVIRONMENT=paper", ENVIRONMENT="paper"),
    case("SECRET_KEY must not contain whitespace at either end or control characters", SECRET_KEY=f" {SECRET}"),
    case("DATABASE_URL must be a database URL like postgres://", DATABASE_URL="notaurl"),
    case("DATABASE_URL must be a database URL like postgres://", DATABASE_URL=f"mysql://u:{SECRET}@127.0.0.1/x"),
    case("DATABASE_URL: its port must be a number 1..65535", DATABASE_URL=f"postgres://u:{SECRET}@127.0.0.1:99999/x"),
    case("DATABASE_URL: its port must be 1..65535", DATABASE_URL="postgres://postgres@127.0.0.1:0/x"),
    case("DATABASE_URL must name a database", DATABASE_URL="postgres://postgres@127.0.0.1:5432/"),
    case(
        "DATABASE_URL: cannot connect to PostgreSQL at 127.0.0.1:{closed}: ",
        DATABASE_URL=f"postgres://u:{SECRET}@127.0.0.1:{{closed}}/x",
    ),
    case(
        "DATABASE_URL: cannot connect to PostgreSQL at 127.0.0.1:{silent}: ",
        DATABASE_URL=f"postgres://u:{SECRET}@127.0.0.1:{{silent}}/x",
    ),
    case("REDIS_URL must be a redis://host:port/db, rediss:// or unix:// URL", REDIS_URL="notaurl"),
    case("REDIS_URL must be a redis://host:port/db, rediss:// or unix:// URL", REDIS_URL="http://127.0.0.1:6379/0"),
    case("REDIS_URL: the path must be a database number", REDIS_URL=f"redis://:{SECRET}@127.0.0.1:6379/abc"),
    case("REDIS_URL: its port must be a number 1..65535", REDIS_URL=f"redis://:{SECRET}@127.0.0.1:70000/0"),
    case(
        "REDIS_URL: cannot connect to Redis at 127.0.0.1:{closed}: ",
        REDIS_URL=f"redis://:{SECRET}@127.0.0.1:{{closed}}/0",
    ),
    case(
        "REDIS_URL: cannot connect to Redis at 127.0.0.1:{silent}: ",
        REDIS_URL=f"redis://:{SECRET}@127.0.0.1:{{silent}}/0",
    ),
    case(
        "KALSHI_API_KEY_ID is required when ENVIRONMENT=paper",
        "--markets",
        TICKER,
        ENVIRONMENT="paper",
        SECRET_KEY=SECRET,
        KALSHI_PRIVATE_KEY_PATH="{key}",
    ),
    case("KALSHI_API_KEY_ID must not contain whitespace", KALSHI_API_KEY_ID=f"{SECRET}\x01"),
    case(
        "KALSHI_PRIVATE_KEY_PATH cannot be read: No such file or directory",
        "--markets",
        TICKER,
        **PAPER,
        KALSHI_PRIVATE_KEY_PATH="/nonexistent/key.pem",
    ),
    case(
        "KALSHI_PRIVATE_KEY_PATH: the RSA key has 1024 bits; at least 2048 are needed",
        KALSHI_API_KEY_ID=SECRET,
        KALSHI_PRIVATE_KEY_PATH="{small_key}",
    ),
    case(
        "KALSHI_PRIVATE_KEY_CONTENT: the private key is not a readable unencrypted PEM key",
        "--markets",
        TICKER,
        **PAPER,
        KALSHI_PRIVATE_KEY_CONTENT=f"-----BEGIN PRIVATE KEY-----\\n{SECRET}",
    ),
    case(
        "KALSHI_WS_URL must be a Kalshi demo host in paper",
        **PAPER,
        KALSHI_WS_URL="wss://external-api-ws.kalshi.com/trade-api/ws/v2",
    ),
    case("KALSHI_WS_URL must point at a loopback address in sim", KALSHI_WS_URL="ws://10.1.2.3:8007/trade-api/ws/v2"),
    case("KALSHI_WS_URL must have a port 1..65535", KALSHI_WS_URL="ws://127.0.0.1:99999/trade-api/ws/v2"),
    case(
        "KALSHI_API_URL must be a Kalshi production host in local",
        ENVIRONMENT="local",
        SECRET_KEY=SECRET,
        KALSHI_API_URL="https://demo-api.kalshi.co/trade-api/v2",
    ),
    case("KALSHI_API_URL must be a http:// or https:// URL", KALSHI_API_URL="ftp://127.0.0.1/trade-api/v2"),
    case("--markets must list at least one ticker", "--markets", " , "),
    case("--markets: '<script>' is not a market ticker", "--markets", "<script>"),
    case("TRADER_MARKETS: 'KX FED' is not a market ticker", TRADER_MARKETS=f"{TICKER},KX FED"),
    case("TRADER_DISCOVER must be a whole number; got 'ten'", TRADER_DISCOVER="ten"),
    case("TRADER_DISCOVER must be 0..500000; got -1", TRADER_DISCOVER="-1"),
    case("TRADER_CROSSCHECK_INTERVAL must be a finite number; got 'inf'", TRADER_CROSSCHECK_INTERVAL="inf"),
    case("TRADER_CROSSCHECK_INTERVAL must be at least 1 second; got 0.5", TRADER_CROSSCHECK_INTERVAL="0.5"),
    case(
        "production trades real money: pass --confirm-production or set TRADER_CONFIRM_PRODUCTION=yes",
        "--markets",
        TICKER,
        **{**PAPER, "ENVIRONMENT": "production"},
        KALSHI_PRIVATE_KEY_PATH="{key}",
    ),
    case("TRADER_CONFIRM_PRODUCTION must be one of yes, no or empty; got 'maybe'", TRADER_CONFIRM_PRODUCTION="maybe"),
    case("TRADER_WEB_HOST: 'no-such..host' is not a host name or IP address", "--web", TRADER_WEB_HOST="no-such..host"),
    case("TRADER_WEB_PORT: 127.0.0.1:{silent} is already in use", "--web", TRADER_WEB_PORT="{silent}"),
    case("--host: 'bad host' is not a host name or IP address", "--web", "--host", "bad host"),
    case(
        "TRADER_WEB_HOST: 192.0.2.1 is not an address of this machine",
        "--web",
        "--port",
        "0",
        TRADER_WEB_HOST="192.0.2.1",
        ALLOWED_HOSTS="192.0.2.1",
    ),
    case(
        "ALLOWED_HOSTS must list the names browsers use to reach 0.0.0.0",
        "--web",
        "--port",
        "0",
        TRADER_WEB_HOST="0.0.0.0",
    ),
    case("TRADER_WEB_PORT must be 0..65535; got 99999", TRADER_WEB_PORT="99999"),
    case("TRADER_METRICS_PORT must be a whole number; got 'http'", TRADER_METRICS_PORT="http"),
    case("TRADER_METRICS_PORT must be 0..65535; got 99999", TRADER_METRICS_PORT="99999"),
    case("--metrics-port must be 0..65535; got -1", "--metrics-port", "-1"),
    case("TRADER_METRICS_PORT: 127.0.0.1:{silent} is already in use", TRADER_METRICS_PORT="{silent}"),
    case(
        "TRADER_METRICS_HOST: 'no-such..host' is not a host name or IP address",
        TRADER_METRICS_PORT="0",
        TRADER_METRICS_HOST="no-such..host",
    ),
    case(
        "TRADER_METRICS_HOST: 0.0.0.0 is beyond loopback and the metrics port has no login; pass --metrics-expose",
        "--markets",
        TICKER,
        **PAPER,
        KALSHI_PRIVATE_KEY_PATH="{key}",
        TRADER_METRICS_PORT="0",
        TRADER_METRICS_HOST="0.0.0.0",
    ),
    case("TRADER_METRICS_EXPOSE must be one of yes, no or empty; got 'maybe'", TRADER_METRICS_EXPOSE="maybe"),
    case("TRADER_WEB_PORT must be a whole number; got 'http'", TRADER_WEB_PORT="http"),
    case("TRADER_FEED_IDLE_TIMEOUT must be a finite number; got 'nan'", TRADER_FEED_IDLE_TIMEOUT="nan"),
    case("TRADER_FEED_IDLE_TIMEOUT must be at least 1; got '0.5'", TRADER_FEED_IDLE_TIMEOUT="0.5"),
    case("TRADER_HEARTBEAT_STALE_SECONDS must be a finite number; got 'inf'", TRADER_HEARTBEAT_STALE_SECONDS="inf"),
    case("TRADER_HEARTBEAT_STALE_SECONDS must be at least 1; got '-3'", TRADER_HEARTBEAT_STALE_SECONDS="-3"),
    case("TRADER_ORDERBOOK_INTERVAL must be at least 0.01; got '0'", TRADER_ORDERBOOK_INTERVAL="0"),
    case("TRADER_ORDERBOOKS_PER_TICK must be 1..100000; got 0", TRADER_ORDERBOOKS_PER_TICK="0"),
    case("SIM_MESSAGE_RATE must be a number; got 'fast'", SIM_MESSAGE_RATE="fast"),
    case("SIM_MESSAGE_RATE must be at least 0; got '-1'", SIM_MESSAGE_RATE="-1"),
    case("SIM_FAULTS: unknown fault 'drop_evry'", SIM_FAULTS="drop_evry=3"),
    case(
        "SIM_FAULTS: stall_for needs a finite number of at least 0; got 'nan'", SIM_FAULTS="stall_every=9,stall_for=nan"
    ),
    case("TRADER_TRADE must be one of yes, no or empty; got 'maybe'", TRADER_TRADE="maybe"),
    case(
        "TRADER_CANCEL_UNKNOWN_ORDERS must be one of yes, no or empty; got 'maybe'",
        TRADER_CANCEL_UNKNOWN_ORDERS="maybe",
    ),
    case("TRADER_STRATEGY apps.nope.X: no module named 'apps.nope'", TRADER_STRATEGY="apps.nope.X"),
    case(
        "TRADER_STRATEGY_PARAMS: not a JSON object",
        TRADER_STRATEGY="apps.strategies.quoter.Quoter",
        TRADER_STRATEGY_PARAMS="[1]",
    ),
    case("--risk / TRADER_RISK: unknown risk limit 'max_psition'", TRADER_TRADE="yes", TRADER_RISK="max_psition=3"),
    case("LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL; got 'LOUD'", LOG_LEVEL="LOUD"),
    case("DEBUG must be true or false (1/0, yes/no, on/off); got 'maybe'", DEBUG="maybe"),
    case(
        "ALLOWED_HOSTS lists host names such as trader.example.com, not URLs; got 'https://trader.example.com'",
        ALLOWED_HOSTS="https://trader.example.com",
    ),
    case(
        "CSRF_TRUSTED_ORIGINS lists origins such as https://trader.example.com; got 'trader.example.com'",
        CSRF_TRUSTED_ORIGINS="trader.example.com",
    ),
    case("TRADER_ENV_DIR must be a directory; '/nonexistent/env' is not one", TRADER_ENV_DIR="/nonexistent/env"),
    case("DATA_DIR must be a directory; '/etc/hostname' is a file", DATA_DIR="/etc/hostname"),
    case("DATA_DIR: '/proc' is not writable", DATA_DIR="/proc"),
    case(
        "KALSHI_API_KEY_ID is required when ENVIRONMENT=paper",
        *("--env", "paper", "--markets", TICKER),
        SECRET_KEY=SECRET,
        KALSHI_PRIVATE_KEY_PATH="{key}",
    ),
]


Case = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]
"""A case's arguments and environment, as a key."""


@pytest.fixture(scope="module")
def case_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[Case, tuple[subprocess.CompletedProcess[str], dict[str, str]]]]:
    """Every case's runtrader, run side by side up front, each in its own process (forked from one that has
    imported the libraries, so a case costs its own work rather than an interpreter's start-up), and the
    silent ports' timeouts overlap instead of adding up."""
    with loopback_ports() as loopback:
        keys: list[Case] = []
        runs: list[tuple[dict[str, str], tuple[str, ...]]] = []
        values_of: list[dict[str, str]] = []
        for args, env, _ in (param.values for param in CASES):  # type: ignore[attr-defined]
            tmp_path = tmp_path_factory.mktemp("case")
            values = {**loopback}
            if "{key}" in env.values():
                values["key"] = str(a_key(tmp_path))
            if "{small_key}" in env.values():
                values["small_key"] = str(a_key(tmp_path, bits=1024))  # the smallest cryptography makes; 512 alike
            case_env = project_env(tmp_path, **{name: value.format(**values) for name, value in env.items()})
            runs.append((case_env, runtrader_command(*args)))
            keys.append((args, tuple(env.items())))
            values_of.append(values)
        results = manage_many(runs)
        yield {key: (result, values) for key, result, values in zip(keys, results, values_of, strict=True)}


@pytest.mark.parametrize(("args", "env", "line"), CASES)
def test_a_malformed_setting_is_one_line_naming_it_and_exit_2(
    case_runs: dict[Case, tuple[subprocess.CompletedProcess[str], dict[str, str]]],
    args: tuple[str, ...],
    env: dict[str, str],
    line: str,
) -> None:
    result, values = case_runs[args, tuple(env.items())]
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("configuration error: ")
    assert line.format(**values) in lines[0]
    assert SECRET not in result.stderr + result.stdout


def test_every_variable_of_env_example_has_a_malformed_case() -> None:
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    covered = {name for param in CASES for name in param.values[1]}  # type: ignore[attr-defined]
    assert documented, "no variables found in .env.example"
    assert documented <= covered, sorted(documented - covered)


def test_every_problem_is_reported_in_one_run(tmp_path: Path) -> None:
    result = runtrader(
        tmp_path,
        DATABASE_URL=f"postgres://u:{SECRET}@127.0.0.1:99999/x",
        LOG_LEVEL="LOUD",
        TRADER_FEED_IDLE_TIMEOUT="nan",
        DATA_DIR="/etc/hostname",
        SECRET_KEY=f"{SECRET}\n",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert [line.split(":")[1].split()[0] for line in lines] == [
        "DATA_DIR",
        "SECRET_KEY",
        "DATABASE_URL",
        "TRADER_FEED_IDLE_TIMEOUT",
        "LOG_LEVEL",
    ], result.stderr
    assert all(line.startswith("configuration error: ") for line in lines)
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_an_unreachable_database_and_redis_are_both_named(tmp_path: Path, ports: dict[str, str]) -> None:
    # A closed port answers at once; a silent one's timeout is covered case by case above.
    result = runtrader(
        tmp_path,
        DATABASE_URL=f"postgres://u:{SECRET}@127.0.0.1:{ports['closed']}/x",
        REDIS_URL=f"redis://:{SECRET}@127.0.0.1:{ports['closed']}/0",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith(
        f"configuration error: DATABASE_URL: cannot connect to PostgreSQL at 127.0.0.1:{ports['closed']}"
    )
    assert lines[1].startswith(
        f"configuration error: REDIS_URL: cannot connect to Redis at 127.0.0.1:{ports['closed']}"
    )
    assert SECRET not in result.stderr + result.stdout


def test_every_rule_of_the_trader_is_reported_in_one_run(tmp_path: Path) -> None:
    result = runtrader(tmp_path, "--markets", "<b>", ENVIRONMENT="production", SECRET_KEY=SECRET)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: production trades real money: pass --confirm-production or set "
        "TRADER_CONFIRM_PRODUCTION=yes",
        "configuration error: --markets: '<b>' is not a market ticker (letters, digits, '-', '.' and '_', "
        "at most 100 characters)",
        "configuration error: KALSHI_API_KEY_ID is required when ENVIRONMENT=production",
        "configuration error: KALSHI_PRIVATE_KEY_PATH or KALSHI_PRIVATE_KEY_CONTENT is required when "
        "ENVIRONMENT=production",
    ]


def test_other_commands_fail_the_same_clean_way(tmp_path: Path) -> None:
    result = manage(project_env(tmp_path, LOG_LEVEL="LOUD", DATABASE_URL="notaurl"), "migrate", "--noinput")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("configuration error: DATABASE_URL must be a database URL")
    assert lines[1].startswith("configuration error: LOG_LEVEL must be one of")


def test_a_daphne_worker_fails_the_same_clean_way(tmp_path: Path) -> None:
    env = project_env(tmp_path, LOG_LEVEL="LOUD", SECRET_KEY=f"{SECRET} ")
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", "0", "trader_v3.asgi:application"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: SECRET_KEY must not contain whitespace at either end or control characters "
        "(value hidden)",
        "configuration error: LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL; got 'LOUD'",
    ]


def test_paper_needs_markets_once_the_key_is_good(tmp_path: Path) -> None:
    result = runtrader(tmp_path, **PAPER, KALSHI_PRIVATE_KEY_PATH=str(a_key(tmp_path)))
    assert result.returncode == 2
    assert "TRADER_MARKETS (or --markets, or --discover N) is required when ENVIRONMENT=paper" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_env_files_are_read_most_specific_first_and_real_variables_win(tmp_path: Path) -> None:
    (tmp_path / ".env.paper").write_text("TRADER_WEB_PORT=1111\nSIM_MESSAGE_RATE=11\n")
    (tmp_path / ".env").write_text("TRADER_WEB_PORT=2222\nSIM_MESSAGE_RATE=22\nTRADER_WEB_HOST=::1\nSECRET_KEY=x\n")
    env = project_env(tmp_path, TRADER_ENV_DIR=str(tmp_path), ENVIRONMENT="paper", SIM_MESSAGE_RATE="33")
    code = "from django.conf import settings as s; print(s.TRADER_WEB_PORT, s.SIM_MESSAGE_RATE, s.TRADER_WEB_HOST)"
    assert shell_line(env, code).split() == ["1111", "33.0", "::1"]
