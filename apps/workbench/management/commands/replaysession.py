"""``manage.py replaysession <id|latest> --market T [--at-seq N]``: a recorded book; ``--serve`` the session on
an exchange; or ``--console``: replay it into a trader of its own, with the console."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.console.embedded import serve_with_daphne
from apps.exchange.config import SimulatorConfig
from apps.exchange.keys import ensure_key_pair
from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.environments import ConfigurationError, Environment
from apps.marketdata.selectors import RecordingError, book_at, recorded_markets
from apps.trader.preflight import database_up_to_date
from apps.trader.runtime import TraderRuntime, load_trader_config
from apps.trader.selectors import session_resolve
from apps.workbench.replay import SessionReplay, replay_through_trader


def _speed(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


class Command(BaseCommand):
    help = (
        'Print a market\'s book rebuilt from a recorded session, as JSON {"yes": [[price, size], ...], '
        '"no": [...]} with the best level first; at the end of the recording, or at --at-seq N. With --serve, '
        "replay the whole session through the built-in exchange instead, so runtrader (KALSHI_WS_URL set to "
        "the printed URL) and the console run on recorded data."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("session", help="a session id, or 'latest'")
        parser.add_argument("--market", metavar="TICKER", help="the market whose book to print")
        parser.add_argument("--at-seq", type=int, metavar="N", help="the book once seq N of the subscription applied")
        parser.add_argument(
            "--sid",
            type=int,
            help="the subscription --at-seq counts on (needed when the market was recorded on several)",
        )
        serve = parser.add_argument_group("serving")
        serve.add_argument("--serve", action="store_true", help="replay the session through the built-in exchange")
        serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        serve.add_argument("--port", type=int, default=8007, help="port to bind, 0 = any free (default 8007)")
        serve.add_argument(
            "--speed",
            type=_speed,
            default=1.0,
            metavar="X",
            help="X times the recorded pace (default 1: the original pacing; 0: as fast as possible)",
        )
        serve.add_argument(
            "--max-pause",
            type=_speed,
            metavar="SECONDS",
            help="cut recorded silences (outages) down to this many seconds",
        )
        serve.add_argument(
            "--no-wait",
            action="store_true",
            help="start at once instead of when the first client subscribes",
        )
        serve.add_argument("--exit", action="store_true", help="stop when the replay is over")
        console = parser.add_argument_group("replaying into a console")
        console.add_argument(
            "--console",
            action="store_true",
            help="replay into a trader of this command's own, with the web console: the new session is recorded "
            "as a replay of this one, the console labels it so, and it shuts down when the recording ends "
            "(--speed and --max-pause apply; sim only)",
        )
        console.add_argument(
            "--web-port", type=int, metavar="P", help="port of the console (default TRADER_WEB_PORT, 8006; 0 = any)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        done, problem = database_up_to_date()
        if problem:
            raise CommandError(problem)
        if done:
            self.stderr.write(done)
        try:
            session = session_resolve(options["session"])
        except RecordingError as exc:
            raise CommandError(str(exc)) from None
        if options["serve"] and options["console"]:
            raise CommandError("--serve serves an exchange for a trader of your own; --console runs one: choose one")
        if options["serve"]:
            self.serve(session.pk, options)
            return
        if options["console"]:
            raise SystemExit(self.console(session.pk, options))
        market: str | None = options["market"]
        if not market:
            raise CommandError("--market is required (or --serve to replay the whole session)")
        if options["sid"] is not None and options["at_seq"] is None:
            raise CommandError("--sid goes with --at-seq")
        try:
            rebuilt = book_at(session_id=session.pk, market_ticker=market, seq=options["at_seq"], sid=options["sid"])
        except RecordingError as exc:
            raise CommandError(str(exc)) from None
        if not rebuilt.current:
            self.stderr.write(
                f"warning: the book of {market} was not known there ({rebuilt.reason}); "
                "this is the last book the recording knew"
            )
        self.stdout.write(json.dumps(rebuilt.book.as_wire(), separators=(", ", ": ")))

    def serve(self, session_id: int, options: dict[str, Any]) -> None:
        markets = recorded_markets(session_id=session_id)
        if not markets:
            raise CommandError(f"session {session_id} has no recorded market data")
        pair = ensure_key_pair(Path(settings.DATA_DIR))
        exchange = ExchangeSimulator(
            SimulatorConfig(
                host=options["host"],
                port=options["port"],
                public_key_pem=pair.public_key.read_bytes(),
                markets=markets,
                message_rate=0.0,
            )
        )
        replay = SessionReplay(exchange, session_id=session_id, speed=options["speed"], max_pause=options["max_pause"])
        try:
            asyncio.run(self._serve(exchange, replay, options))
        except OSError as exc:
            raise CommandError(f"cannot listen on {options['host']}:{options['port']}: {exc.strerror}") from None

    async def _serve(self, exchange: ExchangeSimulator, replay: SessionReplay, options: dict[str, Any]) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await replay.prepare()
        await exchange.start()
        self.stdout.write(f"Replaying session {replay.session_id} on {exchange.ws_url}  (REST {exchange.api_url})")
        self.stdout.write(f"Markets: {', '.join(exchange.markets)}")
        self.stdout.write(
            f"Run the trader on it: KALSHI_WS_URL={exchange.ws_url} python manage.py runtrader "
            f"--markets {','.join(exchange.markets)}"
        )
        self.stdout.flush()
        try:
            if not options["no_wait"]:
                self.stdout.write("Waiting for a client to subscribe ...")
                self.stdout.flush()
                while exchange.stats["subscriptions"] == 0 and not stop.is_set():
                    await asyncio.sleep(0.05)
            if stop.is_set():
                return
            speed = options["speed"]
            self.stdout.write(f"Replay started ({'as fast as possible' if speed == 0 else f'speed {speed:g}x'})")
            self.stdout.flush()
            task = asyncio.create_task(replay.run())
            stopper = asyncio.create_task(stop.wait())
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return
            stopper.cancel()
            stats = task.result()
            self.stdout.write(
                f"Replay finished: {stats.items:,} recorded items, {stats.changes:,} changes sent"
                + (f", {stats.rejected:,} deltas rejected" if stats.rejected else "")
            )
            if not options["exit"]:
                self.stdout.write("Serving the final books until Ctrl-C")
                self.stdout.flush()
                await stop.wait()
        finally:
            await exchange.stop()

    def console(self, session_id: int, options: dict[str, Any]) -> int:
        """Replay into a trader of this process with the web app; returns the exit code."""
        if settings.ENVIRONMENT is not Environment.SIM:
            raise CommandError(
                "--console replays in sim: run it with ENVIRONMENT=sim (DATABASE_URL may point at another "
                "environment's database to replay its sessions)"
            )
        markets = recorded_markets(session_id=session_id)
        if not markets:
            raise CommandError(f"session {session_id} has no recorded market data")
        try:
            config = load_trader_config(
                settings, markets=",".join(markets), web=True, port=options["web_port"], may_trade=False
            )
        except ConfigurationError as exc:
            raise CommandError("; ".join(exc.problems)) from None
        exchange = ExchangeSimulator(
            SimulatorConfig(
                host="127.0.0.1",
                port=0,
                public_key_pem=config.exchange_public_key_pem,
                markets=markets,
                message_rate=0.0,
            )
        )
        replay = SessionReplay(exchange, session_id=session_id, speed=options["speed"], max_pause=options["max_pause"])

        async def main() -> None:
            await replay.prepare()
            await exchange.start()
            try:
                replaying = dataclasses.replace(
                    config, start_exchange=False, ws_url=exchange.ws_url, api_url=exchange.api_url, replay_of=session_id
                )
                stats = await replay_through_trader(replay, TraderRuntime(replaying))
                if stats is not None:
                    self.stdout.write(
                        f"Replay finished: {stats.items:,} recorded items, {stats.changes:,} changes sent"
                    )
            finally:
                await exchange.stop()

        def announce(host: str, port: int) -> None:
            shown = f"[{host}]" if ":" in host else host
            self.stdout.write(f"Replaying session {session_id} ({len(markets)} markets) into a new session")
            self.stdout.write(f"Console: http://{shown}:{port}/v3-trader  (status /v3/status, health /v3/health)")
            self.stdout.flush()

        return serve_with_daphne(main, host=config.web_host, port=config.web_port, on_listening=announce)
