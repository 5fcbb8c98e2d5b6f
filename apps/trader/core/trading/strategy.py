"""What a strategy is and what it may do: subclass ``Strategy``, use the ``StrategyContext`` it is handed.

Strategies live in ``apps/strategies`` (or any importable package) and import this module; the trader
loads them by dotted path and never imports them itself.

A strategy is one small class loaded by dotted path (``runtrader --strategy apps.strategies.quoter.Quoter
--strategy-params '{"spread": "0.02"}'``). The trader calls it back, one callback at a time, on its own task:
``on_book`` with the latest book of a market (coalesced: a strategy slower than the feed sees the newest
book, never a queue of old ones), ``on_fill``, ``on_order`` for each change of one of its orders, and
``on_timer`` every ``timer_interval`` seconds. Through the context it reads books, positions, open orders
and the balance, and places, amends and cancels orders; every order passes the trader's risk limits before
it leaves the process, and a refused order comes back as a record with status ``refused`` and the rule.

Units are exact integers, as everywhere in the trader: prices are YES prices in 1/10,000 dollar (``DOLLAR``
= 10,000), counts 1/100 contract (``CONTRACT`` = 100), money micro-dollars (``MICRO_DOLLAR``). ``price()``
and ``count()`` turn parameter strings such as "0.02" and "5" into them; ``tickers()`` reads a list of markets
and ``check_known()`` refuses a misspelt parameter name. An exception raised by a callback
stops the strategy (its orders are cancelled) and shows the traceback in the console; the trader keeps
running.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal, Protocol

from apps.kalshi.fixedpoint import CONTRACT, DOLLAR, MICRO_DOLLAR, FixedPointError, parse_price, parse_size
from apps.kalshi.orderbook import OrderBook, TopOfBook
from apps.kalshi.portfolio import BookSide, TimeInForce
from apps.trader.core.trading.records import FillRecord, OrderRecord, PositionRecord

__all__ = [
    "CONTRACT",
    "DOLLAR",
    "MICRO_DOLLAR",
    "BookSide",
    "FillRecord",
    "OrderRecord",
    "PositionRecord",
    "Strategy",
    "StrategyContext",
    "StrategyParameterError",
    "check_known",
    "count",
    "price",
    "tickers",
]


class StrategyParameterError(ValueError):
    """A strategy parameter that is missing, of the wrong kind or out of range; the text names it."""


def price(params: Mapping[str, Any], name: str, default: str | None = None) -> int:
    """The parameter ``name`` as a price in 1/10,000 dollar ("0.02" -> 200), exact."""
    return _fixed(params, name, default, parse_price, 'a dollar amount such as "0.02"')


def count(params: Mapping[str, Any], name: str, default: str | None = None) -> int:
    """The parameter ``name`` as a contract count in 1/100 contract ("5" -> 500), exact."""
    return _fixed(params, name, default, parse_size, 'a contract count such as "5"')


def tickers(params: Mapping[str, Any], name: str = "markets") -> list[str] | None:
    """The parameter ``name`` as a list of market tickers; None when it is not given (trade ``ctx.markets``)."""
    raw = params.get(name)
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(isinstance(item, str) and item for item in raw):
        raise StrategyParameterError(f"parameter {name!r} must be a non-empty list of market tickers")
    return list(raw)


def check_known(params: Mapping[str, Any], known: Iterable[str]) -> None:
    """StrategyParameterError for a parameter the strategy does not take: a misspelt name is not ignored."""
    names = set(known)
    unknown = sorted(set(params) - names)
    if unknown:
        raise StrategyParameterError(
            f"unknown parameter {unknown[0]!r} (this strategy takes {', '.join(sorted(names))})"
        )


def _fixed(params: Mapping[str, Any], name: str, default: str | None, parse: Any, what: str) -> int:
    raw = params.get(name, default)
    if raw is None:
        raise StrategyParameterError(f"parameter {name!r} is required ({what})")
    try:
        value: int = parse(str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw)
    except FixedPointError as exc:
        raise StrategyParameterError(f"parameter {name!r} must be {what}: {exc}") from None
    if value < 0:
        raise StrategyParameterError(f"parameter {name!r} must not be negative")
    return value


class StrategyContext(Protocol):
    """What a strategy sees of the trader and may ask of it."""

    @property
    def markets(self) -> list[str]:
        """The markets the trader keeps books for."""
        ...

    @property
    def balance(self) -> int:
        """Cash available for new orders, micro-dollars (the exchange's balance, kept current)."""
        ...

    def top(self, ticker: str) -> TopOfBook | None:
        """The best YES bid and ask of ``ticker`` now; None when its book is not live (stale or unknown)."""
        ...

    def book(self, ticker: str) -> OrderBook | None:
        """A copy of ``ticker``'s whole book now; None when it is not live."""
        ...

    def position(self, ticker: str) -> int:
        """Contracts held in ``ticker``, signed (+ YES, - NO), 1/100 contract."""
        ...

    def positions(self) -> dict[str, PositionRecord]:
        """Every market held or traded this session, as the trader computes it from fills."""
        ...

    def open_orders(self, ticker: str | None = None) -> list[OrderRecord]:
        """This strategy's orders still working (submitted, resting or unknown), oldest first."""
        ...

    async def place(
        self,
        ticker: str,
        side: BookSide,
        *,
        price: int,
        count: int,
        time_in_force: TimeInForce = "good_till_canceled",
        post_only: bool = False,
        reduce_only: bool = False,
        reason: str = "",
    ) -> OrderRecord:
        """Place an order: ``side`` "bid" buys YES at ``price``, "ask" sells YES at it (buys NO at 1 - price).

        Returns the order once the exchange answered: ``resting``, ``executed``, ``canceled`` (an IOC's
        rest), ``rejected`` (the exchange's ``error_code``), or ``refused`` when a risk limit stopped it
        (``error_code`` names the rule) — a refusal is not an exception.
        """
        ...

    async def amend(self, order: OrderRecord | str, *, price: int, count: int, reason: str = "") -> OrderRecord:
        """Move a resting order to ``price`` with ``count`` in all (filled included), as Kalshi's amend does."""
        ...

    async def cancel(self, order: OrderRecord | str, *, reason: str = "") -> OrderRecord:
        """Cancel a resting order (by record or client order id)."""
        ...

    async def cancel_all(self, ticker: str | None = None, *, reason: str = "") -> None:
        """Cancel this strategy's working orders (in ``ticker`` only, when given)."""
        ...

    def log(self, message: str, *, level: Literal["info", "warning", "error"] = "info") -> None:
        """A console line in the strategy's name."""
        ...


class Strategy:
    """Subclass and override the callbacks you need; every one is optional.

    ``__init__`` takes the parameters (the JSON object of ``--strategy-params``) and should check them,
    raising StrategyParameterError: the trader refuses to start with one line naming the problem.
    """

    name: ClassVar[str] = ""
    """Shown in the console and recorded on orders; the class name when empty."""
    timer_interval: ClassVar[float | None] = 1.0
    """Seconds between ``on_timer`` calls; None for no timer."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params: dict[str, Any] = dict(params)

    @classmethod
    def display_name(cls) -> str:
        return cls.name or cls.__name__

    def describe(self) -> dict[str, str]:
        """The parameters as the console shows them (strings); by default the parameters given."""
        return {key: str(value) for key, value in self.params.items()}

    async def on_start(self, ctx: StrategyContext) -> None:
        """Trading is ready (``trading_ready``): the account is loaded and the books are live.

        Called again after a pause (a reconnect); the strategy's orders may still be working: find them in
        ``ctx.open_orders()`` rather than placing them again.
        """

    async def on_book(self, ctx: StrategyContext, ticker: str, top: TopOfBook) -> None:
        """``ticker``'s book changed; ``top`` is its newest best bid and ask."""

    async def on_order(self, ctx: StrategyContext, order: OrderRecord) -> None:
        """One of this strategy's orders changed (rested, filled in part or whole, amended, cancelled)."""

    async def on_fill(self, ctx: StrategyContext, fill: FillRecord) -> None:
        """One of this strategy's orders traded."""

    async def on_timer(self, ctx: StrategyContext) -> None:
        """Every ``timer_interval`` seconds while trading is ready."""

    async def on_stop(self, ctx: StrategyContext) -> None:
        """Trading stops (shutdown, kill switch) or pauses (lost connection; ``on_start`` follows when it is ready).

        On a stop the trader cancels the orders itself; on a pause they stay working. Bounded by a timeout.
        """
