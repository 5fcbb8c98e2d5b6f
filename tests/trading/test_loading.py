"""Loading a strategy by dotted path: built with its parameters, or one line saying why not."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.strategies.quoter import Quoter
from apps.strategies.taker import Taker
from apps.trader.core.trading.loading import StrategyLoadError, load_strategy


def test_it_builds_the_strategy_with_the_parameters_json() -> None:
    strategy = load_strategy("apps.strategies.quoter.Quoter", '{"spread": "0.02", "markets": ["KXTEST-A"]}')

    assert isinstance(strategy, Quoter)
    assert strategy.spread == 200
    assert strategy.markets == ["KXTEST-A"]


def test_parameters_may_be_a_mapping_or_nothing() -> None:
    taker = load_strategy("apps.strategies.taker.Taker", {"buy_below": "0.2", "sell_above": "0.8"})
    assert isinstance(taker, Taker)
    assert (taker.buy_below, taker.sell_above) == (2000, 8000)

    quoter = load_strategy("apps.strategies.quoter.Quoter", None)
    assert isinstance(quoter, Quoter)
    assert quoter.spread == 400
    assert isinstance(load_strategy("apps.strategies.quoter.Quoter", "  "), Quoter)


@pytest.mark.parametrize(
    ("path", "params", "line"),
    [
        (
            "apps.strategies.nope.X",
            None,
            "--strategy apps.strategies.nope.X: no module named 'apps.strategies.nope'",
        ),
        (
            "apps.strategies.quoter.Qouter",
            None,
            "--strategy apps.strategies.quoter.Qouter: module 'apps.strategies.quoter' has no 'Qouter'",
        ),
        (
            "Quoter",
            None,
            "--strategy 'Quoter': not a dotted path such as apps.strategies.quoter.Quoter",
        ),
        (
            "apps.trader.core.trading.records.OrderRecord",
            None,
            "--strategy apps.trader.core.trading.records.OrderRecord: not a Strategy subclass"
            " (subclass apps.trader.core.trading.strategy.Strategy)",
        ),
        (
            "json.loads",
            None,
            "--strategy json.loads: not a Strategy subclass (subclass apps.trader.core.trading.strategy.Strategy)",
        ),
        (
            "apps.trader.core.trading.strategy.Strategy",
            None,
            "--strategy apps.trader.core.trading.strategy.Strategy: the base class does nothing; name a subclass of it",
        ),
        ("apps.strategies.quoter.Quoter", '["spread", "0.02"]', "--strategy-params: not a JSON object"),
        ("apps.strategies.quoter.Quoter", '"0.02"', "--strategy-params: not a JSON object"),
        (
            "apps.strategies.quoter.Quoter",
            "{'spread': '0.02'}",
            "--strategy-params: not valid JSON (Expecting property name enclosed in double quotes:"
            " line 1 column 2 (char 1))",
        ),
        (
            "apps.strategies.quoter.Quoter",
            '{"spread": "wide"}',
            "--strategy-params: parameter 'spread' must be a dollar amount such as \"0.02\":"
            " price 'wide' is not a decimal number",
        ),
        (
            "apps.strategies.taker.Taker",
            "{}",
            "--strategy-params: parameter 'buy_below' is required (a dollar amount such as \"0.02\")",
        ),
    ],
)
def test_each_problem_is_one_line_naming_the_option(path: str, params: str | None, line: str) -> None:
    with pytest.raises(StrategyLoadError) as raised:
        load_strategy(path, params)

    assert str(raised.value) == line
    assert isinstance(raised.value, ValueError)


def test_a_module_that_fails_to_import_or_a_constructor_that_fails_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "strategies_broken_on_import.py").write_text("raise RuntimeError('no config\\nat all')\n")
    (tmp_path / "strategies_broken_init.py").write_text(
        "from apps.trader.core.trading.strategy import Strategy\n"
        "class Fragile(Strategy):\n"
        "    def __init__(self, params):\n"
        "        raise KeyError('depth')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    with pytest.raises(StrategyLoadError) as on_import:
        load_strategy("strategies_broken_on_import.X", None)
    assert str(on_import.value) == (
        "--strategy strategies_broken_on_import.X: importing strategies_broken_on_import failed:"
        " RuntimeError: no config at all"
    )

    with pytest.raises(StrategyLoadError) as on_init:
        load_strategy("strategies_broken_init.Fragile", "{}")
    assert str(on_init.value) == "--strategy strategies_broken_init.Fragile: building it failed: KeyError: 'depth'"
