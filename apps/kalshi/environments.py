"""Which Kalshi hosts each trader environment may talk to, for market data and for trading.

``sim`` talks only to loopback (the built-in exchange), ``paper`` only to Kalshi's demo hosts, ``local``
and ``production`` only to production hosts. These rules are checked before any connection is opened.
Trading is stricter (``check_trading_url``): ``local`` never trades, and ``production`` trades only with
the production confirmation and trading explicitly enabled.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit


class Environment(StrEnum):
    SIM = "sim"
    PAPER = "paper"
    LOCAL = "local"
    PRODUCTION = "production"


PRODUCTION_WS_URL = "wss://external-api-ws.kalshi.com/trade-api/ws/v2"
PRODUCTION_API_URL = "https://external-api.kalshi.com/trade-api/v2"
DEMO_WS_URL = "wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2"
DEMO_API_URL = "https://external-api.demo.kalshi.co/trade-api/v2"

PRODUCTION_HOSTS = frozenset({"external-api.kalshi.com", "external-api-ws.kalshi.com", "api.elections.kalshi.com"})
DEMO_HOSTS = frozenset({"external-api.demo.kalshi.co", "external-api-ws.demo.kalshi.co", "demo-api.kalshi.co"})

DEFAULT_URLS: dict[Environment, tuple[str, str]] = {
    Environment.PAPER: (DEMO_WS_URL, DEMO_API_URL),
    Environment.LOCAL: (PRODUCTION_WS_URL, PRODUCTION_API_URL),
    Environment.PRODUCTION: (PRODUCTION_WS_URL, PRODUCTION_API_URL),
}


class ConfigurationError(ValueError):
    """A broken configuration rule. The message is one line and names the variable."""

    @property
    def problems(self) -> list[str]:
        """One line per broken rule."""
        return [str(self)]


class ConfigurationProblems(ConfigurationError):
    """Several broken rules found in one pass, so the operator fixes them all at once."""

    def __init__(self, problems: list[str]) -> None:
        self._problems = list(problems)
        super().__init__("; ".join(self._problems))

    @property
    def problems(self) -> list[str]:
        return list(self._problems)


def parse_environment(value: str) -> Environment:
    try:
        return Environment(value.strip().lower())
    except ValueError:
        choices = ", ".join(e.value for e in Environment)
        raise ConfigurationError(f"ENVIRONMENT must be one of {choices}; got {value!r}") from None


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(environment: Environment, variable: str, url: str, *, websocket: bool) -> None:
    """Raise ConfigurationError when ``url`` is not allowed in ``environment``."""
    parts = urlsplit(url)
    schemes = ("ws", "wss") if websocket else ("http", "https")
    host = parts.hostname or ""
    if parts.scheme not in schemes or not host:
        raise ConfigurationError(f"{variable} must be a {' or '.join(s + '://' for s in schemes)} URL; got {url!r}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ConfigurationError(f"{variable} must have a port 1..65535 (or none); got {url!r}")
    if environment is Environment.SIM:
        if not is_loopback_host(host):
            raise ConfigurationError(f"{variable} must point at a loopback address in sim; got host {host!r}")
        return
    if parts.scheme not in ("wss", "https"):
        raise ConfigurationError(f"{variable} must use TLS (wss:// or https://) in {environment}; got {url!r}")
    allowed = DEMO_HOSTS if environment is Environment.PAPER else PRODUCTION_HOSTS
    if host not in allowed:
        kind = "a Kalshi demo host" if environment is Environment.PAPER else "a Kalshi production host"
        raise ConfigurationError(
            f"{variable} must be {kind} in {environment} ({', '.join(sorted(allowed))}); got host {host!r}"
        )


class TradingRefused(ConfigurationError):
    """A trading client or request that a trading rule forbids. The message is one line naming the rule and
    never carries a URL's user info, a key id or a key."""


@dataclass(frozen=True, slots=True)
class TradingPermission:
    """Where a trading client may send orders: the environment and, for production, both explicit flags."""

    environment: Environment
    confirm_production: bool = False
    """The operator's production confirmation (TRADER_CONFIRM_PRODUCTION / --confirm-production)."""
    trading_enabled: bool = False
    """Trading switched on explicitly; production refuses to trade without it even when confirmed."""


def check_trading_url(permission: TradingPermission, url: str, *, websocket: bool = False) -> str:
    """Raise TradingRefused unless an order client may talk to ``url``; returns the parsed host.

    Only the parsed host counts, compared whole (never a substring): ``demo-api.kalshi.co.evil.com``, a
    host hidden behind user info (``https://demo-api.kalshi.co@evil.com``) and a trailing dot are refused.
    """
    environment = permission.environment
    rule = f"trading rule ({environment})"
    if environment is Environment.LOCAL:
        raise TradingRefused(f"{rule}: local is market data only; no trading client can be built")
    if environment is Environment.PRODUCTION and not (permission.confirm_production and permission.trading_enabled):
        missing = [
            name
            for name, given in (
                ("the production confirmation", permission.confirm_production),
                ("trading explicitly enabled", permission.trading_enabled),
            )
            if not given
        ]
        raise TradingRefused(f"{rule}: production trades real money and needs {' and '.join(missing)}")
    parts = urlsplit(url)
    schemes = ("ws", "wss") if websocket else ("http", "https")
    if parts.scheme not in schemes or any(c in url for c in "\\ \t\r\n"):
        raise TradingRefused(f"{rule}: the URL must be a plain {' or '.join(s + '://' for s in schemes)} URL")
    if "@" in parts.netloc:
        raise TradingRefused(f"{rule}: the URL must not carry user info before its host")
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = 0
    if not host or port == 0:
        raise TradingRefused(f"{rule}: the URL needs a host and a port 1..65535 (or none)")
    if environment is Environment.SIM:
        if not is_loopback_host(host):
            raise TradingRefused(f"{rule}: sim trades only with a loopback host; got host {host!r}")
        return host
    if parts.scheme not in ("https", "wss"):
        raise TradingRefused(f"{rule}: {environment} trades only over TLS (https:// or wss://)")
    allowed = DEMO_HOSTS if environment is Environment.PAPER else PRODUCTION_HOSTS
    if host not in allowed:
        kind = "a Kalshi demo host" if environment is Environment.PAPER else "a Kalshi production host"
        hosts = ", ".join(sorted(allowed))
        raise TradingRefused(f"{rule}: {environment} trades only with {kind} ({hosts}); got host {host!r}")
    return host
