"""Example trading strategies; each subclasses ``apps.trader.core.trading.strategy.Strategy``."""
