"""``python manage.py runexchange``: run the built-in Kalshi exchange simulator until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.exchange.config import DEFAULT_MARKETS, SimulatorConfig
from apps.exchange.faults import Faults
from apps.exchange.keys import ensure_key_pair
from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.messages import ERROR_BUFFER_OVERFLOW, ERROR_CHANNEL
from apps.kalshi.signing import KeyLoadError


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _dollars(text: str) -> int:
    """Dollars such as 10000 or 2500.50 as micro-dollars."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError("must be a dollar amount") from None
    if not value.is_finite() or value < 0 or value != value.quantize(Decimal("0.000001")):
        raise ValueError("must be a dollar amount of at least 0, to the micro-dollar")
    return int(value * 1_000_000)


def _settlement(text: str) -> tuple[str, str, float]:
    """TICKER=yes|no[@SECONDS] (seconds after the start, default 0)."""
    ticker, _, rest = text.partition("=")
    result, _, after = rest.partition("@")
    if not ticker or result not in ("yes", "no"):
        raise ValueError("must be TICKER=yes|no[@SECONDS]")
    return ticker, result, float(after) if after else 0.0


def _api_key(text: str) -> tuple[str, Path]:
    key_id, _, path = text.partition("=")
    if not key_id or not path:
        raise ValueError("must be KEY_ID=PUBLIC_KEY_PEM")
    return key_id, Path(path)


class Command(BaseCommand):
    help = "Run the built-in Kalshi exchange simulator (WebSocket API v2 and REST on one port)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        parser.add_argument(
            "--port", type=int, default=8007, help="the WebSocket API's port, 0 = any free (default 8007)"
        )
        parser.add_argument(
            "--rest-port", type=int, default=8008, help="the REST API's port, 0 = any free (default 8008)"
        )
        parser.add_argument(
            "--markets",
            default="",
            help=f"comma-separated tickers (default {','.join(DEFAULT_MARKETS)})",
        )
        parser.add_argument("--rate", type=float, default=50.0, help="orderbook deltas per second (default 50)")
        parser.add_argument("--seed", type=int, default=None, help="make books and deltas repeatable")
        parser.add_argument(
            "--public-key",
            type=Path,
            default=None,
            help="PEM public key that signatures are checked against (default: DATA_DIR/sim_public_key.pem, "
            "generated with its private key when missing)",
        )
        parser.add_argument("--key-id", default=None, help="require this KALSHI-ACCESS-KEY")
        parser.add_argument("--ping-interval", type=_positive_float, default=10.0, help="seconds (default 10)")
        parser.add_argument(
            "--outbound-limit",
            type=_positive_int,
            default=10_000,
            help="frames queued for a slow client before error 25 (default 10000)",
        )
        parser.add_argument("--exchange-closed", action="store_true", help="start with the exchange closed")
        trading = parser.add_argument_group("trading (V2 order endpoints, accounts per API key)")
        trading.add_argument(
            "--starting-balance",
            type=_dollars,
            default=10_000 * 1_000_000,
            metavar="DOLLARS",
            help="cash of each new account (default 10000)",
        )
        trading.add_argument(
            "--api-key",
            type=_api_key,
            action="append",
            default=[],
            metavar="KEY_ID=PEM",
            help="accept another API key (its public key PEM file): an account of its own; repeatable",
        )
        trading.add_argument(
            "--maker-fee-markets",
            default="",
            metavar="TICKERS",
            help="comma-separated markets that charge makers 0.0175 x C x P x (1-P) (default: none)",
        )
        trading.add_argument(
            "--read-rate", type=_positive_float, default=200.0, help="portfolio read tokens per second (default 200)"
        )
        trading.add_argument(
            "--write-rate",
            type=_positive_float,
            default=100.0,
            help="order write tokens per second; a create costs 10, a cancel 2 (default 100)",
        )
        trading.add_argument(
            "--settle",
            type=_settlement,
            action="append",
            default=[],
            metavar="TICKER=yes|no[@SECONDS]",
            help="settle a market that many seconds after the start (pays $1 per winning contract); repeatable. "
            'While running, POST /sim/markets/TICKER/settle (signed) with {"result": "yes"} does the same',
        )
        faults = parser.add_argument_group("faults (all off by default)")
        faults.add_argument(
            "--drop-every", type=_positive_float, metavar="SECONDS", help="abort every connection this often"
        )
        faults.add_argument(
            "--skip-seq-every",
            type=_positive_int,
            metavar="N",
            help="skip every Nth delta of a subscription (its seq is consumed)",
        )
        faults.add_argument(
            "--stall-every",
            type=_positive_float,
            metavar="SECONDS",
            help="stall data (pings continue) this often",
        )
        faults.add_argument(
            "--stall-for",
            type=_positive_float,
            default=5.0,
            metavar="SECONDS",
            help="length of each stall (default 5)",
        )
        faults.add_argument("--stall", action="store_true", help="stall data for the whole run")
        faults.add_argument("--no-ping", action="store_true", help="send no heartbeat pings")
        faults.add_argument(
            "--error-every",
            type=_positive_int,
            metavar="N",
            help="end a subscription with --error-code after every N deltas",
        )
        faults.add_argument(
            "--error-code",
            type=int,
            choices=(ERROR_CHANNEL, ERROR_BUFFER_OVERFLOW),
            default=ERROR_CHANNEL,
            help="terminal error for --error-every (default 10)",
        )
        faults.add_argument("--reject-handshake", action="store_true", help="answer every handshake with 401")
        faults.add_argument(
            "--malformed-every",
            type=_positive_int,
            metavar="N",
            help="add a malformed frame after every N frames",
        )
        faults.add_argument(
            "--oversized-every",
            type=_positive_int,
            metavar="N",
            help="add an oversized (> 1 MiB) frame after every N frames",
        )
        faults.add_argument(
            "--rest-429", type=int, default=0, metavar="K", help="answer the first K REST requests with 429"
        )
        faults.add_argument(
            "--reject-orders", type=int, default=0, metavar="N", help="refuse the next N order creates (400)"
        )
        faults.add_argument(
            "--order-delay",
            type=_positive_float,
            default=0.0,
            metavar="SECONDS",
            help="answer every order request this much later",
        )
        faults.add_argument(
            "--drop-private", type=int, default=0, metavar="N", help="do not send the next N private messages"
        )
        faults.add_argument(
            "--accept-then-5xx",
            type=int,
            default=0,
            metavar="N",
            help="carry out the next N order requests (create, cancel, amend, decrease, batch) but answer them 500 "
            "(a client must not place twice, and must find out what its change did)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        public_key_path: Path | None = options["public_key"]
        if public_key_path is None:
            pair = ensure_key_pair(Path(settings.DATA_DIR))
            public_key_path = pair.public_key
            self.stdout.write(f"Using the simulator key pair in {pair.public_key.parent}")
        try:
            public_key_pem = public_key_path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read the public key {public_key_path}: {exc.strerror}") from None
        markets = [t.strip() for t in options["markets"].split(",") if t.strip()] or None
        api_keys = {}
        for key_id, path in options["api_key"]:
            try:
                api_keys[key_id] = path.read_bytes()
            except OSError as exc:
                raise CommandError(f"cannot read the public key {path}: {exc.strerror}") from None
        config = SimulatorConfig(
            host=options["host"],
            port=options["port"],
            rest_port=options["rest_port"],
            public_key_pem=public_key_pem,
            key_id=options["key_id"],
            markets=markets,
            message_rate=options["rate"],
            ping_interval=options["ping_interval"],
            seed=options["seed"],
            outbound_limit=options["outbound_limit"],
            api_keys=api_keys,
            starting_balance=options["starting_balance"],
            maker_fee_markets=[t.strip() for t in options["maker_fee_markets"].split(",") if t.strip()],
            read_rate=options["read_rate"],
            write_rate=options["write_rate"],
            faults=Faults(
                drop_every=options["drop_every"],
                skip_seq_every=options["skip_seq_every"],
                stall=options["stall"],
                stall_every=options["stall_every"],
                stall_for=options["stall_for"],
                no_ping=options["no_ping"],
                error_every=options["error_every"],
                error_code=options["error_code"],
                reject_handshake=options["reject_handshake"],
                malformed_every=options["malformed_every"],
                oversized_every=options["oversized_every"],
                rest_429=options["rest_429"],
                reject_orders=options["reject_orders"],
                order_delay=options["order_delay"],
                drop_private=options["drop_private"],
                accept_then_5xx=options["accept_then_5xx"],
            ),
        )
        try:
            simulator = ExchangeSimulator(config)
        except (KeyLoadError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        unknown = [t for t, _, _ in options["settle"] if t not in simulator.markets]
        if unknown:
            raise CommandError(f"--settle: unknown market {', '.join(unknown)}")
        if options["exchange_closed"]:
            simulator.set_exchange_status(False)
        try:
            asyncio.run(self._run(simulator, options["settle"]))
        except OSError as exc:
            raise CommandError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from None

    async def _run(self, simulator: ExchangeSimulator, settlements: list[tuple[str, str, float]]) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await simulator.start()
        for ticker, result, after in settlements:
            loop.call_later(after, self._settle, simulator, ticker, result)
        self.stdout.write(f"Exchange simulator listening: WebSocket {simulator.ws_url}  REST {simulator.api_url}")
        self.stdout.write(f"Markets: {', '.join(simulator.markets)}")
        self.stdout.flush()
        try:
            await stop.wait()
        finally:
            self.stdout.write("Stopping the exchange simulator")
            await simulator.stop()

    def _settle(self, simulator: ExchangeSimulator, ticker: str, result: str) -> None:
        settled = simulator.settle_market(ticker, result)
        self.stdout.write(f"Settled {ticker} {result}: {len(settled)} positions paid")
        self.stdout.flush()
