"""Builds the strategy named on the command line, or says in one line why it cannot."""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from typing import Any

from apps.trader.core.trading.strategy import Strategy, StrategyParameterError


class StrategyLoadError(ValueError):
    """The strategy cannot be loaded or built; the text is one line naming the option and the problem."""


def load_strategy(path: str, params: str | Mapping[str, Any] | None) -> Strategy:
    """Import ``path`` ("package.module.Class"), check it is a Strategy, and build it with ``params``.

    ``params`` is the JSON object of ``--strategy-params`` (text), or the object itself; None means {}.
    """
    cls = _strategy_class(path)
    arguments = _parameters(params)
    try:
        return cls(arguments)
    except StrategyParameterError as exc:
        raise StrategyLoadError(_one_line(f"--strategy-params: {exc}")) from None
    except Exception as exc:
        raise StrategyLoadError(
            _one_line(f"--strategy {path}: building it failed: {type(exc).__name__}: {exc}")
        ) from exc


def _strategy_class(path: str) -> type[Strategy]:
    module_name, _, class_name = path.strip().rpartition(".")
    if not module_name or not class_name:
        raise StrategyLoadError(f"--strategy {path!r}: not a dotted path such as apps.strategies.quoter.Quoter")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise StrategyLoadError(f"--strategy {path}: no module named {exc.name!r}") from None
    except Exception as exc:
        # The module exists but fails as it is imported (a syntax error, an import of its own that fails).
        raise StrategyLoadError(
            _one_line(f"--strategy {path}: importing {module_name} failed: {type(exc).__name__}: {exc}")
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise StrategyLoadError(f"--strategy {path}: module {module_name!r} has no {class_name!r}")
    if not isinstance(cls, type) or not issubclass(cls, Strategy):
        raise StrategyLoadError(
            f"--strategy {path}: not a Strategy subclass (subclass apps.trader.core.trading.strategy.Strategy)"
        )
    if cls is Strategy:
        raise StrategyLoadError(f"--strategy {path}: the base class does nothing; name a subclass of it")
    return cls


def _parameters(params: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if params is None:
        return {}
    if isinstance(params, str):
        if not params.strip():
            return {}
        try:
            params = json.loads(params)
        except json.JSONDecodeError as exc:
            raise StrategyLoadError(f"--strategy-params: not valid JSON ({exc})") from None
    if not isinstance(params, Mapping):
        raise StrategyLoadError("--strategy-params: not a JSON object")
    return dict(params)


def _one_line(text: str) -> str:
    return " ".join(text.split())
