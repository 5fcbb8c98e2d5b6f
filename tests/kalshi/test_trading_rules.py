"""The trading rules: which hosts an order client may reach in each environment, on the parsed host."""

from __future__ import annotations

import pytest

from apps.kalshi.environments import (
    DEMO_API_URL,
    DEMO_WS_URL,
    PRODUCTION_API_URL,
    Environment,
    TradingPermission,
    TradingRefused,
    check_trading_url,
)

SIM = TradingPermission(Environment.SIM)
PAPER = TradingPermission(Environment.PAPER)
LOCAL = TradingPermission(Environment.LOCAL, confirm_production=True, trading_enabled=True)
PRODUCTION_ARMED = TradingPermission(Environment.PRODUCTION, confirm_production=True, trading_enabled=True)


def refusal(permission: TradingPermission, url: str, *, websocket: bool = False) -> str:
    with pytest.raises(TradingRefused) as caught:
        check_trading_url(permission, url, websocket=websocket)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"trading rule ({permission.environment})")
    return text


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8008/trade-api/v2", "http://localhost:8008/trade-api/v2", "http://[::1]:8008/trade-api/v2"],
)
def test_sim_trades_with_loopback(url: str) -> None:
    check_trading_url(SIM, url)


def test_sim_websocket_needs_a_ws_scheme() -> None:
    check_trading_url(SIM, "ws://127.0.0.1:8007/trade-api/ws/v2", websocket=True)
    assert "ws:// or wss://" in refusal(SIM, "http://127.0.0.1:8007/trade-api/ws/v2", websocket=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8008/trade-api/v2",
        "http://127.0.0.1.evil.com/trade-api/v2",
        "http://localhost.evil.com/trade-api/v2",
        "http://localhost./trade-api/v2",
        "http://[::ffff:8.8.8.8]/trade-api/v2",
        DEMO_API_URL,
        PRODUCTION_API_URL,
    ],
)
def test_sim_refuses_every_other_host(url: str) -> None:
    assert "sim trades only with a loopback host" in refusal(SIM, url)


@pytest.mark.parametrize(
    "url",
    [
        DEMO_API_URL,
        "https://demo-api.kalshi.co/trade-api/v2",
        "https://DEMO-API.Kalshi.CO/trade-api/v2",
        "https://external-api.demo.kalshi.co:443/trade-api/v2",
    ],
)
def test_paper_trades_with_the_current_and_the_older_demo_hosts(url: str) -> None:
    check_trading_url(PAPER, url)


def test_paper_websocket_demo_hosts() -> None:
    check_trading_url(PAPER, DEMO_WS_URL, websocket=True)
    check_trading_url(PAPER, "wss://demo-api.kalshi.co/trade-api/ws/v2", websocket=True)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://demo-api.kalshi.co.evil.com/trade-api/v2", "demo-api.kalshi.co.evil.com"),
        ("https://evil.com/trade-api/v2?next=demo-api.kalshi.co", "evil.com"),
        ("https://evil.com/demo-api.kalshi.co/trade-api/v2", "evil.com"),
        ("https://external-api.kalshi.com/trade-api/v2?x=demo-api.kalshi.co", "external-api.kalshi.com"),
        ("https://api.elections.kalshi.com/trade-api/v2", "api.elections.kalshi.com"),
        ("https://demo-api.kalshi.co./trade-api/v2", "demo-api.kalshi.co."),
        ("https://xdemo-api.kalshi.co/trade-api/v2", "xdemo-api.kalshi.co"),
        ("https://127.0.0.1/trade-api/v2", "127.0.0.1"),
    ],
)
def test_paper_refuses_lookalike_and_production_hosts(url: str, host: str) -> None:
    text = refusal(PAPER, url)
    assert "paper trades only with a Kalshi demo host" in text
    assert f"got host {host!r}" in text


@pytest.mark.parametrize(
    "url",
    [
        "https://demo-api.kalshi.co@evil.com/trade-api/v2",
        "https://evil.com@demo-api.kalshi.co/trade-api/v2",
        "https://user:hunter2@demo-api.kalshi.co/trade-api/v2",
    ],
)
def test_paper_refuses_user_info_and_never_echoes_it(url: str) -> None:
    text = refusal(PAPER, url)
    assert "must not carry user info" in text
    assert "hunter2" not in text
    assert "evil.com" not in text


def test_a_backslash_cannot_smuggle_another_host() -> None:
    assert "plain http:// or https:// URL" in refusal(PAPER, "https://evil.com\\@demo-api.kalshi.co/trade-api/v2")


def test_paper_needs_tls() -> None:
    assert "only over TLS" in refusal(PAPER, "http://demo-api.kalshi.co/trade-api/v2")


@pytest.mark.parametrize("url", [PRODUCTION_API_URL, DEMO_API_URL, "http://127.0.0.1:8008/trade-api/v2"])
def test_local_never_trades_whatever_the_flags(url: str) -> None:
    assert "local is market data only" in refusal(LOCAL, url)


@pytest.mark.parametrize(
    ("confirm", "enabled", "missing"),
    [
        (False, False, "needs the production confirmation and trading explicitly enabled"),
        (True, False, "needs trading explicitly enabled"),
        (False, True, "needs the production confirmation"),
    ],
)
def test_production_needs_both_flags(confirm: bool, enabled: bool, missing: str) -> None:
    permission = TradingPermission(Environment.PRODUCTION, confirm_production=confirm, trading_enabled=enabled)
    text = refusal(permission, PRODUCTION_API_URL)
    assert text.endswith(missing)


def test_production_with_both_flags_trades_only_with_production_hosts() -> None:
    check_trading_url(PRODUCTION_ARMED, PRODUCTION_API_URL)
    check_trading_url(PRODUCTION_ARMED, "https://api.elections.kalshi.com/trade-api/v2")
    assert "a Kalshi production host" in refusal(PRODUCTION_ARMED, DEMO_API_URL)
    assert "a Kalshi production host" in refusal(PRODUCTION_ARMED, "https://external-api.kalshi.com.evil.com/x")


def test_a_port_out_of_range_is_refused() -> None:
    assert "port 1..65535" in refusal(SIM, "http://127.0.0.1:0/trade-api/v2")
    assert "port 1..65535" in refusal(SIM, "http://127.0.0.1:99999/trade-api/v2")
