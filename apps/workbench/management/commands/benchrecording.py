"""``manage.py benchrecording``: how fast the recorder writes deltas, and how much memory it takes.

Not a test: it prints figures. Each database gets a scratch session: N deltas (plus a snapshot per
market) go through ``DatabaseRecorder.record`` as fast as the event loop can hand them over, then
``flush``. Rows per second is everything recorded over the time until the last row was committed;
nothing may be missing afterwards. Peak memory is the process's resident set, sampled every few
milliseconds, above what it was before the run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import environ
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Max, Sum
from django.utils import timezone

from apps.kalshi.messages import OrderbookDelta, OrderbookSnapshot, Side
from apps.marketdata.models import RecordedDelta, RecordedMarket, RecordedSnapshot
from apps.marketdata.recorder import DatabaseRecorder
from apps.trader.models import TradingSession

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _PeakMemory:
    """Samples the resident set on a thread while the benchmark runs."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.baseline = _rss_bytes()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-memory", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes())

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


@dataclass
class Result:
    database: str
    rows: int
    seconds: float
    peak_rss_mb: float
    rss_growth_mb: float
    recorder: dict[str, Any]
    missing: int

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


class Command(BaseCommand):
    help = (
        "Measure recording throughput (rows/s) and peak memory into SQLite and PostgreSQL, and check that "
        "nothing was lost. Uses a scratch SQLite file and, when DATABASE_URL is PostgreSQL or --postgres is "
        "given, that PostgreSQL database (migrated if needed; the scratch session is deleted afterwards)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rows", type=int, default=500_000, help="deltas to record (default 500000)")
        parser.add_argument("--markets", type=int, default=10, help="markets they are spread over (default 10)")
        parser.add_argument("--postgres", metavar="URL", help="PostgreSQL to measure (default: DATABASE_URL)")
        parser.add_argument("--no-sqlite", action="store_true", help="skip SQLite")
        parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
        parser.add_argument("--capacity", type=int, default=100_000, help="recorder buffer (default 100000)")
        parser.add_argument("--batch-size", type=int, default=10_000, help="rows per batch (default 10000)")
        parser.add_argument(
            "--keep", action="store_true", help="keep the scratch session's rows (and the scratch SQLite file)"
        )
        parser.add_argument(
            "--only",
            choices=("sqlite", "postgres"),
            help="measure one database in this process (by default each runs in its own process, so each "
            "peak memory figure is its own)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["rows"] < 1 or options["markets"] < 1:
            raise CommandError("--rows and --markets must be at least 1")
        targets = self._targets(options)
        if options["only"] is None and len(targets) > 1:
            for label, _ in targets:
                self._run_alone(label, options)
            return
        results = []
        for label, config in targets:
            alias = f"bench_{label.lower()}"
            if config["ENGINE"] == "django.db.backends.sqlite3":
                config["NAME"] = str(Path(tempfile.mkdtemp(prefix="benchrecording-")) / "bench.sqlite3")
                if options["keep"]:
                    self.stdout.write(f"SQLite scratch database: {config['NAME']}")
            if config["ENGINE"] == "django.db.backends.postgresql":
                self._ensure_database(config)
            self._register(alias, config)
            try:
                call_command("migrate", database=alias, verbosity=0, interactive=False)
                results.append(self._bench(label, alias, options))
            finally:
                connections[alias].close()
                if config["ENGINE"] == "django.db.backends.sqlite3" and not options["keep"]:
                    shutil.rmtree(Path(config["NAME"]).parent, ignore_errors=True)
        for result in results:
            self._report(result, options)

    def _run_alone(self, label: str, options: dict[str, Any]) -> None:
        """Measure one database in a child process of its own and pass its output through."""
        command = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "benchrecording", "--only"]
        command.append("sqlite" if label == "SQLite" else "postgres")
        for name in ("rows", "markets", "capacity", "batch_size"):
            command += [f"--{name.replace('_', '-')}", str(options[name])]
        if options["postgres"]:
            command += ["--postgres", options["postgres"]]
        if options["keep"]:
            command.append("--keep")
        child = subprocess.run(command, capture_output=True, text=True, check=False)
        self.stdout.write(child.stdout.rstrip("\n"))
        if child.returncode:
            raise CommandError(f"{label}: the benchmark failed:\n{child.stderr[-3000:]}")

    def _targets(self, options: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        targets: list[tuple[str, dict[str, Any]]] = []
        only = options["only"]
        if not options["no_sqlite"] and only in (None, "sqlite"):
            targets.append(
                (
                    "SQLite",
                    {
                        "ENGINE": "django.db.backends.sqlite3",
                        "NAME": "",  # a scratch file, made when this process measures it
                        "OPTIONS": {
                            "timeout": 20,
                            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                        },
                    },
                )
            )
        if not options["no_postgres"] and only in (None, "postgres"):
            url = options["postgres"]
            if url is None and connections[DEFAULT_DB_ALIAS].vendor == "postgresql":
                url = os.environ.get("DATABASE_URL")
            if url:
                config = environ.Env.db_url_config(url)
                if config["ENGINE"] != "django.db.backends.postgresql":
                    raise CommandError(f"--postgres must be a PostgreSQL URL, not {config['ENGINE']}")
                targets.append(("PostgreSQL", config))
            else:
                self.stdout.write("PostgreSQL: skipped (give --postgres URL or set DATABASE_URL to PostgreSQL)")
        return targets

    def _ensure_database(self, config: dict[str, Any]) -> None:
        """Create the PostgreSQL database to measure if it does not exist yet, or say clearly why not."""
        import psycopg
        from psycopg import sql

        params: dict[str, Any] = {
            key.lower(): config[key] for key in ("HOST", "PORT", "USER", "PASSWORD") if config.get(key)
        }
        try:
            with psycopg.connect(dbname="postgres", autocommit=True, connect_timeout=5, **params) as admin:
                exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (config["NAME"],)).fetchone()
                if not exists:
                    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(config["NAME"])))
                    self.stdout.write(f"PostgreSQL: created database {config['NAME']}")
        except psycopg.Error as exc:
            raise CommandError(f"PostgreSQL: cannot reach or create database {config['NAME']!r}: {exc}") from None

    @staticmethod
    def _register(alias: str, config: dict[str, Any]) -> None:
        configured = connections.configure_settings(
            {DEFAULT_DB_ALIAS: dict(connections.settings[DEFAULT_DB_ALIAS]), alias: dict(config)}
        )
        connections.settings[alias] = configured[alias]

    def _bench(self, label: str, alias: str, options: dict[str, Any]) -> Result:
        rows, markets = options["rows"], options["markets"]
        session = TradingSession.objects.using(alias).create(
            environment="bench",
            markets=[f"BENCH-{i}" for i in range(markets)],
            exchange_url="benchrecording",
            started_at=timezone.now(),
            status=TradingSession.Status.STOPPED,
        )
        try:
            with _PeakMemory() as memory:
                seconds, metrics = asyncio.run(self._record(session.pk, alias, options))
            written = self._count(session.pk, alias)
            expected = rows + markets
            return Result(
                database=label,
                rows=expected,
                seconds=seconds,
                peak_rss_mb=memory.peak / 2**20,
                rss_growth_mb=(memory.peak - memory.baseline) / 2**20,
                recorder=metrics,
                missing=expected - written,
            )
        finally:
            if not options["keep"]:
                TradingSession.objects.using(alias).filter(pk=session.pk).delete()

    async def _record(self, session_id: int, alias: str, options: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        rows, markets = options["rows"], options["markets"]
        tickers = [f"BENCH-{i}" for i in range(markets)]
        recorder = DatabaseRecorder(using=alias, capacity=options["capacity"], batch_size=options["batch_size"])
        record = recorder.record
        sides: tuple[Side, Side] = ("yes", "no")
        now_us = time.time_ns
        started = time.perf_counter()
        seq = 0
        for ticker in tickers:
            seq += 1
            snapshot = OrderbookSnapshot(
                sid=1, seq=seq, market_ticker=ticker, market_id="", yes=[(4200, 1250)], no=[(5500, 300)]
            )
            await record(session_id, snapshot, now_us() // 1_000)
        for i in range(rows):
            seq += 1
            message = OrderbookDelta(
                sid=1,
                seq=seq,
                market_ticker=tickers[i % markets],
                market_id="",
                price=100 * (1 + i % 97),
                delta=(1 + i % 50) * 100 * (1 if i % 3 else -1),
                side=sides[i & 1],
                ts_ms=1_795_000_000_000 + i,
            )
            await record(session_id, message, now_us() // 1_000)
        await recorder.flush()
        seconds = time.perf_counter() - started
        metrics = recorder.metrics()
        await recorder.close()
        return seconds, metrics

    @staticmethod
    def _count(session_id: int, alias: str) -> int:
        deltas = RecordedDelta.objects.using(alias).filter(session_id=session_id)
        snapshots = RecordedSnapshot.objects.using(alias).filter(session_id=session_id)
        counted = deltas.count() + snapshots.count()
        totals = (
            RecordedMarket.objects.using(alias)
            .filter(session_id=session_id)
            .aggregate(s=Sum("snapshots"), d=Sum("deltas"))
        )
        last = max(deltas.aggregate(p=Max("position"))["p"] or 0, snapshots.aggregate(p=Max("position"))["p"] or 0)
        # Every position from 1 to the last is present exactly once when the count matches the last position.
        if counted != last or counted != (totals["s"] or 0) + (totals["d"] or 0):
            return min(counted, last)
        return counted

    def _report(self, result: Result, options: dict[str, Any]) -> None:
        m = result.recorder
        self.stdout.write(
            f"{result.database}: {result.rows:,} rows ({options['rows']:,} deltas, {options['markets']} snapshots) "
            f"in {result.seconds:.2f} s = {result.rows_per_second:,.0f} rows/s; missing {result.missing}\n"
            f"  memory: peak RSS {result.peak_rss_mb:.1f} MB, +{result.rss_growth_mb:.1f} MB during the run; "
            f"peak queued {m['peak_queued']:,} rows (capacity {options['capacity']:,})\n"
            f"  writer: {m['batches']:,} batches of up to {options['batch_size']:,} rows, last "
            f"{m['write_latency_ms']:.0f} ms, max {m['max_write_latency_ms']:.0f} ms; retries {m['retries']}; "
            f"the feed waited {m['backpressure_seconds']:.2f} s for room ({m['backpressure_waits']:,} times)"
        )
