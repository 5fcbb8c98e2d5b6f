"""Whether a run may trade, decided from settings and flags before anything connects: sim and paper may,
local never builds a trading client, production needs its confirmation and --trade; a bad strategy,
parameter or limit is one line naming the option."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from apps.kalshi.environments import (
    DEMO_API_URL,
    DEMO_WS_URL,
    PRODUCTION_API_URL,
    PRODUCTION_WS_URL,
    ConfigurationError,
    Environment,
)
from apps.kalshi.fixedpoint import CONTRACT
from apps.trader.config import TraderConfig
from apps.trader.core.trading.risk import RiskLimits
from apps.trader.runtime import load_trader_config

QUOTER = "apps.strategies.quoter.Quoter"
FED = "KXFED-26DEC-T4.25"
KEY_ID = "key-id-that-must-never-be-printed"


@pytest.fixture
def kalshi_key(key_pair: tuple[bytes, bytes]) -> dict[str, Any]:
    """Settings of an operator with a real key (outside sim)."""
    return {
        "KALSHI_API_KEY_ID": KEY_ID,
        "KALSHI_PRIVATE_KEY_CONTENT": key_pair[0].decode(),
        "TRADER_MARKETS": [FED],
    }


def outside_sim(environment: Environment, key: dict[str, Any], **more: Any) -> Any:
    urls = {
        Environment.PAPER: (DEMO_WS_URL, DEMO_API_URL),
        Environment.LOCAL: (PRODUCTION_WS_URL, PRODUCTION_API_URL),
        Environment.PRODUCTION: (PRODUCTION_WS_URL, PRODUCTION_API_URL),
    }[environment]
    return override_settings(ENVIRONMENT=environment, KALSHI_WS_URL=urls[0], KALSHI_API_URL=urls[1], **key, **more)


def config(**options: Any) -> TraderConfig:
    return load_trader_config(settings, web=False, **options)


def problems(**options: Any) -> list[str]:
    try:
        config(**options)
    except ConfigurationError as exc:
        return list(exc.problems)
    return []


def test_a_run_without_a_strategy_or_trade_never_trades() -> None:
    assert config().trading is None


def test_a_strategy_trades_in_sim_with_its_parameters_and_the_default_limits() -> None:
    chosen = config(strategy=QUOTER, strategy_params='{"spread": "0.02"}').trading
    assert chosen is not None
    assert (chosen.strategy_path, chosen.strategy_params, chosen.limits) == (QUOTER, {"spread": "0.02"}, RiskLimits())
    assert chosen.permission.environment is Environment.SIM


@override_settings(TRADER_STRATEGY=QUOTER, TRADER_RISK="max_position=2,price_band=0.05")
def test_the_settings_choose_the_strategy_and_the_limits_and_a_flag_overrides_them() -> None:
    chosen = config().trading
    assert chosen is not None and chosen.strategy_path == QUOTER
    assert (chosen.limits.max_position, chosen.limits.price_band) == (2 * CONTRACT, 500)
    overridden = config(risk="max_position=7").trading
    assert overridden is not None and overridden.limits.max_position == 7 * CONTRACT


def test_trade_alone_syncs_the_account_without_a_strategy() -> None:
    chosen = config(trade=True).trading
    assert chosen is not None and chosen.strategy_path == ""


def test_paper_trades_with_the_demo_hosts(kalshi_key: dict[str, Any]) -> None:
    with outside_sim(Environment.PAPER, kalshi_key, SECRET_KEY="x" * 50):
        chosen = config(strategy=QUOTER).trading
    assert chosen is not None and chosen.permission.environment is Environment.PAPER


@pytest.mark.parametrize("option", [{"strategy": QUOTER}, {"trade": True}])
def test_local_never_builds_a_trading_client(kalshi_key: dict[str, Any], option: dict[str, Any]) -> None:
    with outside_sim(Environment.LOCAL, kalshi_key, SECRET_KEY="x" * 50):
        found = problems(**option)
    flag = "--strategy" if "strategy" in option else "--trade"
    assert found == [f"{flag}: trading rule (local): local is market data only; no trading client can be built"]


def test_production_refuses_a_strategy_without_trade(kalshi_key: dict[str, Any]) -> None:
    with outside_sim(Environment.PRODUCTION, kalshi_key, SECRET_KEY="x" * 50):
        found = problems(strategy=QUOTER, confirm_production=True)
    assert found == [
        "--strategy: trading rule (production): production trades real money and needs trading explicitly enabled"
    ]


def test_production_refuses_trade_without_the_confirmation(kalshi_key: dict[str, Any]) -> None:
    with outside_sim(Environment.PRODUCTION, kalshi_key, SECRET_KEY="x" * 50):
        found = problems(strategy=QUOTER, trade=True)
    assert found == [
        "production trades real money: pass --confirm-production or set TRADER_CONFIRM_PRODUCTION=yes",
        "--trade: trading rule (production): production trades real money and needs the production confirmation",
    ]


def test_production_trades_with_both_flags(kalshi_key: dict[str, Any]) -> None:
    with outside_sim(Environment.PRODUCTION, kalshi_key, SECRET_KEY="x" * 50):
        chosen = config(strategy=QUOTER, trade=True, confirm_production=True).trading
    assert chosen is not None
    assert (chosen.permission.confirm_production, chosen.permission.trading_enabled) == (True, True)


@pytest.mark.parametrize(
    ("options", "line"),
    [
        ({"strategy": "apps.strategies.nope.X"}, "--strategy apps.strategies.nope.X: no module named"),
        ({"strategy": QUOTER, "strategy_params": "[1]"}, "--strategy-params: not a JSON object"),
        ({"strategy": QUOTER, "strategy_params": '{"spread": "abc"}'}, "--strategy-params: parameter 'spread'"),
        ({"strategy": QUOTER, "risk": "max_position"}, "--risk / TRADER_RISK: 'max_position' is not name=value"),
        ({"strategy": QUOTER, "risk": "max_psition=3"}, "--risk / TRADER_RISK: "),
        ({"strategy_params": "{}"}, "--strategy-params / TRADER_STRATEGY_PARAMS need a strategy (--strategy)"),
    ],
)
def test_a_bad_strategy_parameter_or_limit_is_one_line(options: dict[str, Any], line: str) -> None:
    found = problems(**options)
    assert len(found) == 1 and found[0].startswith(line), found


def test_no_problem_line_shows_the_key_id(kalshi_key: dict[str, Any]) -> None:
    with outside_sim(Environment.PRODUCTION, kalshi_key, SECRET_KEY="x" * 50):
        found = problems(strategy="not a path", risk="x")
    assert found and KEY_ID not in " ".join(found)


@override_settings(TRADER_STRATEGY=QUOTER, TRADER_TRADE=True)
def test_a_replay_or_a_soak_watches_whatever_the_trading_settings_say() -> None:
    assert config().trading is not None
    assert config(may_trade=False).trading is None
