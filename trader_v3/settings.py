"""Trader V3 settings, read from the environment through django-environ.

Order of precedence: real environment variables, then ``.env.<ENVIRONMENT>``, then ``.env``.
``read_env`` never overrides a variable that is already set, so the most specific file is read first.

Every variable goes through ``env`` (a SettingsReader): a malformed value is recorded as a one-line problem
and the module carries on, so one run reports every problem; the last line raises them all together.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import environ

from apps.kalshi.environments import (
    DEFAULT_URLS,
    ConfigurationError,
    Environment,
    check_url,
    parse_environment,
)
from trader_v3.envreader import SettingsReader
from trader_v3.layers import redis_channel_layer

BASE_DIR = Path(__file__).resolve().parent.parent

env = SettingsReader(environ.Env())
try:
    ENVIRONMENT: Environment = parse_environment(env.str("ENVIRONMENT", default="sim"))
except ConfigurationError as exc:
    env.problem(str(exc))
    ENVIRONMENT = Environment.SIM  # only so the other variables are checked too; the load still fails

ENV_FILE_DIR = Path(env.str("TRADER_ENV_DIR", default=str(BASE_DIR)))
if not ENV_FILE_DIR.is_dir():
    env.problem(f"TRADER_ENV_DIR must be a directory; {str(ENV_FILE_DIR)!r} is not one")
for _env_file in (ENV_FILE_DIR / f".env.{ENVIRONMENT}", ENV_FILE_DIR / ".env"):
    if _env_file.is_file():
        env.read_env(_env_file)


# Git-ignored home of the SQLite database and the simulator's key pair; a fresh clone has none yet.
DATA_DIR = env.directory("DATA_DIR", default=BASE_DIR / "data")

if ENVIRONMENT is Environment.SIM:
    # The simulator runs on loopback only; a fixed development key keeps sessions valid across restarts.
    SECRET_KEY = env.secret("SECRET_KEY", default="sim-only-insecure-secret-key-never-used-outside-loopback")
else:
    SECRET_KEY = env.secret("SECRET_KEY")
    if not SECRET_KEY:
        env.problem(f"SECRET_KEY is required when ENVIRONMENT={ENVIRONMENT}")

# Off unless asked for: with DEBUG on, Django keeps every query and shows tracebacks to whoever connects.
DEBUG = env.bool("DEBUG", default=False)
# The loopback names serve the default bind; a web app bound beyond loopback needs ALLOWED_HOSTS set on purpose.
ALLOWED_HOSTS_SET: bool = env.is_set("ALLOWED_HOSTS")
ALLOWED_HOSTS = env.hosts("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.origins("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "apps.trader",
    "apps.marketdata",
    "apps.exchange",
    "apps.console",
    "apps.workbench",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "apps.console.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "trader_v3.urls"
ASGI_APPLICATION = "trader_v3.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# One SQLite file per environment by default: a sim session never shows up in (or blocks) paper's history.
DEFAULT_DATABASE_FILE = DATA_DIR / f"trader-{ENVIRONMENT.value}.sqlite3"
DATABASES = {"default": env.database("DATABASE_URL", default=f"sqlite:///{DEFAULT_DATABASE_FILE}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # psycopg 3's pool: the trader and web workers reuse connections instead of opening one per request.
    # Every wait is short so a database outage is seen within seconds and nobody queues behind it: a
    # connection attempt gives up after 3 s, a request for a pooled connection after 2 s, and the pool
    # never backs off for longer than 2 s (its default backs off for up to 5 minutes, so it could stay
    # empty long after the database is back). Keepalives and tcp_user_timeout end a silently dead socket.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "connect_timeout": 3,
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
            "tcp_user_timeout": 10_000,
            "pool": {"min_size": 1, "max_size": 8, "timeout": 2.0, "reconnect_timeout": 2.0},
        }
    )
    DATABASES["default"]["CONN_MAX_AGE"] = 0
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the console read while the trader writes; the timeout rides out short write locks. A
    # transaction takes the write lock when it begins (IMMEDIATE): a deferred one that read first (the
    # admin's delete collects before it deletes) cannot wait for the lock and fails with "database is
    # locked" as soon as the trader has committed in between.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # Each thread keeps its connection: opening one costs a PRAGMA round and thirty SQL functions registered, and
    # closing the last one checkpoints the WAL into the file; the console's socket and the trader's session store
    # (heartbeats, transitions) would pay both for every call they make.
    DATABASES["default"]["CONN_MAX_AGE"] = None
    # The test database is a file with the same options, not Django's shared-cache in-memory default, whose
    # table locks fail at once instead of waiting and so behave unlike the file every trader writes.
    DATABASES["default"]["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / f"trader-v3-test-{os.getpid()}.sqlite3")}

REDIS_URL = env.redis_url("REDIS_URL")
# Capacity and expiry are set on purpose: group_send silently drops past capacity, and the console
# counts what it misses instead of letting a slow browser hold old book updates for a minute.
_CHANNEL_CAPACITY = 500
_CHANNEL_EXPIRY = 10
CHANNEL_LAYERS: dict[str, Any]
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": redis_channel_layer(
            REDIS_URL,
            prefix=env.group_prefix("CHANNEL_LAYER_PREFIX", default="trader_v3"),
            capacity=_CHANNEL_CAPACITY,
            expiry=_CHANNEL_EXPIRY,
        )
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": _CHANNEL_CAPACITY, "expiry": _CHANNEL_EXPIRY},
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Times to the second (the locale's default shows minutes only).
FORMAT_MODULE_PATH = ["trader_v3.formats"]

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# The trader's embedded web app and plain Daphne workers serve /static/ themselves (no separate server).
SERVE_STATIC: bool = env.bool("SERVE_STATIC", default=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Outside sim the console, its socket and /v3/status need a staff login (apps/console/access.py).
LOGIN_URL = "console-login"
LOGIN_REDIRECT_URL = "console"

# --------------------------------------------------------------------------------------------- the trader
_default_ws, _default_api = DEFAULT_URLS.get(ENVIRONMENT, ("", ""))
KALSHI_WS_URL: str = env.str("KALSHI_WS_URL", default=_default_ws)
KALSHI_API_URL: str = env.str("KALSHI_API_URL", default=_default_api)
for _name, _url, _websocket in (("KALSHI_WS_URL", KALSHI_WS_URL, True), ("KALSHI_API_URL", KALSHI_API_URL, False)):
    try:
        if _url:
            check_url(ENVIRONMENT, _name, _url, websocket=_websocket)
    except ConfigurationError as exc:
        env.problem(str(exc))

KALSHI_API_KEY_ID: str = env.secret("KALSHI_API_KEY_ID", default="")
KALSHI_PRIVATE_KEY_PATH: str = env.str("KALSHI_PRIVATE_KEY_PATH", default="")
KALSHI_PRIVATE_KEY_CONTENT: str = env.str("KALSHI_PRIVATE_KEY_CONTENT", default="")

TRADER_MARKETS: list[str] = env.list("TRADER_MARKETS", default=[])
TRADER_DISCOVER: int = env.int("TRADER_DISCOVER", 0, minimum=0, maximum=500_000)
TRADER_CROSSCHECK_INTERVAL: float | None = env.float("TRADER_CROSSCHECK_INTERVAL", 0.0) or None  # 0: off
TRADER_CONFIRM_PRODUCTION: bool = env.choice("TRADER_CONFIRM_PRODUCTION", "", ("yes", "no", "")) == "yes"
TRADER_WEB_HOST: str = env.str("TRADER_WEB_HOST", default="127.0.0.1")
TRADER_WEB_PORT: int = env.int("TRADER_WEB_PORT", 8006, minimum=0, maximum=65535)
# Prometheus metrics on a port of the trader's own: off unless set (0: any free port, printed at start). Loopback by
# default; outside sim a host beyond loopback also needs TRADER_METRICS_EXPOSE=yes (the port has no login).
TRADER_METRICS_PORT: int | None = (
    env.int("TRADER_METRICS_PORT", 0, minimum=0, maximum=65535) if env.is_set("TRADER_METRICS_PORT") else None
)
TRADER_METRICS_HOST: str = env.str("TRADER_METRICS_HOST", default="127.0.0.1")
TRADER_METRICS_EXPOSE: bool = env.choice("TRADER_METRICS_EXPOSE", "", ("yes", "no", "")) == "yes"
TRADER_HEARTBEAT_STALE_SECONDS: float = env.float("TRADER_HEARTBEAT_STALE_SECONDS", 10.0, minimum=1.0)
TRADER_FEED_IDLE_TIMEOUT: float = env.float("TRADER_FEED_IDLE_TIMEOUT", 30.0, minimum=1.0)
# Changed books go to consoles as one event per tick, at most so many books a tick (the rest wait, oldest first).
TRADER_ORDERBOOK_INTERVAL: float = env.float("TRADER_ORDERBOOK_INTERVAL", 0.05, minimum=0.01)
TRADER_ORDERBOOKS_PER_TICK: int = env.int("TRADER_ORDERBOOKS_PER_TICK", 100, minimum=1, maximum=100_000)
SIM_MESSAGE_RATE: float = env.float("SIM_MESSAGE_RATE", 50.0)
# Faults for the built-in exchange, e.g. "drop_every=30,skip_seq_every=100,no_ping" (see apps/exchange/faults.py).
# Only the trader's composition root parses them (apps/trader/runtime.py), when it checks its configuration.
SIM_FAULTS: str = env.str("SIM_FAULTS", default="")
# Trading (sim and paper; local never trades; production also needs TRADER_TRADE=yes beside the confirmation).
TRADER_TRADE: bool = env.choice("TRADER_TRADE", "", ("yes", "no", "")) == "yes"
TRADER_STRATEGY: str = env.str("TRADER_STRATEGY", default="")
TRADER_STRATEGY_PARAMS: str = env.str("TRADER_STRATEGY_PARAMS", default="")
# Risk limits over their defaults, e.g. "max_position=5,max_order_size=1,price_band=0.05"
# (names in apps/trader/core/trading/risk.py).
TRADER_RISK: str = env.str("TRADER_RISK", default="")
TRADER_CANCEL_UNKNOWN_ORDERS: bool = env.choice("TRADER_CANCEL_UNKNOWN_ORDERS", "", ("yes", "no", "")) == "yes"
CONSOLE_GROUP = "trader_v3.console"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.log_level("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Django's own handler for "django" (printing when DEBUG is on) would print every request error a
        # second time beside the root handler: one handler, the root's.
        "django": {"handlers": [], "level": "INFO", "propagate": True},
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
        "websockets": {"level": "WARNING"},
        # The pool warns on every reconnection attempt; the trader reports an outage once, with its reason.
        "psycopg.pool": {"level": "ERROR"},
    },
}

# Last: every malformed setting above, reported together (manage.py prints one line each, exit 2).
env.raise_problems()
