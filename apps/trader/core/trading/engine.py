"""The trading engine: the account, this trader's orders, the risk limits and the strategy, behind one door.

The coordinator drives it through the trading states: ``connect()`` starts the private feed (fills, order
updates, positions); the engine reports ``subscribed`` and, once the account is loaded and reconciled,
``synced`` (``TradingNews``), and the coordinator moves to ``kalshi_data_sync`` and ``trading_ready``.
``resume()`` starts the strategy there; ``pause()`` holds it while a connection is being remade; ``kill()``
cancels this trader's working orders and stops the strategy (the kill switch, ``error``, shutdown).

Every order passes the risk gate before it leaves the process; a refused one is recorded with the rule.
Positions and P&L are the trader's own, computed from fills by the ledger; after a reconnect, fills missed
while the private feed was down are read from REST and booked once (by trade id). Every change becomes a
typed record for the session writer and a console line. No Django, no network library: the trading client
and the private feed come in through ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol

from apps.kalshi.feed import FeedEvent, FeedEventKind
from apps.kalshi.fixedpoint import format_money, format_price, format_size
from apps.kalshi.orderbook import OrderBook, TopOfBook
from apps.kalshi.portfolio import Balance, BookSide, Fill, MarketPosition, Order, TimeInForce
from apps.kalshi.privatemessages import FillMessage, MarketPositionMessage, PrivateMessage, UserOrderMessage
from apps.kalshi.resterrors import KalshiRestError
from apps.trader.core.trading.ledger import Ledger
from apps.trader.core.trading.orders import OrderClient, OrderManager
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
FILLS_MARGIN_US = 60_000_000
"""Fills are read again from this long before the last read: Kalshi's min_ts is in whole seconds, and a
trade's time is when it was made, not when it became visible."""
REFUSAL_LINE_INTERVAL = 1.0
"""Seconds between two console lines of refusals by one rule."""
STATUS_ORDERS = 50
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


class TradingClient(OrderClient, Protocol):
    """What the engine asks of the exchange's REST side beyond orders."""

    def fills(self, **filters: Any) -> AsyncIterator[Fill]: ...

    def positions(self, **filters: Any) -> AsyncIterator[MarketPosition]: ...

    async def get_balance(self) -> Balance: ...

    async def aclose(self) -> None: ...


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
        self._console = console
        self._record = record
        self._on_news = on_news
        self._clock_us = clock_us
        self.gate = RiskGate(options.limits)
        self.ledger = Ledger()
        self.orders = OrderManager(client, on_change=self._order_changed, clock_us=clock_us)
        self.balance: Balance | None = None
        self.counters: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.host: StrategyHost | None = None
        self.killed = ""
        """Why the kill switch stopped trading for the rest of the session ('' while it has not)."""
        self._feed: PrivateFeedPort | None = None
        self._feed_task: asyncio.Task[None] | None = None
        self._ready = False
        self._synced_once = False
        self._started_us = clock_us()
        self._baseline_pnl: int | None = None
        self._fills: deque[FillRecord] = deque(maxlen=STATUS_FILLS)
        self._positions_due: set[str] = set()
        self._background: asyncio.Task[None] | None = None
        self._strangers_reported: set[str] = set()
        self._strangers_cancelled: set[str] = set()
        self._order_states: dict[str, str] = {}
        """Each order's status as last recorded, so that an order is counted once when it ends."""
        self._checking = False
        """An account check while trading is running (not a sync after a connect)."""
        self._loss_checks: set[asyncio.Task[None]] = set()
        self._fills_read_at_us = self._started_us
        self._position_doubts: set[str] = set()
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
            context = StrategyContextImpl(self, strategy.display_name())
            self.host = StrategyHost(strategy, context, on_failed=self._strategy_failed, console=self._console)
        self.host.start()

    def pause(self, reason: str) -> None:
        """Leaving ``trading_ready`` for a reconnect: no new orders, the strategy waits; resting orders stay."""
        if self._ready:
            self._console("warning", f"TRADING: paused ({reason})", "resting orders stay on the exchange")
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
        self._console(
            level if not failed else "error",
            f"{'KILL SWITCH' if sticky else 'TRADING STOPPED'}: {reason}",
            f"cancelled {cancelled} of {len(working)} working order(s)"
            + (f"; {failed} could not be cancelled (see the orders)" if failed else ""),
        )
        return cancelled

    async def close(self, reason: str) -> None:
        """Shutdown: kill (waiting for the cancels), snapshot every position, close the feed and the client."""
        if self._synced_once or self.orders.working():
            await self.kill(reason, sticky=False)
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
        self._snapshot_positions(everything=True)
        await self.disconnect()
        if self._synced_once:
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
            self._snapshot_positions()
            if (
                self._ready
                and self._feed is not None
                and time.monotonic() - checked >= self.options.account_check_interval
            ):
                checked = time.monotonic()
                await self._check_account(self._feed)
            elif self._synced_once:
                try:
                    self.balance = await self._client.get_balance()
                except KalshiRestError as exc:
                    logger.info("balance read failed: %s", exc)
            await self._check_loss()

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
            self._console(
                event.level,
                f"TRADING CONNECTION: {event.reason}",
                f"reconnecting, attempt {event.attempt} in {event.delay:.1f} s",
            )
        elif event.kind is FeedEventKind.FATAL:
            self._on_news(TradingNews(TradingNewsKind.FATAL, event.reason))
        elif event.kind is FeedEventKind.CONNECTED:
            self._console("info", f"TRADING CONNECTION: {event.reason}")
        else:
            self._console(event.level, f"TRADING {event.kind.value.upper()}: {event.reason}")

    async def on_account_snapshot(self, snapshot: AccountSnapshot) -> None:
        """The account read from REST (after a (re)connect, and now and then while trading): positions,
        resting orders and the balance."""
        first = not self._synced_once
        missed = 0
        if first:
            # Fills already in the positions read must not be booked again when their message comes late.
            self.ledger.load(snapshot.positions, trade_ids=await self._fill_ids_since(self._started_us))
        else:
            missed = await self._catch_up_fills()
        changed, strangers = self.orders.on_resting(snapshot.open_orders)
        settled = await self.orders.settle_missing(
            {o.order_id for o in snapshot.open_orders}, reason="not resting on the exchange any more"
        )
        self.balance = snapshot.balance
        await self._handle_strangers(strangers)
        if not first:
            self._compare_positions(snapshot.positions)
        self._synced_once = True
        self.counters["account_syncs"] += 1
        brought = len(changed) + len(settled)
        if self._checking and not (brought or missed):
            return
        self._console(
            "warning" if self._checking else "info",
            f"ACCOUNT: balance {format_money(snapshot.balance.balance)}, "
            f"{len([p for p in snapshot.positions if p.position])} position(s), "
            f"{len(snapshot.open_orders)} resting order(s)",
            f"{brought} of this trader's orders brought up to date" if brought else "",
        )
        if not self._checking:
            self._on_news(TradingNews(TradingNewsKind.SYNCED, "account loaded"))

    def _compare_positions(self, positions: Sequence[MarketPosition]) -> None:
        """Say so when the exchange's positions differ from the trader's fills on two reads in a row: a fill
        between the positions read and the fills read differs once, a lost one stays."""
        differences = self.ledger.differences(positions)
        lasting = [line for line in differences if line in self._position_doubts]
        self._position_doubts = set(differences)
        if lasting:
            self.counters["position_differences"] += 1
            self._console(
                "error", "POSITIONS: the exchange's positions differ from the trader's fills", "; ".join(lasting[:5])
            )

    async def on_private_message(self, message: PrivateMessage) -> None:
        if isinstance(message, FillMessage):
            self._fill(self._fill_record(message))
        elif isinstance(message, UserOrderMessage):
            record = self.orders.on_user_order(message)
            if record is None and message.status == "resting":
                await self._handle_strangers([], reported=message.order_id)
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

    def _fill(self, fill: FillRecord) -> None:
        """Book a fill once: ledger, order, record, console, strategy."""
        if not self.ledger.apply_fill(fill):
            return
        self.counters["fills"] += 1
        self.counters["taker_fills" if fill.is_taker else "maker_fills"] += 1
        self._fills.append(fill)
        self._positions_due.add(fill.ticker)
        self._record(fill)
        order = self.orders.on_fill(fill)
        self._console(
            "info",
            f"FILL: {_side_text(fill.side)} {format_size(fill.count)} {fill.ticker} at {format_price(fill.yes_price)}"
            f" ({'taker' if fill.is_taker else 'maker'}, fee {format_money(fill.fee)})",
            f"position now {format_size(self.ledger.position(fill.ticker))}"
            + (f"; order {order.client_order_id[:8]} [{order.strategy}]" if order else ""),
        )
        if self.host is not None and order is not None and order.strategy == self.host.name:
            self.host.filled(fill)
        # Kept until done: the loop holds only a weak reference to a task.
        check = asyncio.get_running_loop().create_task(self._check_loss())
        self._loss_checks.add(check)
        check.add_done_callback(self._loss_checks.discard)

    async def _fill_ids_since(self, since_us: int) -> list[str]:
        return [fill.fill_id async for fill in self._client.fills(min_ts=since_us // 1_000_000)]

    async def _catch_up_fills(self) -> int:
        """Book the fills of the account that no message brought (REST since the last such read, with a
        margin); returns how many. The ledger follows the whole account, as the positions REST reports do,
        so another program's fills on it count too (without an order of this trader's)."""
        missed = 0
        since, self._fills_read_at_us = self._fills_read_at_us, self._clock_us()
        try:
            async for fill in self._client.fills(min_ts=max(self._started_us, since - FILLS_MARGIN_US) // 1_000_000):
                order = self.orders.by_order_id(fill.order_id)
                before = self.counters["fills"]
                signed = fill.count if fill.book_side == "bid" else -fill.count
                self._fill(
                    FillRecord(
                        trade_id=fill.fill_id,
                        order_id=fill.order_id,
                        client_order_id=order.client_order_id if order is not None else "",
                        ticker=fill.ticker,
                        side=fill.book_side,
                        yes_price=fill.yes_price,
                        count=fill.count,
                        fee=fill.fee_cost,
                        is_taker=fill.is_taker,
                        post_position=self.ledger.position(fill.ticker) + signed,
                        ts_ms=_epoch_ms(fill.created_time),
                        received_us=self._clock_us(),
                    )
                )
                missed += self.counters["fills"] - before
        except KalshiRestError as exc:
            self._fills_read_at_us = since  # read them again next time
            self._console("error", f"ACCOUNT: reading missed fills failed: {exc}")
            raise
        if missed:
            self._console("warning", f"ACCOUNT: booked {missed} fill(s) on the account that no message brought")
        return missed

    async def _handle_strangers(self, strangers: Sequence[Order], *, reported: str = "") -> None:
        """Resting orders of the account that this trader did not place: reported once, cancelled at a sync
        if asked (also one first reported by a message, and again at the next sync when a cancel failed)."""
        if reported:
            if reported not in self._strangers_reported:
                self._strangers_reported.add(reported)
                self._console("warning", f"ACCOUNT: order {reported} rests on the account and is not this trader's")
            return
        if not self.options.cancel_unknown_orders:
            fresh = [o for o in strangers if o.order_id not in self._strangers_reported]
            if not fresh:
                return
            self._strangers_reported.update(o.order_id for o in fresh)
            self._console(
                "warning",
                f"ACCOUNT: {len(fresh)} resting order(s) this trader did not place; left alone",
                f"{_listed(fresh)}; pass --cancel-unknown-orders to cancel them at sync",
            )
            return
        due = [o for o in strangers if o.order_id not in self._strangers_cancelled]
        if not due:
            return
        self._strangers_reported.update(o.order_id for o in due)
        cancelled = 0
        for order in due:
            try:
                await self._client.cancel_order(order.order_id)
                cancelled += 1
                self._strangers_cancelled.add(order.order_id)
            except KalshiRestError as exc:
                logger.warning("cancelling unknown order %s failed: %s", order.order_id, exc)
        self._console("warning", f"ACCOUNT: cancelled {cancelled} of {len(due)} unknown resting order(s)", _listed(due))

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
        kind = _ORDER_LINES.get(order.status)
        if order.status == "refused":
            self._refusal_line(order.error_code, f"REFUSED by {order.error_code}: {_order_text(order)}", order.reason)
        elif kind is not None:
            level = "warning" if order.status in ("rejected", "unknown") else "info"
            self._console(level, f"ORDER {kind}: {_order_text(order)}", order.reason)
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
        self._console("warning", message, context)

    async def _strategy_failed(self, trace: str) -> None:
        assert self.host is not None
        self.counters["strategy_failures"] += 1
        working = self.orders.working(strategy=self.host.name)
        cancelled = await self._cancel_all(working, f"strategy {self.host.name} failed")
        self._console(
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
            self._console("warning", f"POSITIONS: could not read the exchange's positions to compare: {exc}")
            return
        differences = self.ledger.differences(theirs)
        if differences:
            self._console("error", "POSITIONS: the trader's and the exchange's differ", "; ".join(differences[:5]))
        else:
            self._console("info", f"POSITIONS: equal to the exchange's in {len(theirs)} market(s)")

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
            "balance": format_money(self.balance.balance) if self.balance is not None else None,
            "exposure": format_money(exposure),
            "realized_pnl": format_money(pnl.realized),
            "unrealized_pnl": format_money(pnl.unrealized) if pnl.unrealized is not None else None,
            "fees": format_money(pnl.fees),
            "total_pnl": format_money(pnl.total) if pnl.unrealized is not None else None,
            "session_pnl": format_money(session) if session is not None else None,
            "positions": [_position_status(r) for r in self.ledger.records(marks, self._clock_us()) if r.position][
                :STATUS_ORDERS
            ],
            "open_orders": [_order_status(o) for o in working[-STATUS_ORDERS:]],
            "open_orders_total": len(working),
            "recent_fills": [_fill_status(f) for f in reversed(self._fills)],
            "limits": self.options.limits.describe(),
            "refusals": dict(self.refusals),
            "counters": {name: self.counters[name] for name in _COUNTERS},
        }

    def metrics(self) -> dict[str, int]:
        return {f"trading_{name}": self.counters[name] for name in _COUNTERS} | {
            f"trading_refused_{rule}": count for rule, count in self.refusals.items()
        }


class StrategyContextImpl:
    """A strategy's view of the engine: its own orders, under its own name."""

    def __init__(self, engine: TradingEngine, name: str) -> None:
        self._engine = engine
        self._name = name

    @property
    def markets(self) -> list[str]:
        return self._engine.markets()

    @property
    def balance(self) -> int:
        balance = self._engine.balance
        return balance.balance if balance is not None else 0

    def top(self, ticker: str) -> TopOfBook | None:
        return self._engine.top(ticker)

    def book(self, ticker: str) -> OrderBook | None:
        return self._engine.book(ticker)

    def position(self, ticker: str) -> int:
        return self._engine.ledger.position(ticker)

    def positions(self) -> dict[str, PositionRecord]:
        return self._engine.positions()

    def open_orders(self, ticker: str | None = None) -> list[OrderRecord]:
        return self._engine.orders.working(strategy=self._name, ticker=ticker)

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
        intent = OrderIntent(
            ticker=ticker,
            side=side,
            yes_price=price,
            count=count,
            time_in_force=time_in_force,
            post_only=post_only,
            reduce_only=reduce_only,
        )
        return await self._engine.place(intent, strategy=self._name, reason=reason)

    async def amend(self, order: OrderRecord | str, *, price: int, count: int, reason: str = "") -> OrderRecord:
        record = self._own(order)
        return await self._engine.amend(record, price=price, count=count, strategy=self._name, reason=reason)

    async def cancel(self, order: OrderRecord | str, *, reason: str = "") -> OrderRecord:
        record = self._own(order)
        result = await self._engine.cancel(record, reason=reason or f"by {self._name}")
        assert result is not None
        return result

    async def cancel_all(self, ticker: str | None = None, *, reason: str = "") -> None:
        for order in self.open_orders(ticker):
            await self._engine.cancel(order, reason=reason or f"by {self._name}")

    def log(self, message: str, *, level: Literal["info", "warning", "error"] = "info") -> None:
        self._engine._console(level, f"[{self._name}] {message}")

    def _own(self, order: OrderRecord | str) -> OrderRecord:
        client_order_id = order if isinstance(order, str) else order.client_order_id
        record = self._engine.orders.get(client_order_id)
        if record is None or record.strategy != self._name:
            raise ValueError(f"order {client_order_id} is not one of {self._name}'s orders")
        return record


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
    "resting": "RESTING",
    "executed": "FILLED",
    "canceled": "CANCELLED",
    "rejected": "REJECTED",
    "unknown": "UNKNOWN",
}


def _side_text(side: BookSide) -> str:
    return "buy YES" if side == "bid" else "sell YES"


def _order_text(order: OrderRecord) -> str:
    done = f", {format_size(order.fill_count)} filled" if order.fill_count else ""
    return (
        f"{_side_text(order.side)} {format_size(order.initial_count)} {order.ticker} at "
        f"{format_price(order.yes_price)}{done} [{order.strategy}]"
    )


def _listed(orders: Sequence[Order]) -> str:
    return ", ".join(f"{o.ticker} {o.book_side} {format_price(o.yes_price)}" for o in orders[:5])


def _epoch_ms(iso: str | None) -> int:
    """An RFC 3339 time of Kalshi's as milliseconds since the epoch; 0 when it is missing or unreadable."""
    if not iso:
        return 0
    try:
        return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return 0


def _mid(top: TopOfBook | None) -> int | None:
    return top.mid if top is not None else None


def _order_status(order: OrderRecord) -> dict[str, Any]:
    return {
        "client_order_id": order.client_order_id,
        "order_id": order.order_id,
        "ticker": order.ticker,
        "side": order.side,
        "yes_price": format_price(order.yes_price),
        "initial_count": format_size(order.initial_count),
        "fill_count": format_size(order.fill_count),
        "remaining_count": format_size(order.remaining_count),
        "status": order.status,
        "time_in_force": order.time_in_force,
        "strategy": order.strategy,
    }


def _position_status(record: PositionRecord) -> dict[str, Any]:
    return {
        "ticker": record.ticker,
        "position": format_size(record.position),
        "cost": format_money(record.cost),
        "realized_pnl": format_money(record.realized_pnl),
        "fees_paid": format_money(record.fees_paid),
        "mark_price": format_price(record.mark_price) if record.mark_price is not None else None,
        "unrealized_pnl": format_money(record.unrealized_pnl) if record.unrealized_pnl is not None else None,
    }


def _fill_status(fill: FillRecord) -> dict[str, Any]:
    return {
        "trade_id": fill.trade_id,
        "ticker": fill.ticker,
        "side": fill.side,
        "yes_price": format_price(fill.yes_price),
        "count": format_size(fill.count),
        "fee": format_money(fill.fee),
        "is_taker": fill.is_taker,
        "ts_ms": fill.ts_ms,
    }
