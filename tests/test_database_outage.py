"""A real PostgreSQL that goes away under a running trader (through a proxy the test cuts), probed every second.

The trader keeps its books live, shows the outage in health within seconds, answers every probe, writes
everything once the database is back, and exits 0 on SIGTERM within 20 s even while the database is away,
saving what it could not write for the next start.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connection

from apps.marketdata.models import RecordedDelta, RecordedSnapshot
from apps.trader.models import StateTransition, TradingSession
from tests.processes import RunningTrader, http_get, project_env, run_database_url, start_runtrader
from tests.support import eventually_blocking
from tests.tcpproxy import TcpProxy

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

MARKETS = "KXFED-26DEC-T4.25,KXCPI-26DEC-T0.3"


@dataclass
class Probe:
    at: float
    """Seconds since the outage began."""
    status: int
    reason: str


def probe(base_url: str, since: float) -> Probe:
    """One GET /v3/health; http_get raises if no answer comes within 5 s."""
    code, body = http_get(f"{base_url}/v3/health")
    return Probe(round(time.monotonic() - since, 1), code, json.loads(body)["reason"])


def probe_every_second(base_url: str, seconds: float, since: float) -> list[Probe]:
    probes = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        probes.append(probe(base_url, since))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    return probes


class Output:
    """A trader's stderr as it comes (``start_runtrader`` reads it as the trader writes it)."""

    def __init__(self, trader: RunningTrader) -> None:
        self._trader = trader

    @property
    def lines(self) -> list[str]:
        return self._trader.log

    def text(self) -> str:
        return self._trader.output()


def unreachable_lines(output: Output) -> int:
    """How many times the trader has said its session writes fail (a heartbeat is then held unwritten)."""
    return sum("DATABASE: database unreachable" in line for line in output.lines)


def start_trader(tmp_path: Path, proxy: TcpProxy) -> tuple[RunningTrader, dict[str, str]]:
    env = project_env(tmp_path, DATABASE_URL=run_database_url(proxy.port), SIM_MESSAGE_RATE="100")
    trader = start_runtrader(env, "--port", "0", "--markets", MARKETS)
    eventually_blocking(
        lambda: probe(trader.base_url, time.monotonic()).status == 200, seconds=15, what="healthy after start"
    )
    return trader, env


def sigterm(trader: RunningTrader, output: Output) -> tuple[int, str]:
    """SIGTERM; the process must exit within 20 s. Returns the exit code and stderr."""
    trader.process.send_signal(signal.SIGTERM)
    try:
        code = trader.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        trader.process.kill()
        trader.process.wait()
        raise AssertionError(f"no exit within 20 s of SIGTERM: {output.text()[-3000:]}") from None
    return code, output.text()


def outage(trader: RunningTrader, proxy: TcpProxy, seconds: float) -> list[Probe]:
    """Cut the database for ``seconds`` while probing health every second; then restore it."""
    started = time.monotonic()
    proxy.cut()
    try:
        probes = probe_every_second(trader.base_url, seconds, started)
    finally:
        proxy.restore()
    # Seen within seconds, and told as it is: every probe during the outage got an answer.
    first_down = next(p for p in probes if p.status == 503)
    assert first_down.at <= 5, probes
    assert all(p.status == 503 and "database unreachable" in p.reason for p in probes if p.at >= first_down.at), probes
    # Healed by itself within 10 s of the database's return.
    returned = time.monotonic()
    eventually_blocking(
        lambda: probe(trader.base_url, returned).status == 200, seconds=10, what="healthy again after the outage"
    )
    return probes


def assert_every_row_recorded(session: TradingSession) -> None:
    assert RecordedSnapshot.objects.filter(session_id=session.pk).count() == session.snapshots_received
    assert RecordedDelta.objects.filter(session_id=session.pk).count() == session.deltas_received
    assert session.deltas_received > 1000


def test_a_70_s_outage_heals_by_itself_and_loses_nothing(tmp_path: Path) -> None:
    with TcpProxy(int(connection.settings_dict["PORT"] or 5432)) as proxy:
        trader, _env = start_trader(tmp_path, proxy)
        output = Output(trader)
        try:
            outage(trader, proxy, 70)
        finally:
            code, stderr = sigterm(trader, output)
    assert code == 0, stderr
    assert "DATABASE: database unreachable" in stderr
    assert "DATABASE: database reachable again" in stderr
    session = TradingSession.objects.get()
    assert (session.status, session.current_state, session.error) == ("stopped", "shutdown", "")
    assert_every_row_recorded(session)
    # Transitions made while the database was away (none here) or not: the story ends with the shutdown.
    assert list(StateTransition.objects.filter(session=session).order_by("id").values_list("to_state", flat=True))[
        -2:
    ] == ["ready", "shutdown"]
    assert not (tmp_path / "unwritten").exists()


def test_a_20_s_outage_heals_and_a_sigterm_while_the_database_is_away_saves_the_rest(tmp_path: Path) -> None:
    with TcpProxy(int(connection.settings_dict["PORT"] or 5432)) as proxy:
        trader, env = start_trader(tmp_path, proxy)
        output = Output(trader)
        try:
            outage(trader, proxy, 20)
            said_unreachable = unreachable_lines(output)
            proxy.cut()
            down = time.monotonic()
            eventually_blocking(
                lambda: probe(trader.base_url, down).status == 503, seconds=5, what="the second outage seen"
            )
            # Rows (100 deltas/s) and a heartbeat pile up unwritten: the trader says so once a write fails.
            eventually_blocking(
                lambda: unreachable_lines(output) > said_unreachable, seconds=10, what="the trader to see the outage"
            )
        finally:
            code, stderr = sigterm(trader, output)
        assert code == 0, stderr
        unwritten = sorted(p.name for p in (tmp_path / "unwritten").iterdir())
        assert [name.split("-")[0] for name in unwritten] == ["recording", "session"], unwritten
        assert "could not be written before the shutdown deadline" in stderr
        proxy.restore()
        assert TradingSession.objects.get().status == "running"  # the database never heard of the shutdown

        # The next start writes what was saved, then runs as usual.
        second = start_runtrader(env, "--port", "0", "--markets", MARKETS)
        second_output = Output(second)
        eventually_blocking(
            lambda: probe(second.base_url, time.monotonic()).status == 200, seconds=15, what="the next start healthy"
        )
        code, stderr = sigterm(second, second_output)
    assert code == 0, stderr
    assert "saved at an earlier shutdown" in stderr
    assert not list((tmp_path / "unwritten").iterdir())
    session = TradingSession.objects.order_by("id").first()
    assert session is not None
    assert (session.status, session.current_state) == ("stopped", "shutdown")
    assert "recorded row(s) could not be written before the shutdown deadline; saved to" in session.error
    assert "at the next start: the database was unreachable at shutdown" in session.error
    assert_every_row_recorded(session)
    states = list(StateTransition.objects.filter(session=session).order_by("id").values_list("to_state", flat=True))
    assert states[-2:] == ["ready", "shutdown"]


def test_a_trader_that_trades_through_an_outage_records_every_order_and_fill(tmp_path: Path) -> None:
    from apps.trader.models import Fill, Order

    quoting = '{"spread": "0.01", "unwind_above": "0"}'
    with TcpProxy(int(connection.settings_dict["PORT"] or 5432)) as proxy:
        env = project_env(tmp_path, DATABASE_URL=run_database_url(proxy.port), SIM_MESSAGE_RATE="200")
        trader = start_runtrader(
            env, "--port", "0", "--markets", MARKETS, "--strategy", "apps.strategies.quoter.Quoter",
            "--strategy-params", quoting, "--risk", "max_orders_per_second=20",
        )  # fmt: skip
        output = Output(trader)
        try:
            eventually_blocking(
                lambda: probe(trader.base_url, time.monotonic()).status == 200, seconds=15, what="healthy"
            )
            outage(trader, proxy, 10)  # the quoter keeps trading; its rows wait in memory
        finally:
            code, stderr = sigterm(trader, output)
    assert code == 0, stderr
    assert "POSITIONS: equal to the exchange's" in stderr
    session = TradingSession.objects.get()
    assert (session.status, session.current_state) == ("stopped", "shutdown")
    # The last heartbeat's counters are the engine's own: every fill and order it saw is a row.
    counters = session.latest_status["trading"]["counters"]
    fills = Fill.objects.filter(session=session).count()
    assert fills == counters["fills"] and fills > 0, (fills, counters)
    orders = Order.objects.filter(session=session)
    assert orders.exclude(status="refused").count() == counters["orders_placed"] > 0, counters
    assert not orders.filter(status__in=["resting", "submitted"]).exists()  # all cancelled at SIGTERM
