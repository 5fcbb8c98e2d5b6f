"""Trader V3 settings, read from the environment through django-environ.

Order of precedence: real environment variables, then ``.env.<ENVIRONMENT>``, then ``.env``.
``read_env`` never overrides a variable that is already set, so the most specific file is read first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

from apps.exchange.faults import parse_faults
from apps.kalshi.environments import (
    DEFAULT_URLS,
    ConfigurationError,
    Environment,
    check_url,
    parse_environment,
)
from trader_v3.layers import redis_channel_layer

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
try:
    ENVIRONMENT: Environment = parse_environment(env.str("ENVIRONMENT", default="sim"))
except ConfigurationError as exc:
    raise ImproperlyConfigured(str(exc)) from None

ENV_FILE_DIR = Path(env.str("TRADER_ENV_DIR", default=str(BASE_DIR)))
for _env_file in (ENV_FILE_DIR / f".env.{ENVIRONMENT}", ENV_FILE_DIR / ".env"):
    if _env_file.is_file():
        env.read_env(_env_file, overwrite=False)


def _require(name: str, message: str) -> str:
    value = str(env.str(name, default=""))
    if not value:
        raise ImproperlyConfigured(f"{name} is required {message}")
    return value


def _float(name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.str(name, default=str(default))
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number; got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}; got {raw!r}")
    return value


def _int(name: str, default: int) -> int:
    raw = env.str(name, default=str(default))
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number; got {raw!r}") from None


DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "data")))
# Git-ignored home of the SQLite database and the simulator's key pair; a fresh clone has none yet.
DATA_DIR.mkdir(parents=True, exist_ok=True)

if ENVIRONMENT is Environment.SIM:
    # The simulator runs on loopback only; a fixed development key keeps sessions valid across restarts.
    SECRET_KEY = env.str("SECRET_KEY", default="sim-only-insecure-secret-key-never-used-outside-loopback")
else:
    SECRET_KEY = _require("SECRET_KEY", f"when ENVIRONMENT={ENVIRONMENT}")

DEBUG = env.bool("DEBUG", default=ENVIRONMENT is Environment.SIM)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

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
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'trader.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # psycopg 3's pool: the trader and web workers reuse connections instead of opening one per request.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": 1, "max_size": 8}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the console read while the trader writes; the timeout rides out short write locks.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}
    )

REDIS_URL = env.str("REDIS_URL", default="")
# Capacity and expiry are set on purpose: group_send silently drops past capacity, and the console
# counts what it misses instead of letting a slow browser hold old book updates for a minute.
_CHANNEL_CAPACITY = 500
_CHANNEL_EXPIRY = 10
CHANNEL_LAYERS: dict[str, Any]
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": redis_channel_layer(
            REDIS_URL,
            prefix=env.str("CHANNEL_LAYER_PREFIX", default="trader_v3"),
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

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# The trader's embedded web app and plain Daphne workers serve /static/ themselves (no separate server).
SERVE_STATIC: bool = env.bool("SERVE_STATIC", default=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --------------------------------------------------------------------------------------------- the trader
try:
    _default_ws, _default_api = DEFAULT_URLS.get(ENVIRONMENT, ("", ""))
    KALSHI_WS_URL: str = env.str("KALSHI_WS_URL", default=_default_ws)
    KALSHI_API_URL: str = env.str("KALSHI_API_URL", default=_default_api)
    if KALSHI_WS_URL:
        check_url(ENVIRONMENT, "KALSHI_WS_URL", KALSHI_WS_URL, websocket=True)
    if KALSHI_API_URL:
        check_url(ENVIRONMENT, "KALSHI_API_URL", KALSHI_API_URL, websocket=False)
except ConfigurationError as exc:
    raise ImproperlyConfigured(str(exc)) from None

KALSHI_API_KEY_ID: str = env.str("KALSHI_API_KEY_ID", default="")
KALSHI_PRIVATE_KEY_PATH: str = env.str("KALSHI_PRIVATE_KEY_PATH", default="")
KALSHI_PRIVATE_KEY_CONTENT: str = env.str("KALSHI_PRIVATE_KEY_CONTENT", default="")

TRADER_MARKETS: list[str] = env.list("TRADER_MARKETS", default=[])
TRADER_DISCOVER: int = _int("TRADER_DISCOVER", 0)
TRADER_CROSSCHECK_INTERVAL: float | None = _float("TRADER_CROSSCHECK_INTERVAL", 0.0) or None  # 0: off
TRADER_CONFIRM_PRODUCTION: bool = env.str("TRADER_CONFIRM_PRODUCTION", default="").lower() == "yes"
TRADER_WEB_HOST: str = env.str("TRADER_WEB_HOST", default="127.0.0.1")
TRADER_WEB_PORT: int = _int("TRADER_WEB_PORT", 8006)
TRADER_HEARTBEAT_STALE_SECONDS: float = _float("TRADER_HEARTBEAT_STALE_SECONDS", 10.0, minimum=1.0)
TRADER_FEED_IDLE_TIMEOUT: float = _float("TRADER_FEED_IDLE_TIMEOUT", 30.0, minimum=1.0)
SIM_MESSAGE_RATE: float = _float("SIM_MESSAGE_RATE", 50.0)
# Faults for the built-in exchange, e.g. "drop_every=30,skip_seq_every=100,no_ping" (see apps/exchange/faults.py).
SIM_FAULTS_SPEC: str = env.str("SIM_FAULTS", default="")
try:
    parse_faults(SIM_FAULTS_SPEC)
except ValueError as exc:
    raise ImproperlyConfigured(f"SIM_FAULTS: {exc}") from None
CONSOLE_GROUP = "trader_v3.console"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "daphne": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
        "websockets": {"level": "WARNING"},
    },
}
