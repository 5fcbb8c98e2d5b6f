"""``manage.py runtrader``: the trader loop, plus (by default) the web app and, in sim, the exchange."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from apps.console.embedded import bind_problem, serve_with_daphne
from apps.console.presence import console_counts
from apps.kalshi.environments import ConfigurationError, ConfigurationProblems, Environment, is_loopback_host
from apps.trader.config import TraderConfig
from apps.trader.preflight import database_up_to_date, service_problems
from apps.trader.runtime import TraderRuntime, load_trader_config, tune_interpreter
from apps.trader.selectors import session_sharing_markets
from apps.trader.services import sessions_close_abandoned, unwritten_load_all

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Run the Trader V3 loop: state machine, Kalshi orderbook client, recording and broadcasting. "
        "By default it also serves the console on 127.0.0.1:8006, and in the sim environment it starts the "
        "built-in exchange. SIGINT/SIGTERM shut it down cleanly."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--env",
            choices=[e.value for e in Environment],
            help="Environment: sim (default, built-in exchange), paper (Kalshi demo), local (production "
            "market data, no trading), production (needs --confirm-production). Same as ENVIRONMENT; "
            ".env.<env> is read before .env.",
        )
        parser.add_argument(
            "--markets",
            metavar="T1,T2",
            help="Comma-separated market tickers to subscribe to (default: TRADER_MARKETS; in sim the first "
            "three simulator markets).",
        )
        parser.add_argument(
            "--discover",
            type=int,
            metavar="N",
            help="Instead of --markets, subscribe to the N open markets with the highest 24 h volume, found "
            "through REST GET /markets (default TRADER_DISCOVER). A closed exchange is waited for.",
        )
        parser.add_argument(
            "--crosscheck",
            type=float,
            metavar="SECONDS",
            help="Every SECONDS, compare each live book with REST GET /markets/{ticker}/orderbook; a mismatch "
            "seen twice in a row triggers a resync (default TRADER_CROSSCHECK_INTERVAL; off).",
        )
        parser.add_argument("--host", help="Interface for the web app (default TRADER_WEB_HOST, 127.0.0.1).")
        parser.add_argument("--port", type=int, help="Port for the web app (default TRADER_WEB_PORT, 8006).")
        parser.add_argument(
            "--no-web",
            action="store_true",
            help="Run only the trader; serve the console from separate web workers "
            "(`python -m apps.console.webserver trader_v3.asgi:application`) joined by REDIS_URL.",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            metavar="N",
            help="Serve Prometheus metrics at http://HOST:N/metrics (default TRADER_METRICS_PORT; off). 0 picks a "
            "free port, printed at start.",
        )
        parser.add_argument(
            "--metrics-host",
            metavar="H",
            help="Interface for the metrics port (default TRADER_METRICS_HOST, 127.0.0.1). Outside sim a host "
            "beyond loopback also needs --metrics-expose: the port has no login.",
        )
        parser.add_argument(
            "--metrics-expose",
            action="store_true",
            help="Allow --metrics-host beyond loopback outside sim (or TRADER_METRICS_EXPOSE=yes).",
        )
        parser.add_argument(
            "--confirm-production",
            action="store_true",
            help="Required to start in production (or TRADER_CONFIRM_PRODUCTION=yes).",
        )
        trading = parser.add_argument_group("trading (sim and paper; never local; production needs --trade too)")
        trading.add_argument(
            "--strategy",
            metavar="DOTTED.PATH",
            help="Run this strategy class, e.g. apps.strategies.quoter.Quoter (or TRADER_STRATEGY); trades in sim "
            "and paper.",
        )
        trading.add_argument(
            "--strategy-params",
            metavar="JSON",
            help='The strategy\'s parameters as a JSON object, e.g. \'{"spread": "0.02"}\' '
            "(or TRADER_STRATEGY_PARAMS).",
        )
        trading.add_argument(
            "--trade",
            action="store_true",
            help="Enable trading explicitly (or TRADER_TRADE=yes): without --strategy the trader syncs the account "
            "and takes cancels and the kill switch from the console; production trades only with it.",
        )
        trading.add_argument(
            "--risk",
            metavar="NAME=VALUE,...",
            help="Risk limits over their defaults, e.g. max_position=5,max_order_size=1,price_band=0.05 "
            "(or TRADER_RISK; names in the README).",
        )
        trading.add_argument(
            "--cancel-unknown-orders",
            action="store_true",
            help="Cancel resting orders of the account this trader did not place, at every account sync "
            "(or TRADER_CANCEL_UNKNOWN_ORDERS=yes); by default they are reported and left alone.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = self.load_config(options)
        except ConfigurationError as exc:
            self.fail(exc.problems)
        self.fail(service_problems())
        done, problem = database_up_to_date()
        self.fail([problem] if problem else [])
        if done:
            self.stdout.write(done)
        for warning in self.exposure_warnings(config):
            self.stderr.write(warning)
        for line in unwritten_load_all(directory=config.unwritten_dir):
            logger.warning("saved at an earlier shutdown: %s", line)
        stale_after = config.heartbeat_stale_after
        closed = sessions_close_abandoned(environment=config.environment.value, stale_after=stale_after)
        if closed:
            logger.warning("marked %d session(s) left running by an earlier process as failed", closed)
        self.fail(self.shard_problems(config, stale_after=stale_after))
        self.stdout.write(self.describe(config))
        sys.exit(self.run(config))

    def fail(self, problems: list[str]) -> None:
        """Print each problem as one ``configuration error:`` line and exit 2; nothing when there are none."""
        if problems:
            for problem in problems:
                self.stderr.write(f"configuration error: {problem}")
            sys.exit(2)

    def shard_problems(self, config: TraderConfig, *, stale_after: float) -> list[str]:
        """A live trader (fresh heartbeat) already on one of these markets refuses this one; disjoint ones are shards.

        Discovery picks its markets after start, so it is not checked here.
        """
        found = session_sharing_markets(markets=config.markets, stale_after=stale_after)
        if found is None:
            return []
        session, shared = found
        return [
            f"--markets / TRADER_MARKETS: session {session.pk} ({session.environment}) is already running on "
            f"{', '.join(shared)}; stop it or give this trader other markets (disjoint markets run as shards; "
            f"the markets of a trader that died are free once its heartbeat is {stale_after:g} s old)"
        ]

    def load_config(self, options: dict[str, Any]) -> TraderConfig:
        """Check every rule before anything connects; raises ConfigurationError naming the variable."""
        requested = options.get("env")
        if requested and requested != settings.ENVIRONMENT:
            raise ConfigurationError(
                f"--env {requested} must be given on the manage.py command line "
                f"(settings loaded {settings.ENVIRONMENT})"
            )
        config = load_trader_config(
            settings,
            markets=options.get("markets"),
            web=not options.get("no_web"),
            host=options.get("host"),
            port=options.get("port"),
            confirm_production=bool(options.get("confirm_production")),
            discover=options.get("discover"),
            crosscheck=options.get("crosscheck"),
            metrics_port=options.get("metrics_port"),
            metrics_host=options.get("metrics_host"),
            metrics_expose=bool(options.get("metrics_expose")),
            trade=bool(options.get("trade")),
            strategy=options.get("strategy"),
            strategy_params=options.get("strategy_params"),
            risk=options.get("risk"),
            cancel_unknown_orders=bool(options.get("cancel_unknown_orders")),
        )
        problems = []
        if config.web and not is_loopback_host(config.web_host) and not settings.ALLOWED_HOSTS_SET:
            problems.append(
                f"ALLOWED_HOSTS must list the names browsers use to reach {config.web_host} "
                "(e.g. ALLOWED_HOSTS=trader.example.com) when the web app listens beyond loopback"
            )
        problem = bind_problem(config.web_host, config.web_port) if config.web else None
        if problem:
            problems.append(problem)
        if config.metrics_port:  # 0 takes any free port: nothing to check
            problem = bind_problem(
                config.metrics_host,
                config.metrics_port,
                host_variable="TRADER_METRICS_HOST",
                port_variable="TRADER_METRICS_PORT",
                port_option="--metrics-port",
            )
            if problem:
                problems.append(problem)
        if problems:
            raise ConfigurationProblems(problems)
        return config

    def exposure_warnings(self, config: TraderConfig) -> list[str]:
        """A warning line for the web app and one for the metrics port when they listen beyond loopback."""
        warnings = []
        if config.web and not is_loopback_host(config.web_host):
            who = (
                "anyone who can reach it sees the sim console"
                if config.environment is Environment.SIM
                else ("the console, its socket and /v3/status need a staff login")
            )
            warnings.append(f"warning: the web app listens on {config.web_host}, beyond loopback: {who}")
        if config.metrics_port is not None and not is_loopback_host(config.metrics_host):
            warnings.append(
                f"warning: the metrics port listens on {config.metrics_host}, beyond loopback: anyone who can "
                "reach it reads the trader's metrics (it has no login)"
            )
        return warnings

    def announce_metrics(self, host: str, port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        self.stdout.write(f"Metrics: http://{shown}:{port}/metrics")
        self.stdout.flush()

    def describe(self, config: TraderConfig) -> str:
        exchange = "built-in simulator on loopback" if config.start_exchange else config.ws_url
        markets = ", ".join(config.markets) or f"the top {config.discover} by 24 h volume"
        lines = [f"Trader V3 | environment {config.environment.value} | markets {markets}", f"Exchange: {exchange}"]
        trading = config.trading
        if trading is not None:
            strategy = trading.strategy_path or "none (cancels and the kill switch from the console)"
            limits = ", ".join(f"{name} {value}" for name, value in trading.limits.describe().items())
            lines.append(f"Trading: strategy {strategy} | limits {limits}")
        return "\n".join(lines)

    def run(self, config: TraderConfig) -> int:
        """Run until shutdown; returns the exit code."""
        tune_interpreter()
        runtime = TraderRuntime(
            config,
            consoles=console_counts if config.web else None,
            on_metrics_listening=self.announce_metrics,
        )
        # Until the trader's loop installs its own handlers, a signal is kept and honoured as soon as the
        # trader runs: a SIGTERM right after start still closes the session and exits 0.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(
                sig, lambda signum, _frame: runtime.request_shutdown(f"received {signal.Signals(signum).name}")
            )
        if not config.web:
            asyncio.run(runtime.run())
            return 0

        def announce(host: str, port: int) -> None:
            shown = f"[{host}]" if ":" in host else host
            self.stdout.write(f"Console: http://{shown}:{port}/v3-trader  (status /v3/status, health /v3/health)")
            self.stdout.flush()

        return serve_with_daphne(runtime.run, host=config.web_host, port=config.web_port, on_listening=announce)
