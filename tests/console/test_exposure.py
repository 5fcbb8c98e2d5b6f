"""What the web app exposes: DEBUG off unless asked for; a bind beyond loopback warns and needs ALLOWED_HOSTS."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.console.management.commands.runtrader import Command
from apps.kalshi.environments import Environment
from apps.kalshi.signing import Credentials
from tests.processes import manage, project_env, shell_line
from tests.support import sim_trader_config

PAPER = {"ENVIRONMENT": "paper", "SECRET_KEY": "a-secret-for-this-test-only"}


@pytest.mark.parametrize(
    ("env", "debug"),
    [({}, "False"), (PAPER, "False"), ({"DEBUG": "true"}, "True"), ({**PAPER, "DEBUG": "true"}, "True")],
)
def test_debug_is_off_unless_asked_for(tmp_path: Path, env: dict[str, str], debug: str) -> None:
    assert shell_line(project_env(tmp_path, **env), "from django.conf import settings; print(settings.DEBUG)") == debug


def test_binding_beyond_loopback_without_allowed_hosts_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = project_env(tmp_path)
    env.pop("ALLOWED_HOSTS", None)
    result = manage(env, "runtrader", "--host", "0.0.0.0", "--port", "0", timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "configuration error: ALLOWED_HOSTS must list the names browsers use to reach 0.0.0.0 "
        "(e.g. ALLOWED_HOSTS=trader.example.com) when the web app listens beyond loopback"
    ]


def test_binding_beyond_loopback_prints_a_warning(credentials: Credentials) -> None:
    command = Command()
    exposed = sim_trader_config(credentials, b"", web=True, web_host="0.0.0.0")
    assert command.exposure_warnings(exposed) == [
        "warning: the web app listens on 0.0.0.0, beyond loopback: anyone who can reach it sees the sim console"
    ]
    paper = sim_trader_config(credentials, b"", web=True, web_host="trader.internal", environment=Environment.PAPER)
    assert command.exposure_warnings(paper)[0].endswith("the console, its socket and /v3/status need a staff login")
    for quiet in ("127.0.0.1", "::1", "localhost"):
        assert command.exposure_warnings(sim_trader_config(credentials, b"", web=True, web_host=quiet)) == []
    assert command.exposure_warnings(sim_trader_config(credentials, b"", web=False, web_host="0.0.0.0")) == []


def test_a_metrics_port_beyond_loopback_prints_a_warning(credentials: Credentials) -> None:
    command = Command()
    exposed = sim_trader_config(credentials, b"", metrics_port=9106, metrics_host="0.0.0.0")
    assert command.exposure_warnings(exposed) == [
        "warning: the metrics port listens on 0.0.0.0, beyond loopback: anyone who can reach it reads the "
        "trader's metrics (it has no login)"
    ]
    assert command.exposure_warnings(sim_trader_config(credentials, b"", metrics_port=9106)) == []
    assert command.exposure_warnings(sim_trader_config(credentials, b"", metrics_host="0.0.0.0")) == []  # port off
