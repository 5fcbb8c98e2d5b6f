"""The trader's run configuration, built once from settings and ``runtrader`` options and checked up front.

``TraderConfig`` is the only way the trader's parts learn their settings: the composition root
(``apps/trader/runtime.py``) hands each part what it needs from it, and nothing else of the trader reads
``django.conf.settings`` for a run. Settings have already checked each variable's form (URLs against the
environment, ranges); here the rules between them are checked, before any connection is opened; a broken
one raises ConfigurationError with one line per broken rule naming the variable. Key material is loaded
here and never printed.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.kalshi.environments import (
    ConfigurationError,
    ConfigurationProblems,
    Environment,
    TradingPermission,
    TradingRefused,
    check_trading_url,
    is_loopback_host,
)
from apps.kalshi.signing import Credentials, KeyLoadError, PrivateKey, load_private_key
from apps.kalshi.tickers import InvalidTicker, parse_ticker_list
from apps.trader.core.trading.loading import StrategyLoadError, load_strategy
from apps.trader.core.trading.risk import RiskLimits

SIM_KEY_ID = "sim-local-key"
SIM_DEFAULT_MARKET_COUNT = 3
MAX_DISCOVER = 500_000
"""Kalshi takes up to 500,000 market subscriptions on one connection (kalshi-protocol.md §0)."""


@dataclass(frozen=True, kw_only=True)
class TradingChoice:
    """How a trader that trades does it: its strategy, its limits and what it may do on the account."""

    permission: TradingPermission
    strategy_path: str = ""
    """The strategy's dotted path; '' trades only what the console asks (cancels, the kill switch)."""
    strategy_params: dict[str, Any] = field(default_factory=dict)
    limits: RiskLimits = field(default_factory=RiskLimits)
    cancel_unknown_orders: bool = False


@dataclass(frozen=True, kw_only=True)
class TraderConfig:
    """One run of the trader as settings and ``runtrader``'s options describe it, checked."""

    environment: Environment
    markets: list[str]
    ws_url: str
    """Empty in sim when the built-in exchange is started: its URL is known once it listens."""
    api_url: str
    credentials: Credentials = field(repr=False)
    discover: int = 0
    """Pick this many markets by 24 h volume from REST instead of a fixed list."""
    crosscheck_interval: float | None = None
    web: bool
    web_host: str
    web_port: int
    console_group: str
    """The channel-layer group every console joins."""
    heartbeat_stale_after: float
    feed_idle_timeout: float
    orderbook_interval: float
    orderbooks_per_tick: int
    unwritten_dir: Path
    """Where a trader saves what the database missed at shutdown (DATA_DIR/unwritten); the next ``runtrader``
    writes it."""
    start_exchange: bool
    """Sim without KALSHI_WS_URL: the trader runs the built-in exchange itself."""
    exchange_public_key_pem: bytes = field(default=b"", repr=False)
    sim_message_rate: float
    """Messages a second the built-in exchange sends (SIM_MESSAGE_RATE)."""
    sim_faults: str
    """Faults for the built-in exchange as SIM_FAULTS spells them; the composition root parses and checks them."""
    replay_of: int | None = None
    """The exchange at ``ws_url`` replays this recorded session (``replaysession --console``)."""
    metrics_port: int | None = None
    """Serve Prometheus metrics on this port (0: any free one); None: off."""
    metrics_host: str = "127.0.0.1"
    trading: TradingChoice | None = None
    """None: the trader watches and never builds a trading client."""


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _markets(raw: str | None, default: list[str], problems: list[str]) -> list[str]:
    """The tickers of --markets, else of TRADER_MARKETS, checked and normalised."""
    variable = "--markets" if raw is not None else "TRADER_MARKETS"
    try:
        markets = parse_ticker_list(raw if raw is not None else ",".join(default))
    except InvalidTicker as exc:
        problems.append(f"{variable}: {exc}")
        return []
    if raw is not None and not markets:
        problems.append("--markets must list at least one ticker, e.g. --markets KXFED-26DEC-T4.25")
    return markets


def web_host_problem(host: str) -> str | None:
    """Why the web app cannot listen on ``host``, or None. A bad name must not pass for a busy port."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    name = host.removesuffix(".")
    if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        return f"{host[:80]!r} is not a host name or IP address"
    try:
        socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return f"cannot resolve {host[:80]!r} to an address"
    return None


def _credentials(settings: Any, problems: list[str]) -> Credentials | None:
    """The key id and private key, or None with every problem recorded. Key material is never shown."""
    key_id = settings.KALSHI_API_KEY_ID
    if not key_id:
        problems.append(f"KALSHI_API_KEY_ID is required when ENVIRONMENT={settings.ENVIRONMENT}")
    path, content = settings.KALSHI_PRIVATE_KEY_PATH, settings.KALSHI_PRIVATE_KEY_CONTENT
    if path and content:
        problems.append("set KALSHI_PRIVATE_KEY_PATH or KALSHI_PRIVATE_KEY_CONTENT, not both")
        return None
    if path:
        variable = "KALSHI_PRIVATE_KEY_PATH"
        try:
            pem = Path(path).expanduser().read_bytes()
        except OSError as exc:
            problems.append(f"KALSHI_PRIVATE_KEY_PATH cannot be read: {exc.strerror}")
            return None
    elif content:
        variable = "KALSHI_PRIVATE_KEY_CONTENT"
        pem = content.replace("\\n", "\n").encode()
    else:
        problems.append(
            f"KALSHI_PRIVATE_KEY_PATH or KALSHI_PRIVATE_KEY_CONTENT is required when ENVIRONMENT={settings.ENVIRONMENT}"
        )
        return None
    try:
        private_key = load_private_key(pem)
    except KeyLoadError as exc:
        problems.append(f"{variable}: {exc}")
        return None
    return Credentials(key_id=key_id, private_key=private_key) if key_id else None


def build_trader_config(
    settings: Any,
    *,
    markets: str | None = None,
    web: bool = True,
    host: str | None = None,
    port: int | None = None,
    confirm_production: bool = False,
    sim_markets: list[str] | None = None,
    sim_keys: tuple[PrivateKey, bytes] | None = None,
    discover: int | None = None,
    crosscheck: float | None = None,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
    metrics_expose: bool = False,
    trade: bool = False,
    strategy: str | None = None,
    strategy_params: str | None = None,
    risk: str | None = None,
    cancel_unknown_orders: bool = False,
    may_trade: bool = True,
) -> TraderConfig:
    """Check every rule and load the key. ``sim_keys`` is the simulator's pair: its private key, loaded,
    and its public key's PEM.

    Raises ConfigurationError listing every broken rule (``.problems``), not only the first.
    """
    problems: list[str] = []
    environment: Environment = settings.ENVIRONMENT
    if environment is Environment.PRODUCTION and not (confirm_production or settings.TRADER_CONFIRM_PRODUCTION):
        problems.append("production trades real money: pass --confirm-production or set TRADER_CONFIRM_PRODUCTION=yes")
    web_port = settings.TRADER_WEB_PORT if port is None else port
    if not 0 <= web_port <= 65535:
        problems.append(f"--port / TRADER_WEB_PORT must be 0..65535; got {web_port}")
    web_host = host or settings.TRADER_WEB_HOST
    host_problem = web_host_problem(web_host) if web else None
    if host_problem:
        problems.append(f"{'--host' if host else 'TRADER_WEB_HOST'}: {host_problem}")
    port_name = "TRADER_METRICS_PORT" if metrics_port is None else "--metrics-port"
    host_name = "--metrics-host" if metrics_host else "TRADER_METRICS_HOST"
    metrics_port = settings.TRADER_METRICS_PORT if metrics_port is None else metrics_port
    metrics_host = metrics_host or settings.TRADER_METRICS_HOST
    if metrics_port is not None:
        expose = metrics_expose or settings.TRADER_METRICS_EXPOSE
        problems += _metrics_problems(
            settings, port=(port_name, metrics_port), host=(host_name, metrics_host), expose=expose
        )
    ws_url, api_url = settings.KALSHI_WS_URL, settings.KALSHI_API_URL
    # A flag overrides its setting and the setting it conflicts with; two choices at one level are refused.
    if discover and markets is not None:
        problems.append("--discover picks the markets itself: leave out --markets")
    elif discover is None and markets is None and settings.TRADER_DISCOVER and settings.TRADER_MARKETS:
        problems.append(
            "TRADER_DISCOVER picks the markets itself: leave TRADER_MARKETS empty "
            "(or choose on the command line with --markets or --discover)"
        )
    if discover is None:
        discover = 0 if markets is not None else settings.TRADER_DISCOVER
    if discover < 0 or discover > MAX_DISCOVER:
        problems.append(f"--discover / TRADER_DISCOVER must be 1..{MAX_DISCOVER} markets (0 for off); got {discover}")
    crosscheck = settings.TRADER_CROSSCHECK_INTERVAL if crosscheck is None else crosscheck
    if crosscheck is not None and not (1 <= crosscheck < math.inf):
        problems.append(f"--crosscheck / TRADER_CROSSCHECK_INTERVAL must be at least 1 second; got {crosscheck}")
    chosen = [] if discover else _markets(markets, settings.TRADER_MARKETS, problems)
    credentials: Credentials | None
    if environment is Environment.SIM:
        start_exchange = not ws_url
        if not start_exchange and (discover or crosscheck) and not api_url:
            problems.append("KALSHI_API_URL is required for --discover or --crosscheck with KALSHI_WS_URL")
        if sim_keys is None:
            raise ConfigurationError("the simulator key pair is missing")
        sim_private_key, public_pem = sim_keys
        if settings.KALSHI_PRIVATE_KEY_PATH or settings.KALSHI_PRIVATE_KEY_CONTENT:
            credentials = _credentials(settings, problems)
        else:
            key_id = settings.KALSHI_API_KEY_ID or SIM_KEY_ID
            credentials = Credentials(key_id=key_id, private_key=sim_private_key)
        if not chosen and not discover:
            chosen = (sim_markets or [])[:SIM_DEFAULT_MARKET_COUNT]
    else:
        start_exchange = False
        public_pem = b""
        credentials = _credentials(settings, problems)
        if not chosen and not discover and not any(p.startswith(("--markets", "TRADER_MARKETS")) for p in problems):
            problems.append(
                f"TRADER_MARKETS (or --markets, or --discover N) is required when ENVIRONMENT={environment}"
            )
    # A replay or a soak watches whatever the trading settings say: backtesting is not what they do.
    trading = (
        None
        if not may_trade
        else _trading_choice(
            settings,
            problems,
            confirm_production=confirm_production or settings.TRADER_CONFIRM_PRODUCTION,
            trade=trade or settings.TRADER_TRADE,
            strategy=settings.TRADER_STRATEGY if strategy is None else strategy,
            strategy_params=settings.TRADER_STRATEGY_PARAMS if strategy_params is None else strategy_params,
            named={
                "--strategy ": "--strategy " if strategy is not None else "TRADER_STRATEGY ",
                "--strategy-params:": "--strategy-params:"
                if strategy_params is not None
                else "TRADER_STRATEGY_PARAMS:",
            },
            risk=settings.TRADER_RISK if risk is None else risk,
            cancel_unknown_orders=cancel_unknown_orders or settings.TRADER_CANCEL_UNKNOWN_ORDERS,
            urls=[] if start_exchange else [(api_url, False), (ws_url, True)],
        )
    )
    if problems or credentials is None:
        raise ConfigurationProblems(problems)
    return TraderConfig(
        environment=environment,
        markets=chosen,
        ws_url=ws_url,
        api_url=api_url,
        credentials=credentials,
        start_exchange=start_exchange,
        web=web,
        web_host=web_host,
        web_port=web_port,
        exchange_public_key_pem=public_pem,
        discover=discover,
        crosscheck_interval=crosscheck,
        sim_message_rate=settings.SIM_MESSAGE_RATE,
        sim_faults=settings.SIM_FAULTS,
        heartbeat_stale_after=settings.TRADER_HEARTBEAT_STALE_SECONDS,
        feed_idle_timeout=settings.TRADER_FEED_IDLE_TIMEOUT,
        orderbook_interval=settings.TRADER_ORDERBOOK_INTERVAL,
        orderbooks_per_tick=settings.TRADER_ORDERBOOKS_PER_TICK,
        console_group=settings.CONSOLE_GROUP,
        unwritten_dir=Path(settings.DATA_DIR) / "unwritten",
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        trading=trading,
    )


def _trading_choice(
    settings: Any,
    problems: list[str],
    *,
    confirm_production: bool,
    trade: bool,
    strategy: str,
    strategy_params: str,
    risk: str,
    cancel_unknown_orders: bool,
    urls: list[tuple[str, bool]],
    named: dict[str, str],
) -> TradingChoice | None:
    """The trading the options ask for, checked against the environment's rules before anything connects.

    A strategy asks for trading in sim and paper; production trades only with --trade (TRADER_TRADE=yes) as
    well as the production confirmation; local never does. ``named`` renames the options in the loader's
    lines to the settings they came from.
    """
    environment: Environment = settings.ENVIRONMENT
    if not (trade or strategy):
        if strategy_params:
            problems.append("--strategy-params / TRADER_STRATEGY_PARAMS need a strategy (--strategy)")
        return None
    permission = TradingPermission(environment, confirm_production=confirm_production, trading_enabled=trade)
    try:
        for url, websocket in urls:
            check_trading_url(permission, url, websocket=websocket)
    except TradingRefused as exc:
        what = "--strategy" if strategy and not trade else "--trade"
        problems.append(f"{what}: {exc}")
        return None
    try:
        limits = RiskLimits.from_mapping(_pairs(risk)) if risk else RiskLimits()
    except ValueError as exc:
        problems.append(f"--risk / TRADER_RISK: {exc}")
        limits = RiskLimits()
    params: dict[str, Any] = {}
    if strategy:
        try:
            params = load_strategy(strategy, strategy_params or None).params
        except StrategyLoadError as exc:
            line = str(exc)
            for option, name in named.items():
                line = line.replace(option, name, 1) if line.startswith(option) else line
            problems.append(line)
    return TradingChoice(
        permission=permission,
        strategy_path=strategy,
        strategy_params=params,
        limits=limits,
        cancel_unknown_orders=cancel_unknown_orders,
    )


def _pairs(text: str) -> dict[str, str]:
    """ "a=1,b=0.05" as {"a": "1", "b": "0.05"}; ValueError naming a part that is not name=value."""
    pairs: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, equals, value = part.partition("=")
        if not equals or not name.strip() or not value.strip():
            raise ValueError(f"{part!r} is not name=value (e.g. max_position=5,price_band=0.05)")
        pairs[name.strip()] = value.strip()
    return pairs


def _metrics_problems(settings: Any, *, port: tuple[str, int], host: tuple[str, str], expose: bool) -> list[str]:
    """What is wrong with serving metrics on ``host``:``port``, each given as (the option or variable it came
    from, its value). The port has no login, so outside sim it stays on loopback unless the operator asks."""
    (port_name, port_value), (host_name, host_value) = port, host
    if not 0 <= port_value <= 65535:
        return [f"{port_name} must be 0..65535; got {port_value}"]
    problem = web_host_problem(host_value)
    if problem:
        return [f"{host_name}: {problem}"]
    if settings.ENVIRONMENT is not Environment.SIM and not expose and not is_loopback_host(host_value):
        return [
            f"{host_name}: {host_value[:80]} is beyond loopback and the metrics port has no login; pass "
            "--metrics-expose (or set TRADER_METRICS_EXPOSE=yes) to serve metrics there anyway"
        ]
    return []
