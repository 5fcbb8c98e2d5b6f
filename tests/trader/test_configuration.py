"""Bad configuration stops runtrader before any connection, with one line naming the variable."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.processes import manage, project_env, shell_line

SECRET = "s3cr3t-value-that-must-never-be-printed"


def runtrader(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return manage(project_env(tmp_path, **env), "runtrader", "--no-web", *args, timeout=60)


def a_key(tmp_path: Path) -> Path:
    from apps.kalshi.signing import generate_key_pair

    path = tmp_path / "key.pem"
    path.write_bytes(generate_key_pair()[0])
    return path


PAPER = {"ENVIRONMENT": "paper", "SECRET_KEY": SECRET, "KALSHI_API_KEY_ID": SECRET}


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        ((), {"ENVIRONMENT": "staging"}, "ENVIRONMENT must be one of sim, paper, local, production; got 'staging'"),
        ((), {"ENVIRONMENT": "paper"}, "SECRET_KEY is required when ENVIRONMENT=paper"),
        (
            (),
            {**PAPER, "KALSHI_WS_URL": "wss://external-api-ws.kalshi.com/trade-api/ws/v2"},
            "KALSHI_WS_URL must be a Kalshi demo host in paper",
        ),
        (
            (),
            {"ENVIRONMENT": "local", "SECRET_KEY": SECRET, "KALSHI_API_URL": "https://demo-api.kalshi.co/trade-api/v2"},
            "KALSHI_API_URL must be a Kalshi production host in local",
        ),
        (
            (),
            {"KALSHI_WS_URL": "ws://10.1.2.3:8007/trade-api/ws/v2"},
            "KALSHI_WS_URL must point at a loopback address in sim",
        ),
        (
            (),
            {"ENVIRONMENT": "production", "SECRET_KEY": SECRET},
            "production trades real money: pass --confirm-production or set TRADER_CONFIRM_PRODUCTION=yes",
        ),
        (
            ("--markets", "X"),
            {"ENVIRONMENT": "paper", "SECRET_KEY": SECRET},
            "KALSHI_API_KEY_ID is required when ENVIRONMENT=paper",
        ),
        (
            ("--markets", "X"),
            {**PAPER, "KALSHI_PRIVATE_KEY_PATH": "/nonexistent/key.pem"},
            "KALSHI_PRIVATE_KEY_PATH cannot be read: No such file or directory",
        ),
        (
            ("--markets", "X"),
            {**PAPER, "KALSHI_PRIVATE_KEY_CONTENT": f"-----BEGIN PRIVATE KEY-----\\n{SECRET}"},
            "KALSHI_PRIVATE_KEY_CONTENT: the private key is not a readable unencrypted PEM key",
        ),
        (("--markets", " , "), {}, "--markets must list at least one ticker"),
        (("--markets", "<script>"), {}, "--markets: '<script>' is not a market ticker"),
        ((), {"TRADER_MARKETS": "KXFED-26DEC-T4.25,KX FED"}, "TRADER_MARKETS: 'KX FED' is not a market ticker"),
        ((), {"SIM_FAULTS": "drop_evry=3"}, "SIM_FAULTS: unknown fault 'drop_evry'"),
        (("--env", "paper"), {"SECRET_KEY": SECRET}, "KALSHI_API_KEY_ID is required when ENVIRONMENT=paper"),
    ],
)
def test_a_broken_rule_is_one_clear_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], line: str
) -> None:
    result = runtrader(tmp_path, *args, **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert line in lines[0]
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_paper_needs_markets_once_the_key_is_good(tmp_path: Path) -> None:
    result = runtrader(tmp_path, **PAPER, KALSHI_PRIVATE_KEY_PATH=str(a_key(tmp_path)))
    assert result.returncode == 2
    assert "TRADER_MARKETS (or --markets, or --discover N) is required when ENVIRONMENT=paper" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_env_files_are_read_most_specific_first_and_real_variables_win(tmp_path: Path) -> None:
    (tmp_path / ".env.paper").write_text("TRADER_WEB_PORT=1111\nSIM_MESSAGE_RATE=11\n")
    (tmp_path / ".env").write_text("TRADER_WEB_PORT=2222\nSIM_MESSAGE_RATE=22\nTRADER_WEB_HOST=::1\nSECRET_KEY=x\n")
    env = project_env(tmp_path, TRADER_ENV_DIR=str(tmp_path), ENVIRONMENT="paper", SIM_MESSAGE_RATE="33")
    code = "from django.conf import settings as s; print(s.TRADER_WEB_PORT, s.SIM_MESSAGE_RATE, s.TRADER_WEB_HOST)"
    assert shell_line(env, code).split() == ["1111", "33.0", "::1"]
