"""``manage.py soak``: run the trader the way users do for a long while and watch its memory.

A benchmark, not a test: it prints figures. The built-in exchange runs in this process at ``--rate``
(optionally throwing a rotating mix of faults); the trader is a separate ``runtrader`` process with its
web app, connected to that exchange through ``KALSHI_WS_URL`` as in the README's sim setup. So the RSS
printed every interval is the trader's own, with nothing of the exchange in it. At the end the faults
stop, the trader heals, the exchange is frozen (a stall: no new deltas), and every market is compared
with the exchange's true book at the trader's last seq, both as ``/v3/status`` shows its top and as the
recording rebuilds the whole book. Then the trader gets SIGTERM, and its recorded rows are counted
against the messages it applied.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.utils import timezone

from apps.exchange.config import DEFAULT_MARKETS, SimulatorConfig
from apps.exchange.faults import Faults
from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.environments import ConfigurationError, Environment
from apps.kalshi.messages import ERROR_BUFFER_OVERFLOW
from apps.marketdata.models import RecordedDelta, RecordedSnapshot
from apps.marketdata.selectors import RecordingError, book_at
from apps.trader.models import TradingSession
from apps.trader.preflight import unapplied_migrations
from apps.trader.runtime import load_trader_config
from apps.trader.selectors import market_tops, shard_status

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
GROWTH_TARGET = 5.0
"""Per cent of RSS growth after warm-up that counts as flat."""


def process_rss(pid: int) -> int | None:
    """Resident set size of process ``pid`` in bytes (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        pass
    try:  # no /proc (macOS): ps reports kilobytes
        out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, check=True)
        return int(out.stdout.strip()) * 1024
    except (OSError, ValueError, subprocess.CalledProcessError):
        return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fault_mix(rng: random.Random) -> Faults:
    """One phase of faults: some of drops, seq gaps, stalls, error 25 and malformed frames, or none."""
    return Faults(
        drop_every=rng.choice([None, None, None, 15.0]),
        skip_seq_every=rng.choice([None, 2000, 6000]),
        stall_every=rng.choice([None, None, 7.0]),
        stall_for=rng.choice([1.0, 3.0]),
        error_every=rng.choice([None, 15000]),
        error_code=ERROR_BUFFER_OVERFLOW,
        malformed_every=rng.choice([None, 700]),
    )


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


@dataclass
class Reading:
    elapsed: float
    rss: int
    status: dict[str, Any]
    backlog: int
    """The most rows the recorder held unwritten since the previous reading: a backlog raises the RSS
    high-water mark, which the allocator keeps after the rows are written."""


@dataclass
class Verdict:
    exact: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


class Command(BaseCommand):
    help = (
        "Soak benchmark (not a test): run `runtrader` against this process's built-in exchange at --rate "
        "messages per second for --minutes, optionally under a rotating mix of faults, print the trader "
        "process's RSS every --interval seconds with its growth since the first reading after --warmup, "
        "then check that every book is exact and that every applied message was recorded. Sim only; it "
        "records into the configured database like any trader session. Exit code 1 when a book is wrong, "
        "a row is missing or the trader does not stop cleanly."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--minutes", type=float, default=20.0, help="how long the trader runs before the checks (default 20)"
        )
        parser.add_argument(
            "--rate",
            type=float,
            default=2500.0,
            help="orderbook_delta messages per second the exchange sends, across all markets (default 2500)",
        )
        parser.add_argument(
            "--faults",
            action="store_true",
            help="every --fault-period seconds switch to a new random mix of dropped connections, seq gaps, "
            "stalls, error 25 and malformed frames (some phases have none); off for the final checks",
        )
        parser.add_argument(
            "--fault-period", type=float, default=20.0, help="seconds each fault mix lasts (default 20)"
        )
        parser.add_argument(
            "--markets",
            metavar="T1,T2",
            help="comma-separated simulator markets (default: the three that `make run` subscribes to)",
        )
        parser.add_argument(
            "--interval", type=float, default=60.0, help="seconds between RSS readings in the table (default 60)"
        )
        parser.add_argument(
            "--warmup",
            type=float,
            default=60.0,
            help="seconds before the reading that growth is measured from (default 60): imports, caches and "
            "buffers fill up first",
        )
        parser.add_argument("--seed", type=int, default=2026, help="seed for the exchange and the fault mix")
        parser.add_argument(
            "--heal-timeout",
            type=float,
            default=120.0,
            help="seconds the trader gets to heal after the faults stop (default 120)",
        )
        parser.add_argument(
            "--log",
            type=Path,
            help="where the trader's own output goes (default DATA_DIR/soak-trader.log)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.ENVIRONMENT is not Environment.SIM:
            raise CommandError(f"soak runs in sim only (ENVIRONMENT is {settings.ENVIRONMENT})")
        for name in ("minutes", "rate", "interval", "fault_period"):
            if not options[name] > 0:
                raise CommandError(f"--{name.replace('_', '-')} must be a positive number; got {options[name]}")
        if options["warmup"] < 0 or options["heal_timeout"] <= 0:
            raise CommandError("--warmup must be at least 0 and --heal-timeout positive")
        pending = unapplied_migrations()
        if pending:
            raise CommandError(f"the database lacks {len(pending)} migration(s); run `python manage.py migrate`")
        markets = [m.strip() for m in (options["markets"] or "").split(",") if m.strip()]
        unknown = [m for m in markets if m not in DEFAULT_MARKETS]
        if unknown:
            raise CommandError(f"--markets: not simulator markets: {', '.join(unknown)}")
        try:
            config = load_trader_config(
                settings,
                markets=",".join(markets) or None,
                web=True,
                host="127.0.0.1",
                port=None,
                confirm_production=False,
                discover=0,
                crosscheck=None,
                may_trade=False,
            )
        except ConfigurationError as exc:
            raise CommandError(str(exc)) from None
        logging.getLogger("apps.exchange").setLevel(logging.WARNING)  # the exchange's chatter is not the report
        log_path = options["log"] or Path(settings.DATA_DIR) / "soak-trader.log"
        soak = Soak(self.stdout, self.stderr, config.markets, config.exchange_public_key_pem, log_path, options)
        if not asyncio.run(soak.run()):
            sys.exit(1)


class Soak:
    """One soak run; ``run`` returns whether the books were exact and nothing was lost."""

    def __init__(
        self,
        out: OutputWrapper,
        err: OutputWrapper,
        markets: list[str],
        public_key_pem: bytes,
        log_path: Path,
        options: dict[str, Any],
    ) -> None:
        self.out, self.err = out, err
        self.markets = markets
        self.public_key_pem = public_key_pem
        self.log_path = log_path
        self.duration = options["minutes"] * 60
        self.rate = options["rate"]
        self.faults = bool(options["faults"])
        self.fault_period = options["fault_period"]
        self.interval = options["interval"]
        self.warmup = options["warmup"]
        self.seed = options["seed"]
        self.heal_timeout = options["heal_timeout"]
        self.tty = err.isatty()
        self.readings: list[Reading] = []
        self._progress_at = 0.0
        self._backlog = 0

    async def run(self) -> bool:
        sim = ExchangeSimulator(
            SimulatorConfig(
                public_key_pem=self.public_key_pem,
                markets=list(DEFAULT_MARKETS),
                message_rate=self.rate,
                seed=self.seed,
            )
        )
        await sim.start()
        trader = await asyncio.to_thread(self._start_trader, sim)
        try:
            session_id = await self._session_of(trader, sim.ws_url)
            self._header(trader.pid, session_id)
            await self._soak(sim, trader, session_id)
            verdict = await self._check_books(sim, session_id)
        finally:
            if trader.poll() is None:
                trader.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(self._wait, trader)
            await sim.stop()
        lost = await sync_to_async(self._lost)(session_id)
        return self._summary(sim, verdict, code, lost)

    def _start_trader(self, sim: ExchangeSimulator) -> subprocess.Popen[bytes]:
        """``runtrader`` with its web app on a free port, connected to ``sim`` as a separate exchange."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-u", str(Path(settings.BASE_DIR) / "manage.py"), "runtrader"]
        env = {**os.environ, "ENVIRONMENT": "sim", "KALSHI_WS_URL": sim.ws_url, "KALSHI_API_URL": sim.api_url}
        with open(self.log_path, "w") as log:
            return subprocess.Popen(
                [*command, "--port", str(free_port()), "--markets", ",".join(self.markets)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @staticmethod
    def _wait(trader: subprocess.Popen[bytes]) -> int:
        try:
            return trader.wait(timeout=60)
        except subprocess.TimeoutExpired:
            trader.kill()
            return trader.wait()

    # ---------------------------------------------------------------------------------------- phases

    async def _session_of(self, trader: subprocess.Popen[bytes], ws_url: str) -> int:
        """The session the trader opened (the running one on this exchange's fresh URL); waits up to 60 s."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if trader.poll() is not None:
                raise CommandError(f"runtrader exited with {trader.returncode}; see {self.log_path}")
            found = await sync_to_async(
                lambda: (
                    TradingSession.objects.filter(exchange_url=ws_url, status=TradingSession.Status.RUNNING)
                    .order_by("-started_at")
                    .values_list("pk", flat=True)
                    .first()
                )
            )()
            if found is not None:
                return int(found)
            await asyncio.sleep(0.2)
        raise CommandError(f"runtrader opened no session within 60 s; see {self.log_path}")

    def _header(self, pid: int, session_id: int) -> None:
        faults = "with faults (drops, seq gaps, stalls, error 25, malformed frames)" if self.faults else "no faults"
        self.out.write(
            f"Soak: {self.duration / 60:g} min at {self.rate:,.0f} msgs/s, {faults}\n"
            f"Markets: {', '.join(self.markets)}\n"
            f"Trader: runtrader pid {pid}, session {session_id}, DEBUG {'on' if settings.DEBUG else 'off'}, "
            f"output in {self.log_path}; warm-up {self.warmup:g} s\n"
            f"{'time':>6} {'RSS MB':>8} {'growth':>8} {'msgs/s':>8} {'deltas':>11} {'gaps':>6} "
            f"{'reconnects':>10} {'recorded':>11} {'backlog':>8}  state\n"
        )
        self.out.flush()

    async def _soak(self, sim: ExchangeSimulator, trader: subprocess.Popen[bytes], session_id: int) -> None:
        rng = random.Random(self.seed)
        started = time.monotonic()
        next_reading = min(self.interval, self.duration)
        next_faults = 0.0
        while True:
            elapsed = time.monotonic() - started
            if trader.poll() is not None:
                raise CommandError(f"runtrader exited with {trader.returncode} during the soak; see {self.log_path}")
            if self.faults and elapsed >= next_faults:
                sim.faults = fault_mix(rng)
                next_faults += self.fault_period
            status = await self._status(session_id)
            rss = process_rss(trader.pid) or 0
            self._backlog = max(self._backlog, int(status["metrics"].get("recorder_queued") or 0))
            if elapsed >= next_reading:
                self._reading(Reading(elapsed, rss, status, self._backlog))
                self._backlog = 0
                if next_reading >= self.duration:
                    break
                next_reading = min(next_reading + self.interval, self.duration)
            self._progress(elapsed, rss, status)
            await asyncio.sleep(min(1.0, max(0.05, next_reading - elapsed)))
        sim.faults = Faults()

    async def _check_books(self, sim: ExchangeSimulator, session_id: int) -> Verdict:
        """Heal, freeze the exchange, then compare each market with the exchange's book at its seq."""
        self._note("faults off; waiting for the trader to heal")
        deadline = time.monotonic() + self.heal_timeout
        status = await self._status(session_id)
        while not _healed(status):
            if time.monotonic() > deadline:
                verdict = Verdict()
                verdict.wrong.append(f"not healed within {self.heal_timeout:g} s: {_state_line(status)}")
                return verdict
            await asyncio.sleep(0.5)
            status = await self._status(session_id)
        sim.faults = Faults(stall=True)  # no new deltas: the books hold still while they are compared
        self._note("healed; exchange frozen; waiting for the trader's last heartbeat")
        frozen_at = timezone.now()
        previous: tuple[Any, ...] | None = None  # the last heartbeat written after the freeze: (time, marks)
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            status = await self._status(session_id)
            beat = status["heartbeat_at"]
            if beat is None or beat <= frozen_at or (previous is not None and beat == previous[0]):
                continue
            marks = [(t["market_ticker"], t["sid"], t["seq"]) for t in status["markets"]]
            queued = status["metrics"].get("recorder_queued", 0)
            # Two heartbeats since the freeze that show the same books, with nothing left to record: settled.
            if previous is not None and marks and marks == previous[1] and not queued and _healed(status):
                break
            previous = (beat, marks)
        # The exchange's books are read here, on its own event loop; the recording is read on a thread.
        truths: dict[str, tuple[dict[str, Any], Any, bool]] = {}
        for top in status["markets"]:
            if top.get("sid") is not None and top.get("seq") is not None:
                truth = sim.book_at(top["market_ticker"], int(top["sid"]), int(top["seq"]))
                current = truth is not None and truth.as_wire() == sim.true_book(top["market_ticker"]).as_wire()
                truths[top["market_ticker"]] = (top, truth, current)
        return await sync_to_async(self._compare)(session_id, truths)

    def _compare(self, session_id: int, truths: dict[str, tuple[dict[str, Any], Any, bool]]) -> Verdict:
        verdict = Verdict()
        for ticker in self.markets:
            if ticker not in truths:
                verdict.wrong.append(f"{ticker}: no top of book in /v3/status")
                continue
            top, truth, current = truths[ticker]
            sid, seq = int(top["sid"]), int(top["seq"])
            if truth is None:
                verdict.wrong.append(f"{ticker}: the exchange no longer knows sid {sid} seq {seq}")
                continue
            problems = []
            expected = truth.summary(0)
            for key in ("yes_bid", "yes_ask", "spread"):
                if top.get(key) != expected[key]:
                    problems.append(f"status {key} {top.get(key)} != {expected[key]}")
            if not current:
                problems.append(f"sid {sid} seq {seq} is behind the exchange's current book")
            try:
                recorded = book_at(session_id=session_id, market_ticker=ticker, seq=seq, sid=sid)
            except RecordingError as exc:
                problems.append(f"recording: {exc}")
            else:
                if not recorded.current:
                    problems.append(f"recording not current: {recorded.reason}")
                if recorded.book.as_wire() != truth.as_wire():
                    problems.append("the recorded book differs from the exchange's")
            target = verdict.wrong if problems else verdict.exact
            target.append(f"{ticker} (sid {sid} seq {seq})" + (f": {'; '.join(problems)}" if problems else ""))
        return verdict

    @staticmethod
    def _lost(session_id: int) -> dict[str, int]:
        session = TradingSession.objects.get(pk=session_id)
        return {
            "applied_snapshots": session.snapshots_received,
            "applied_deltas": session.deltas_received,
            "recorded_snapshots": RecordedSnapshot.objects.filter(session_id=session_id).count(),
            "recorded_deltas": RecordedDelta.objects.filter(session_id=session_id).count(),
            "gaps": session.gaps,
            "reconnects": session.reconnects,
            "stopped": int(session.status == TradingSession.Status.STOPPED),
        }

    # ---------------------------------------------------------------------------------------- output

    async def _status(self, session_id: int) -> dict[str, Any]:
        """The soak's session as /v3/status shows it, with every market's top, read from the rows the trader wrote."""

        def read() -> dict[str, Any]:
            session = TradingSession.objects.get(pk=session_id)
            return {
                **shard_status(session),
                "heartbeat_at": session.heartbeat_at,
                "markets": market_tops(session=session),
            }

        return await sync_to_async(read)()

    def _reading(self, reading: Reading) -> None:
        self.readings.append(reading)
        base = self._base()
        if reading.elapsed < self.warmup or base is None:
            growth = "warm-up"
        else:
            growth = f"{(reading.rss - base.rss) / base.rss * 100:+.1f} %"
        metrics = reading.status.get("metrics") or {}
        self._clear_progress()
        self.out.write(
            f"{_minutes(reading.elapsed):>6} {reading.rss / 1e6:>8.1f} {growth:>8} "
            f"{metrics.get('messages_per_second', 0):>8,.0f} {metrics.get('deltas_received', 0):>11,} "
            f"{metrics.get('gaps_detected', 0):>6,} {metrics.get('reconnects', 0):>10,} "
            f"{metrics.get('recorder_written', 0):>11,} {reading.backlog:>8,}  {reading.status.get('state')}\n"
        )
        self.out.flush()

    def _base(self) -> Reading | None:
        """The first reading after warm-up: growth is measured from it."""
        return next((r for r in self.readings if r.elapsed >= self.warmup and r.rss), None)

    def _progress(self, elapsed: float, rss: int, status: dict[str, Any]) -> None:
        now = time.monotonic()
        if not status.get("metrics") or now - self._progress_at < (2.0 if self.tty else 30.0):
            return
        self._progress_at = now
        metrics = status.get("metrics") or {}
        line = (
            f"soak {_minutes(elapsed)} / {_minutes(self.duration)} | {_state_line(status)} | "
            f"{metrics.get('deltas_received', 0):,} deltas | RSS {rss / 1e6:.1f} MB"
        )
        self.err.write(f"\r\033[K{line}" if self.tty else line, ending="" if self.tty else "\n")
        self.err.flush()

    def _clear_progress(self) -> None:
        if self.tty:
            self.err.write("\r\033[K", ending="")
            self.err.flush()

    def _note(self, text: str) -> None:
        self._clear_progress()
        self.err.write(f"{text}\n")
        self.err.flush()

    def _summary(self, sim: ExchangeSimulator, verdict: Verdict, code: int, lost: dict[str, int]) -> bool:
        write = self.out.write
        base = self._base()
        last = self.readings[-1] if self.readings else None
        if base is not None and last is not None and last is not base:
            growth = (last.rss - base.rss) / base.rss * 100
            minutes = (last.elapsed - base.elapsed) / 60
            met = "met" if growth < GROWTH_TARGET else "MISSED"
            write(
                f"RSS: {base.rss / 1e6:.1f} MB after warm-up -> {last.rss / 1e6:.1f} MB {minutes:.1f} min later: "
                f"{growth:+.1f} % (target < {GROWTH_TARGET:g} %: {met})\n"
            )
        else:
            write("RSS: too short a run to measure growth after warm-up\n")
        if verdict.wrong:
            write(f"Books: NOT exact: {len(verdict.wrong)} of {len(self.markets)} markets\n")
            for problem in verdict.wrong:
                write(f"  {problem}\n")
        else:
            write(
                f"Books: exact: {len(verdict.exact)} markets equal the exchange's book at their last seq, "
                "in /v3/status and rebuilt from the recording\n"
            )
        applied = lost["applied_snapshots"] + lost["applied_deltas"]
        recorded = lost["recorded_snapshots"] + lost["recorded_deltas"]
        nothing_lost = (
            lost["applied_snapshots"] == lost["recorded_snapshots"]
            and lost["applied_deltas"] == lost["recorded_deltas"]
        )
        write(
            f"Recorded: {lost['recorded_deltas']:,} deltas + {lost['recorded_snapshots']:,} snapshots; applied "
            f"{lost['applied_deltas']:,} + {lost['applied_snapshots']:,}: "
            + ("nothing lost" if nothing_lost else f"{applied - recorded:,} rows MISSING")
            + f" ({lost['gaps']:,} gaps, {lost['reconnects']:,} reconnects healed)\n"
        )
        faults = {name: count for name, count in (sim.stats.get("faults") or {}).items() if count}
        if faults:
            # error 25 and 10 both count as subscription_error: they end the subscription alike.
            write("Faults injected: " + ", ".join(f"{name} {count:,}" for name, count in sorted(faults.items())) + "\n")
        shutdown_ok = code == 0 and lost["stopped"]
        write(f"Shutdown: runtrader exited {code}" + ("" if shutdown_ok else " (session not closed as stopped)") + "\n")
        self.out.flush()
        return not verdict.wrong and nothing_lost and bool(shutdown_ok)


def _healed(status: dict[str, Any]) -> bool:
    metrics = status.get("metrics") or {}
    return (
        status.get("state") == "ready"
        and metrics.get("ws_connection_status") == "connected"
        and not metrics.get("stale_markets")
        and (status.get("heartbeat_age") or 0) < 5
    )


def _state_line(status: dict[str, Any]) -> str:
    metrics = status.get("metrics") or {}
    return f"{status.get('state')}, socket {metrics.get('ws_connection_status')}, stale {metrics.get('stale_markets')}"
