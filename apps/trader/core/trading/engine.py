"""The trading engine: the account, this trader's orders, the risk limits and the strategy, behind one door.

The coordinator drives it through the trading states: ``connect()`` starts the private feed (fills, order
updates, positions); the engine reports ``subscribed`` and, once the account is loaded and reconciled,
``synced`` (``TradingNews``), and the coordinator moves to ``kalshi_data_sync`` and ``trading_ready``.
``resume()`` starts the strategy there; ``pause()`` holds it while a connection is being remade; ``kill()``
cancels this trader's working orders and stops the strategy (the kill switch, ``error``, shutdown).

Every order passes the risk gate before it leaves the process; a refused one is recorded with the rule.
Positions and P&L are the trader's own, computed from fills by the ledger; each read of the account (after
a reconnect, and now and then while trading) goes through ``AccountSync``, which books what no message
brought. Every change becomes a typed record for the session writer and a console line. No Django, no
network library: the trading client and the private feed come in through ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from apps.kalshi.feed import FeedEvent, FeedEventKind
from apps.kalshi.fixedpoint import format_money, format_price, format_size
from apps.kalshi.orderbook import OrderBook, TopOfBook
from apps.kalshi.privatemessages import FillMessage, MarketPositionMessage, PrivateMessage, UserOrderMessage
from apps.kalshi.resterrors import KalshiRestError
from apps.trader.core.trading.accountsync import AccountSync, TradingClient
from apps.trader.core.trading.context import EngineContext
from apps.trader.core.trading.display import fill_status, order_status, order_text, position_status, side_text
from apps.trader.core.trading.ledger import Ledger
from apps.trader.core.trading.orders import OrderManager
from apps.trader.core.trading.records import (
    FINAL_ORDER_STATES,
    FillRecord,
    OrderRecord,
    PositionRecord,
    TradingRecord,
)
from apps.trader.core.trading.risk import OrderIntent, Refusal, RiskGate, RiskLimits
from apps.trader.core.trading.strategy import Strategy
from apps.trader.core.trading.strategyhost import StrategyHost

if TYPE_CHECKING:  # the core loads without the network libraries these modules bring
    from apps.kalshi.privatefeed import AccountListener
    from apps.kalshi.trading import AccountSnapshot

logger = logging.getLogger(__name__)

POSITIONS_INTERVAL = 10.0
"""Seconds between position snapshots (of the markets whose position changed) and balance reads."""
CANCELS_AT_ONCE = 4
"""Cancels the kill switch keeps in flight at once: fast, and well inside the write bucket."""
ACCOUNT_CHECK_INTERVAL = 30.0
"""Seconds between reads of the whole account while trading (see TradingOptions.account_check_interval)."""
REFUSAL_LINE_INTERVAL = 1.0
"""Seconds between two console lines of refusals by one rule."""
STATUS_ORDERS = 50
"""Open orders and positions the status document lists at most (the counts say how many in all)."""
STATUS_FILLS = 20


class TradingNewsKind(StrEnum):
    SUBSCRIBED = "subscribed"
    """The private channels are subscribed; the account is being read."""
    SYNCED = "synced"
    """The account is loaded and reconciled: trading may start."""
    DISCONNECTED = "disconnected"
    FATAL = "fatal"
    """Retrying cannot help (refused credentials or a trading rule)."""


@dataclass(frozen=True, slots=True)
class TradingNews:
    kind: TradingNewsKind
    reason: str = ""


class PrivateFeedPort(Protocol):
    async def run(self) -> None: ...

    async def close(self) -> None: ...

    async def reconcile(self) -> Any:
        """Read the account from REST now and hand it to the listener, messages held meanwhile."""


PrivateFeedFactory = Callable[["AccountListener"], PrivateFeedPort]


@dataclass(frozen=True, kw_only=True)
class TradingOptions:
    limits: RiskLimits = field(default_factory=RiskLimits)
    strategy: Callable[[], Strategy] | None = None
    """Builds the strategy (afresh after an ``error``); None trades only what the console asks."""
    strategy_path: str = ""
    cancel_unknown_orders: bool = False
    """Cancel resting orders of the account that this trader did not place (reported either way)."""
    positions_interval: float = POSITIONS_INTERVAL
    account_check_interval: float = ACCOUNT_CHECK_INTERVAL
    """Seconds between reads of the whole account while trading: the private channels carry no seq, so a
    message the exchange never sent is found only this way (or at the next reconnect)."""


@dataclass(frozen=True, kw_only=True)
class TradingSetup:
    """What the composition root hands the coordinator for a trader that trades."""

    options: TradingOptions
    client: TradingClient
    feed_factory: PrivateFeedFactory


Console = Callable[..., None]


class TradingEngine:
    """An ``AccountListener`` of the private feed, and what the coordinator and the strategy trade through."""

    def __init__(
        self,
        *,
        options: TradingOptions,
        client: TradingClient,
        feed_factory: PrivateFeedFactory,
        book: Callable[[str], OrderBook | None],
        markets: Callable[[], list[str]],
        console: Console,
        record: Callable[[TradingRecord], None],
        on_news: Callable[[TradingNews], None],
        clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
    ) -> None:
        self.options = options
        self._client = client
        self._feed_factory = feed_factory
        self._book = book
        self._markets = markets
        self.console = console
        self._record = record
        self._on_news = on_news
        self._clock_us = clock_us
        self.gate = RiskGate(options.limits)
        self.ledger = Ledger()
        self.counters: Counter[str] = Counter()
        self.orders = OrderManager(client, on_change=self._order_changed, clock_us=clock_us)
        self.account = AccountSync(
            client=client,
            ledger=self.ledger,
            orders=self.orders,
            book_fill=self._fill,
            console=console,
            counters=self.counters,
            cancel_unknown_orders=options.cancel_unknown_orders,
            clock_us=clock_us,
        )
        self.refusals: Counter[str] = Counter()
        self.host: StrategyHost | None = None
        self.killed = ""
        """Why the kill switch stopped trading for the rest of the session ('' while it has not)."""
        self._feed: PrivateFeedPort | None = None
        self._feed_task: asyncio.Task[None] | None = None
        self._ready = False
        self._baseline_pnl: int | None = None
        self._fills: deque[FillRecord] = deque(maxlen=STATUS_FILLS)
        self._positions_due: set[str] = set()
        self._background: asyncio.Task[None] | None = None
        self._order_states: dict[str, str] = {}
        """Each order's status as last recorded, so that an order is counted once when it ends."""
        self._checking = False
        """An account check while trading is running (not a sync after a connect)."""
        self._loss_checks: set[asyncio.Task[None]] = set()
        self._refusals_shown: dict[str, tuple[float, int]] = {}
        """Per rule: when its last refusal line was shown, and how many refusals went unshown since."""

    # ------------------------------------------------------------------------------------------ lifecycle

    def connect(self) -> None:
        """Start the private feed (``trading_client_connect``); news follows through ``on_news``."""
        if self._feed_task is not None and not self._feed_task.done():
            return
        self._feed = self._feed_factory(self)
        self._feed_task = asyncio.get_running_loop().create_task(self._run_feed(self._feed), name="trader:private")
        if self._background is None:
            self._background = asyncio.get_running_loop().create_task(self._keep_up(), name="trader:positions")

    async def disconnect(self) -> None:
        """Close the private feed (the market feed was lost, or the trader stops)."""
        self.pause("the trading connection is closed")
        feed, task = self._feed, self._feed_task
        self._feed = self._feed_task = None
        if feed is not None:
            await feed.close()
        if task is not None:
            try:
                await asyncio.wait_for(task, timeout=5.0)
            except TimeoutError:
                task.cancel()

    def resume(self) -> None:
        """``trading_ready``: the strategy runs (a new one after an error; never after the kill switch)."""
        self._ready = True
        if self._baseline_pnl is None:
            self._baseline_pnl = self.ledger.pnl(self._marks()).total
        if self.killed or self.options.strategy is None:
            return
        if self.host is not None and self.host.state == "failed":
            return
        if self.host is None or self.host.state == "stopped":
            strategy = self.options.strategy()
            context = EngineContext(self, strategy.display_name())
            self.host = StrategyHost(strategy, context, on_failed=self._strategy_failed, console=self.console)
        self.host.start()

    def pause(self, reason: str) -> None:
        """Leaving ``trading_ready`` for a reconnect: no new orders, the strategy waits; resting orders stay."""
        if self._ready:
            self.console("warning", f"TRADING: paused ({reason})", "resting orders stay on the exchange")
        self._ready = False
        if self.host is not None and self.host.state == "running":
            self.host.pause()

    async def kill(self, reason: str, *, sticky: bool = True) -> int:
        """Stop the strategy and cancel every working order of this trader; returns how many were cancelled.

        ``sticky``: the kill switch keeps trading stopped for the rest of the session; entering ``error``
        does not (trading resumes with a new strategy once ``trading_ready`` comes back)."""
        if sticky and not self.killed:
            self.killed = reason
            self.gate.stop(reason)
            self.counters["kill_switch"] += 1
        self._ready = False
        if self.host is not None and self.host.state in ("running", "paused"):
            await self.host.stop(reason)
        working = self.orders.working()
        cancelled = await self._cancel_all(working, reason)
        failed = len(working) - cancelled
        level = "warning" if sticky else "info"
        self.console(
            level if not failed else "error",
            f"{'KILL SWITCH' if sticky else 'TRADING STOPPED'}: {reason}",
            f"cancelled {cancelled} of {len(working)} working order(s)"
            + (f"; {failed} could not be cancelled (see the orders)" if failed else ""),
        )
        return cancelled

    async def close(self, reason: str) -> None:
        """Shutdown: kill (waiting for the cancels), snapshot every position, close the feed and the client."""
        if self.account.synced or self.orders.working():
            await self.kill(reason, sticky=False)
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
        self._snapshot_positions(everything=True)
        await self.disconnect()
        if self.account.synced:
            await self._compare_with_exchange()
        await self._client.aclose()

    async def _run_feed(self, feed: PrivateFeedPort) -> None:
        try:
            await feed.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # refused credentials, a trading rule: retrying cannot help
            self._on_news(TradingNews(TradingNewsKind.FATAL, f"trading feed stopped: {exc}"))

    async def _keep_up(self) -> None:
        """Position snapshots of what changed, the balance and the loss limit every few seconds; the whole
        account now and then."""
        checked = time.monotonic()
        while True:
            await asyncio.sleep(min(self.options.positions_interval, self.options.account_check_interval))
            try:
                self._snapshot_positions()
                if (
                    self._ready
                    and self._feed is not None
                    and time.monotonic() - checked >= self.options.account_check_interval
                ):
                    checked = time.monotonic()
                    await self._check_account(self._feed)
                elif self.account.synced:
                    try:
                        self.account.balance = await self._client.get_balance()
                    except KalshiRestError as exc:
                        logger.info("balance read failed: %s", exc)
                await self._check_loss()
            except Exception:
                # A bug here must not end the snapshots and checks for the rest of the session.
                logger.exception("trading upkeep failed; trying again in the next round")

    async def _check_account(self, feed: PrivateFeedPort) -> None:
        """Read the account while trading, as after a reconnect: fills and order changes the exchange never
        sent are booked, quietly unless something was missing."""
        self._checking = True
        try:
            await feed.reconcile()
        except KalshiRestError as exc:
            logger.info("account check failed: %s", exc)
        finally:
            self._checking = False

    # ------------------------------------------------------------------------------------------ the account

    async def on_feed_event(self, event: FeedEvent) -> None:
        if event.kind is FeedEventKind.SUBSCRIBED:
            self._on_news(TradingNews(TradingNewsKind.SUBSCRIBED, event.reason))
        elif event.kind is FeedEventKind.DISCONNECTED:
            self.pause(event.reason)
            self._on_news(TradingNews(TradingNewsKind.DISCONNECTED, event.reason))
            self.console(
                event.level,
                f"TRADING CONNECTION: {event.reason}",
                f"reconnecting, attempt {event.attempt} in {event.delay:.1f} s",
            )
        elif event.kind is FeedEventKind.FATAL:
            self._on_news(TradingNews(TradingNewsKind.FATAL, event.reason))
        elif event.kind is FeedEventKind.CONNECTED:
            self.console("info", f"TRADING CONNECTION: {event.reason}")
        else:
            self.console(event.level, f"TRADING {event.kind.value.upper()}: {event.reason}")

    async def on_account_snapshot(self, snapshot: AccountSnapshot) -> None:
        """The account read from REST (after a (re)connect, and now and then while trading)."""
        await self.account.apply(snapshot, checking=self._checking)
        if not self._checking:
            self._on_news(TradingNews(TradingNewsKind.SYNCED, "account loaded"))

    async def on_private_message(self, message: PrivateMessage) -> None:
        if isinstance(message, FillMessage):
            self._fill(self._fill_record(message))
        elif isinstance(message, UserOrderMessage):
            record = self.orders.on_user_order(message)
            if record is None and message.status == "resting":
                await self.account.stranger_seen(message.order_id)
        elif isinstance(message, MarketPositionMessage):
            pass  # the trader's positions come from its fills; the exchange's are compared after a reconnect

    def _fill_record(self, message: FillMessage) -> FillRecord:
        order = self.orders.by_order_id(message.order_id)
        return FillRecord(
            trade_id=message.trade_id,
            order_id=message.order_id,
            client_order_id=message.client_order_id or (order.client_order_id if order else ""),
            ticker=message.market_ticker,
            side=message.book_side,
            yes_price=message.yes_price,
            count=message.count,
            fee=message.fee_cost,
            is_taker=message.is_taker,
            post_position=message.post_position,
            ts_ms=message.ts_ms,
            received_us=self._clock_us(),
        )

    def _fill(self, fill: FillRecord) -> bool:
        """Book a fill once: ledger, order, record, console, strategy; False when it was booked before."""
        if not self.ledger.apply_fill(fill):
            return False
        self.counters["fills"] += 1
        self.counters["taker_fills" if fill.is_taker else "maker_fills"] += 1
        self._fills.append(fill)
        self._positions_due.add(fill.ticker)
        self._record(fill)
        known = self.orders.get(fill.client_order_id) or self.orders.by_order_id(fill.order_id)
        # The fill's line first: the order's own line (FILLED) follows from it.
        self.console(
            "info",
            f"FILL: {side_text(fill.side)} {format_size(fill.count)} {fill.ticker} at {format_price(fill.yes_price)}"
            f" ({'taker' if fill.is_taker else 'maker'}, fee {format_money(fill.fee)})",
            f"position now {format_size(self.ledger.position(fill.ticker))}"
            + (f"; order {known.client_order_id[:8]} [{known.strategy}]" if known else "; not this trader's order"),
        )
        order = self.orders.on_fill(fill)
        if self.host is not None and order is not None and order.strategy == self.host.name:
            self.host.filled(fill)
        # Kept until done: the loop holds only a weak reference to a task.
        check = asyncio.get_running_loop().create_task(self._check_loss())
        self._loss_checks.add(check)
        check.add_done_callback(self._loss_checks.discard)
        return True

    # ------------------------------------------------------------------------------------------ orders

    def accepting(self, strategy: str) -> Refusal | None:
        """Why no order may leave now, or None."""
        if self.killed:
            return Refusal("trading_stopped", f"the kill switch stopped trading ({self.killed})")
        if not self._ready:
            return Refusal("trading_stopped", "trading is not ready (connecting or syncing the account)")
        return None

    async def place(self, intent: OrderIntent, *, strategy: str, reason: str = "") -> OrderRecord:
        refusal = self.accepting(strategy) or self.gate.check(
            intent,
            position=self.ledger.position(intent.ticker),
            working=self.orders.working(),
            top=self.top(intent.ticker),
            positions_cost=self.ledger.pnl({}).exposure,
            session_pnl=self.session_pnl(),
        )
        if refusal is not None:
            return self._refused(intent, strategy, refusal)
        self.counters["orders_placed"] += 1
        return await self.orders.place(intent, strategy=strategy, reason=reason or f"placed by {strategy}")

    async def amend(
        self, order: OrderRecord, *, price: int, count: int, strategy: str, reason: str = ""
    ) -> OrderRecord:
        current = self.orders.get(order.client_order_id) or order
        intent = OrderIntent(
            ticker=current.ticker,
            side=current.side,
            yes_price=price,
            count=count,
            time_in_force=current.time_in_force,
            replaces=current,
        )
        refusal = self.accepting(strategy) or self.gate.check(
            intent,
            position=self.ledger.position(current.ticker),
            working=self.orders.working(),
            top=self.top(current.ticker),
            positions_cost=self.ledger.pnl({}).exposure,
            session_pnl=self.session_pnl(),
        )
        if refusal is not None:
            self.refusals[refusal.rule] += 1
            self.counters["orders_refused"] += 1
            self._refusal_line(refusal.rule, f"REFUSED amend by {refusal.rule}: {refusal.message}", f"[{strategy}]")
            return current
        self.counters["orders_amended"] += 1
        return await self.orders.amend(current, price=price, count=count, reason=reason)

    async def cancel(self, order: OrderRecord | str, *, reason: str) -> OrderRecord | None:
        """Cancel one of this trader's orders (by record, client order id or exchange order id)."""
        if isinstance(order, str):
            found = self.orders.get(order) or self.orders.by_order_id(order)
            if found is None:
                return None
            order = found
        return await self.orders.cancel(order, reason=reason)

    def _refused(self, intent: OrderIntent, strategy: str, refusal: Refusal) -> OrderRecord:
        self.refusals[refusal.rule] += 1
        self.counters["orders_refused"] += 1
        return self.orders.refuse(intent, strategy=strategy, rule=refusal.rule, message=refusal.message)

    async def _cancel_all(self, orders: Sequence[OrderRecord], reason: str) -> int:
        gate = asyncio.Semaphore(CANCELS_AT_ONCE)

        async def cancel(order: OrderRecord) -> bool:
            async with gate:
                return (await self.orders.cancel(order, reason=reason)).status in ("canceled", "executed")

        results = await asyncio.gather(*(cancel(o) for o in orders))
        return sum(results)

    def _order_changed(self, order: OrderRecord) -> None:
        self._record(order)
        before = self._order_states.get(order.client_order_id)
        self._order_states[order.client_order_id] = order.status
        if order.status == before and order.status in FINAL_ORDER_STATES:
            # An ended order's late fees or read-back: recorded, but it ended once (one line, one count).
            if self.host is not None and order.strategy == self.host.name:
                self.host.order_changed(order)
            return
        kind = _order_line(before, order)
        if order.status == "refused":
            self._refusal_line(order.error_code, f"REFUSED by {order.error_code}: {order_text(order)}", order.reason)
        elif kind is not None:
            level = "warning" if order.status in ("rejected", "unknown") else "info"
            self.console(level, f"ORDER {kind}: {order_text(order)}", order.reason)
        if order.status == "executed":
            self.counters["orders_filled"] += 1
        elif order.status == "canceled":
            self.counters["orders_cancelled"] += 1
        elif order.status == "rejected":
            self.counters["orders_rejected"] += 1
        if self.host is not None and order.strategy == self.host.name:
            self.host.order_changed(order)

    def _refusal_line(self, rule: str, message: str, context: str) -> None:
        """A console line per refusal, but at most one a second per rule: a strategy that keeps asking past a
        limit would otherwise drown the console. The next line says how many went unshown; the counters and
        the order rows have every one."""
        now = time.monotonic()
        shown_at, unshown = self._refusals_shown.get(rule, (-math.inf, 0))
        if now - shown_at < REFUSAL_LINE_INTERVAL:
            self._refusals_shown[rule] = (shown_at, unshown + 1)
            return
        self._refusals_shown[rule] = (now, 0)
        if unshown:
            context = f"{context}; and {unshown} more refused by {rule} since the last line"
        self.console("warning", message, context)

    async def _strategy_failed(self, trace: str) -> None:
        assert self.host is not None
        self.counters["strategy_failures"] += 1
        working = self.orders.working(strategy=self.host.name)
        cancelled = await self._cancel_all(working, f"strategy {self.host.name} failed")
        self.console(
            "warning",
            f"STRATEGY {self.host.name}: cancelled {cancelled} of its {len(working)} working order(s)",
            "the strategy stays stopped; the feed, the recording and the trader go on",
        )

    async def _check_loss(self) -> None:
        refusal = self.gate.session_loss(self.session_pnl())
        if refusal is not None and not self.killed:
            await self.kill(f"session loss limit: {refusal.message}")

    # ------------------------------------------------------------------------------------------ reading

    def book_changed(self, ticker: str) -> None:
        """Hot path: every applied market message."""
        host = self.host
        if host is not None and self._ready:
            host.book_changed(ticker)

    def top(self, ticker: str) -> TopOfBook | None:
        book = self._book(ticker)
        return book.top() if book is not None else None

    def book(self, ticker: str) -> OrderBook | None:
        book = self._book(ticker)
        return book.copy() if book is not None else None

    def markets(self) -> list[str]:
        return self._markets()

    def _marks(self) -> dict[str, int | None]:
        return {ticker: _mid(self.top(ticker)) for ticker in self.ledger.tickers()}

    def session_pnl(self) -> int | None:
        """P&L since trading became ready (realized + mark-to-market - fees), micro-dollars; None unmarked."""
        pnl = self.ledger.pnl(self._marks())
        if pnl.unrealized is None:
            return None
        return pnl.total - (self._baseline_pnl or 0)

    def positions(self) -> dict[str, PositionRecord]:
        now = self._clock_us()
        return {record.ticker: record for record in self.ledger.records(self._marks(), now)}

    def _snapshot_positions(self, *, everything: bool = False) -> None:
        tickers = set(self.ledger.tickers()) if everything else self._positions_due
        now = self._clock_us()
        for ticker in sorted(tickers):
            self._record(self.ledger.record(ticker, _mid(self.top(ticker)), now))
        self._positions_due = set()

    async def _compare_with_exchange(self) -> None:
        """At the end: the trader's positions against the exchange's own, field by field."""
        try:
            theirs = [p async for p in self._client.positions()]
        except KalshiRestError as exc:
            self.console("warning", f"POSITIONS: could not read the exchange's positions to compare: {exc}")
            return
        differences = self.ledger.differences(theirs)
        if differences:
            self.console("error", "POSITIONS: the trader's and the exchange's differ", "; ".join(differences[:5]))
        else:
            self.console("info", f"POSITIONS: equal to the exchange's in {len(theirs)} market(s)")

    def status(self) -> dict[str, Any]:
        """The ``trading`` block of the status document: money as dollar strings, no secrets."""
        marks = self._marks()
        pnl = self.ledger.pnl(marks)
        working = self.orders.working()
        session = self.session_pnl()
        exposure = self.gate.exposure(pnl.exposure, working)
        return {
            "enabled": True,
            "ready": self._ready,
            "killed": self.killed,
            "strategy": self.host.describe()
            if self.host is not None
            else {"name": "", "path": self.options.strategy_path, "params": {}, "state": "not started", "error": ""},
            "balance": format_money(balance.balance) if (balance := self.account.balance) is not None else None,
            "exposure": format_money(exposure),
            "realized_pnl": format_money(pnl.realized),
            "unrealized_pnl": format_money(pnl.unrealized) if pnl.unrealized is not None else None,
            "fees": format_money(pnl.fees),
            "total_pnl": format_money(pnl.total) if pnl.unrealized is not None else None,
            "session_pnl": format_money(session) if session is not None else None,
            "positions": [position_status(r) for r in self.ledger.records(marks, self._clock_us()) if r.position][
                :STATUS_ORDERS
            ],
            "open_orders": [order_status(o) for o in working[-STATUS_ORDERS:]],
            "open_orders_total": len(working),
            "recent_fills": [fill_status(f) for f in reversed(self._fills)],
            "limits": self.options.limits.describe(),
            "refusals": dict(self.refusals),
            "counters": {name: self.counters[name] for name in _COUNTERS},
        }

    def metrics(self) -> dict[str, int]:
        return {f"trading_{name}": self.counters[name] for name in _COUNTERS} | {
            f"trading_refused_{rule}": count for rule, count in self.refusals.items()
        }


_COUNTERS = (
    "orders_placed",
    "orders_amended",
    "orders_filled",
    "orders_cancelled",
    "orders_rejected",
    "orders_refused",
    "fills",
    "maker_fills",
    "taker_fills",
    "account_syncs",
    "position_differences",
    "kill_switch",
    "strategy_failures",
)

_ORDER_LINES = {
    "executed": "FILLED",
    "canceled": "CANCELLED",
    "rejected": "REJECTED",
    "unknown": "UNKNOWN",
}


def _order_line(before: str | None, order: OrderRecord) -> str | None:
    """The word of an order's console line for this change; None for a change a FILL line already tells
    (a partial fill of a resting order) or that changes nothing a person follows (a read-back)."""
    if order.status != "resting":
        return _ORDER_LINES.get(order.status)
    if before in (None, "submitted", "unknown"):
        return "PLACED"
    if order.reason.startswith("amended"):
        return "AMENDED"
    return None


def _mid(top: TopOfBook | None) -> int | None:
    return top.mid if top is not None else None
