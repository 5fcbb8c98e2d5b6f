"""The trading engine with a scripted exchange and a stand-in private feed: the risk gate and its console lines,
the kill switch, account snapshots (catch-up fills, strangers, position checks), private messages, status."""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace
from typing import Any

import pytest

import apps.trader.core.trading.engine as engine_module
from apps.kalshi.fixedpoint import DOLLAR
from apps.kalshi.orderbook import OrderBook
from apps.kalshi.portfolio import AmendResult, Balance, CancelResult, KalshiOrder, MarketPosition
from apps.kalshi.privatemessages import MarketPositionMessage
from apps.kalshi.trading import AccountSnapshot
from apps.trader.core.trading.engine import TradingEngine, TradingNews, TradingNewsKind, TradingOptions
from apps.trader.core.trading.records import FillRecord, OrderRecord, TradingRecord
from apps.trader.core.trading.risk import OrderIntent, RiskLimits
from tests.support import eventually
from tests.trading.scripted import (
    ScriptedClient,
    T,
    fill_message,
    order,
    placement,
    rest_error,
    rest_fill,
    user_order,
)

BALANCE = Balance(balance=500_000_000, portfolio_value=0)


class Feed:
    """The private feed: runs until closed; ``reconcile`` hands the listener ``snapshot``."""

    def __init__(self) -> None:
        self.listener: Any = None
        self.snapshot = AccountSnapshot((), (), BALANCE)
        self.reconciles = 0
        self._closed = asyncio.Event()

    def factory(self, listener: Any) -> Feed:
        self.listener = listener
        return self

    async def run(self) -> None:
        await self._closed.wait()

    async def close(self) -> None:
        self._closed.set()

    async def reconcile(self) -> None:
        self.reconciles += 1
        await self.listener.on_account_snapshot(self.snapshot)


class Trading:
    """A TradingEngine on a scripted client, a stand-in feed and one two-sided book, with what it said."""

    def __init__(self, **options: Any) -> None:
        self.client = ScriptedClient()
        self.feed = Feed()
        book = OrderBook(T)
        book.yes = {4000: 10_000}
        book.no = {DOLLAR - 4200: 10_000}
        self.books = {T: book}
        self.lines: list[tuple[str, str, str]] = []
        self.records: list[TradingRecord] = []
        self.news: list[TradingNews] = []
        clock = itertools.count(1_700_000_000_000_000, 1000)
        self.engine = TradingEngine(
            options=TradingOptions(**options),
            client=self.client,
            feed_factory=self.feed.factory,
            book=self.books.get,
            markets=lambda: [T],
            console=self._console,
            record=self.records.append,
            on_news=self.news.append,
            clock_us=lambda: next(clock),
        )

    def _console(self, level: str, message: str, context: str = "") -> None:
        self.lines.append((level, message, context))

    def said(self, text: str) -> list[tuple[str, str, str]]:
        return [line for line in self.lines if text in line[1]]

    async def snapshot(
        self, open_orders: tuple[KalshiOrder, ...] = (), positions: tuple[MarketPosition, ...] = ()
    ) -> None:
        await self.engine.on_account_snapshot(AccountSnapshot(open_orders, positions, BALANCE))

    async def ready(self) -> None:
        """Synced and trading_ready."""
        await self.snapshot()
        self.engine.resume()

    async def place(self, order_id: str, *, count: int = 100, price: int = 4000, filled: int = 0) -> OrderRecord:
        self.client.answer("create_order", placement(order_id, fill_count=filled, remaining_count=count - filled))
        return await self.engine.place(intent(count=count, price=price), strategy="console")

    def fills(self) -> list[FillRecord]:
        return [r for r in self.records if isinstance(r, FillRecord)]


def intent(*, count: int = 100, price: int = 4000) -> OrderIntent:
    return OrderIntent(ticker=T, side="bid", yes_price=price, count=count)


def position(held: int, cost: int, fees: int = 0) -> MarketPosition:
    return MarketPosition(T, held, cost, 0, fees, cost)


@pytest.fixture
async def trading() -> Trading:
    return Trading()


# ---------------------------------------------------------------------------------------------- the gate


async def test_an_order_a_risk_rule_refuses_is_recorded_counted_and_said_once() -> None:
    t = Trading(limits=RiskLimits(max_order_size=500))
    await t.ready()

    record = await t.engine.place(intent(count=600), strategy="console")

    assert (record.status, record.error_code) == ("refused", "max_order_size")
    assert t.client.asked("create_order") == []
    assert t.engine.refusals["max_order_size"] == 1
    assert t.engine.metrics()["trading_orders_refused"] == 1
    assert t.engine.metrics()["trading_refused_max_order_size"] == 1
    assert t.engine.metrics()["trading_orders_placed"] == 0
    (line,) = t.said("REFUSED")
    assert line[0] == "warning" and "max_order_size" in line[1]
    assert [r for r in t.records if isinstance(r, OrderRecord)] == [record]


async def test_a_burst_of_refusals_is_one_line_a_second_and_the_next_says_how_many_went_unshown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(engine_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    t = Trading(limits=RiskLimits(max_order_size=500, max_open_orders=0))
    await t.ready()

    for _ in range(5):
        await t.engine.place(intent(count=600), strategy="console")
    now[0] = 100.9
    for _ in range(2):
        await t.engine.place(intent(count=600), strategy="console")
    await t.engine.place(intent(count=100), strategy="console")  # another rule has its own line
    assert len(t.said("REFUSED by max_order_size")) == 1
    assert len(t.said("REFUSED by max_open_orders")) == 1
    now[0] = 101.0
    await t.engine.place(intent(count=600), strategy="console")

    lines = t.said("REFUSED by max_order_size")
    assert len(lines) == 2
    assert "and 6 more refused by max_order_size since the last line" in lines[1][2]
    assert t.engine.refusals["max_order_size"] == 8
    assert t.engine.counters["orders_refused"] == 9


async def test_an_order_before_trading_is_ready_is_refused_as_trading_stopped(trading: Trading) -> None:
    record = await trading.engine.place(intent(), strategy="console")

    assert (record.status, record.error_code) == ("refused", "trading_stopped")
    assert trading.client.calls == []


async def test_an_amend_a_rule_refuses_leaves_the_order_and_says_why(trading: Trading) -> None:
    await trading.ready()
    resting = await trading.place("o-1", count=100)

    after = await trading.engine.amend(resting, price=9900, count=100, strategy="console")

    assert after == resting
    assert trading.client.asked("amend_order") == []
    assert trading.engine.refusals["price_band"] == 1
    assert len(trading.said("REFUSED amend by price_band")) == 1


# ---------------------------------------------------------------------------------------------- the kill switch


async def test_the_kill_switch_cancels_only_this_traders_working_orders_and_stops_trading(trading: Trading) -> None:
    stranger = order("o-x", "someone-else")
    await trading.snapshot(open_orders=(stranger,))
    trading.engine.resume()
    await trading.place("o-1")
    await trading.place("o-2")
    await trading.place("o-3", filled=100)  # executed: nothing to cancel
    trading.client.answer("cancel_order", CancelResult("o-1", None, 100), CancelResult("o-2", None, 100))

    cancelled = await trading.engine.kill("kill switch pressed")

    assert cancelled == 2
    assert sorted(trading.client.asked("cancel_order")) == ["o-1", "o-2"]
    assert trading.engine.orders.working() == []
    (line,) = trading.said("KILL SWITCH")
    assert line[0] == "warning" and "cancelled 2 of 2" in line[2]
    assert trading.engine.metrics()["trading_kill_switch"] == 1
    trading.engine.resume()  # sticky: a later trading_ready does not trade again
    refused = await trading.engine.place(intent(), strategy="console")
    assert (refused.status, refused.error_code) == ("refused", "trading_stopped")
    assert "kill switch pressed" in refused.reason


async def test_the_kill_switch_reports_the_orders_it_could_not_cancel(trading: Trading) -> None:
    await trading.ready()
    await trading.place("o-1")
    await trading.place("o-2")
    trading.client.answer("cancel_order", CancelResult("o-1", None, 100), rest_error(503))

    cancelled = await trading.engine.kill("kill switch pressed")

    assert cancelled == 1
    (line,) = trading.said("KILL SWITCH")
    assert line[0] == "error" and "1 could not be cancelled" in line[2]
    assert [o.order_id for o in trading.engine.orders.working()] == ["o-2"]


async def test_stopping_trading_without_the_kill_switch_lets_it_resume(trading: Trading) -> None:
    await trading.ready()
    await trading.place("o-1")
    trading.client.answer("cancel_order", CancelResult("o-1", None, 100))

    await trading.engine.kill("entering error", sticky=False)

    assert trading.engine.killed == ""
    assert trading.said("TRADING STOPPED")
    assert (await trading.engine.place(intent(), strategy="console")).error_code == "trading_stopped"
    trading.engine.resume()
    assert (await trading.place("o-2")).status == "resting"


async def test_the_kill_switch_cancels_an_order_whose_create_is_still_in_flight(trading: Trading) -> None:
    await trading.ready()
    gate = asyncio.Event()

    async def slow_create(request: Any) -> Any:
        await gate.wait()
        return placement("o-1", remaining_count=100)

    trading.client.answer("create_order", slow_create)
    trading.client.answer("find_order_by_client_id", None)  # the exchange has not taken it in yet
    trading.client.answer("cancel_order", CancelResult("o-1", None, 100))
    placing = asyncio.create_task(trading.engine.place(intent(), strategy="console"))
    await eventually(lambda: bool(trading.client.asked("create_order")), what="the create to be sent")

    killing = asyncio.create_task(trading.engine.kill("kill switch pressed"))
    for _ in range(20):  # every ready task gets turns; no time passes
        await asyncio.sleep(0)
    gate.set()
    await placing
    await killing

    assert trading.client.asked("cancel_order") == ["o-1"]
    assert trading.engine.orders.working() == []


# ---------------------------------------------------------------------------------------------- the account


async def test_the_first_snapshot_is_the_baseline_and_its_fills_are_not_booked_again(trading: Trading) -> None:
    trading.client.fill_list = [rest_fill("o-old", 200, trade_id="t-old")]

    await trading.snapshot(positions=(position(200, 800_000),))

    assert trading.engine.ledger.position(T) == 200
    assert [n.kind for n in trading.news] == [TradingNewsKind.SYNCED]
    await trading.engine.on_private_message(fill_message("o-old", 200, trade_id="t-old"))
    assert trading.engine.ledger.position(T) == 200
    assert trading.fills() == []


async def test_fills_no_message_brought_are_booked_once_at_a_later_snapshot(trading: Trading) -> None:
    await trading.ready()
    mine = await trading.place("o-1", count=300)
    trading.client.fill_list = [
        rest_fill("o-1", 100, trade_id="t-1", fee=2),
        rest_fill("o-x", 500, trade_id="t-x"),  # another trader's order on the account
    ]
    after_fill = order("o-1", mine.client_order_id, initial=300, filled=100, fees=2)

    # 6.00 contracts at 0.4000: 2.40 $; the ledger follows the whole account, as REST's positions do
    await trading.snapshot(open_orders=(after_fill,), positions=(position(600, 2_400_000, fees=2),))
    await trading.snapshot(open_orders=(after_fill,), positions=(position(600, 2_400_000, fees=2),))
    await trading.engine.on_private_message(fill_message("o-1", 100, trade_id="t-1", fee=2))  # late

    assert [(f.trade_id, f.client_order_id) for f in trading.fills()] == [
        ("t-1", mine.client_order_id),
        ("t-x", ""),
    ]
    assert [f.post_position for f in trading.fills()] == [100, 600]
    assert trading.engine.ledger.position(T) == 600
    assert trading.engine.metrics()["trading_fills"] == 2
    assert trading.said("POSITIONS") == []
    now = trading.engine.orders.get(mine.client_order_id)
    assert now is not None and (now.fill_count, now.remaining_count, now.fees) == (100, 200, 2)
    assert len(trading.said("booked 2 fill(s)")) == 1
    assert trading.engine.metrics()["trading_position_differences"] == 0


async def test_strangers_are_reported_once_and_left_alone_by_default(trading: Trading) -> None:
    stranger = order("o-x", "someone-else")

    await trading.snapshot(open_orders=(stranger,))
    await trading.snapshot(open_orders=(stranger,))

    assert len(trading.said("did not place; left alone")) == 1
    assert trading.client.asked("cancel_order") == []


async def test_strangers_are_cancelled_when_asked(trading: Trading) -> None:
    t = Trading(cancel_unknown_orders=True)
    stranger = order("o-x", "someone-else")
    t.client.answer("cancel_order", CancelResult("o-x", None, 1000))

    await t.snapshot(open_orders=(stranger,))

    assert t.client.asked("cancel_order") == ["o-x"]
    assert len(t.said("cancelled 1 of 1 unknown")) == 1
    assert t.engine.orders.all() == []


async def test_a_stranger_first_seen_in_a_message_is_still_cancelled_at_the_next_sync() -> None:
    t = Trading(cancel_unknown_orders=True)
    await t.ready()
    await t.engine.on_private_message(user_order("o-x", "someone-else"))
    assert len(t.said("is not this trader's")) == 1
    t.client.answer("cancel_order", CancelResult("o-x", None, 1000))

    await t.snapshot(open_orders=(order("o-x", "someone-else"),))

    assert t.client.asked("cancel_order") == ["o-x"]


async def test_a_positions_difference_is_said_only_when_two_reads_in_a_row_show_it(trading: Trading) -> None:
    await trading.ready()

    await trading.snapshot(positions=(position(100, 400_000),))  # a fill on its way, say
    await trading.snapshot()
    assert trading.said("POSITIONS") == []
    await trading.snapshot(positions=(position(100, 400_000),))
    assert trading.said("POSITIONS") == []
    await trading.snapshot(positions=(position(100, 400_000),))

    (line,) = trading.said("POSITIONS")
    assert line[0] == "error" and "position" in line[2]
    assert trading.engine.metrics()["trading_position_differences"] == 1


async def test_the_periodic_account_check_is_quiet_unless_something_was_missing() -> None:
    t = Trading(account_check_interval=0.01, positions_interval=0.01)
    t.engine.connect()
    await t.feed.reconcile()
    t.engine.resume()
    t.lines.clear()
    try:
        mine = await t.place("o-1")
        t.feed.snapshot = AccountSnapshot((order("o-1", mine.client_order_id, initial=100),), (), BALANCE)
        await eventually(lambda: t.feed.reconciles >= 3, what="two account checks")
        assert t.said("ACCOUNT") == []

        t.client.answer("get_order", order("o-1", mine.client_order_id, status="canceled", initial=100))
        t.feed.snapshot = AccountSnapshot((), (), BALANCE)  # o-1 was cancelled and no message said so
        await eventually(lambda: bool(t.said("ACCOUNT")), what="the check to find the cancelled order")
        (line,) = t.said("ACCOUNT")
        assert line[0] == "warning" and "1 of this trader's orders brought up to date" in line[2]
        assert t.engine.orders.working() == []
        assert [n.kind for n in t.news] == [TradingNewsKind.SYNCED]
    finally:
        for working in t.engine.orders.working():
            t.client.answer("cancel_order", CancelResult(working.order_id, None, 100))
        await t.engine.close("test over")


# ---------------------------------------------------------------------------------------------- messages


async def test_a_fill_of_an_unknown_order_and_a_duplicate_fill_are_booked_once(trading: Trading) -> None:
    await trading.ready()
    mine = await trading.place("o-1", count=300)

    await trading.engine.on_private_message(fill_message("o-x", 100, trade_id="t-x"))
    await trading.engine.on_private_message(fill_message("o-x", 100, trade_id="t-x"))
    message = fill_message("o-1", 100, trade_id="t-1", fee=3, client_order_id=mine.client_order_id)
    await trading.engine.on_private_message(message)
    await trading.engine.on_private_message(message)

    assert [f.trade_id for f in trading.fills()] == ["t-x", "t-1"]
    assert trading.engine.ledger.position(T) == 200  # the account's position: both fills, once each
    now = trading.engine.orders.get(mine.client_order_id)
    assert now is not None and (now.fill_count, now.remaining_count, now.fees) == (100, 200, 3)
    assert trading.engine.metrics()["trading_fills"] == 2


async def test_a_market_position_message_changes_nothing(trading: Trading) -> None:
    await trading.ready()
    before = (list(trading.records), list(trading.lines), trading.engine.ledger.position(T))

    await trading.engine.on_private_message(MarketPositionMessage("user-1", T, 500, 1, 0, 0, 0, 500))

    assert (trading.records, trading.lines, trading.engine.ledger.position(T)) == before


async def test_an_order_that_ended_is_counted_and_said_once_when_its_fees_come_later(trading: Trading) -> None:
    await trading.ready()
    mine = await trading.place("o-1", count=100, filled=100)  # executed at once; the fee comes with the fill

    await trading.engine.on_private_message(
        fill_message("o-1", 100, trade_id="t-1", fee=4, client_order_id=mine.client_order_id, is_taker=True)
    )

    now = trading.engine.orders.get(mine.client_order_id)
    assert now is not None and (now.status, now.fees) == ("executed", 4)
    assert trading.engine.metrics()["trading_orders_filled"] == 1
    assert len(trading.said("ORDER FILLED")) == 1


# ---------------------------------------------------------------------------------------------- status


async def test_status_carries_dollar_strings_and_no_key_material(trading: Trading) -> None:
    trading.client.fill_list = []
    await trading.ready()
    await trading.place("o-1", count=100, price=4000)
    await trading.engine.on_private_message(fill_message("o-x", 200, trade_id="t-x", price=4100, fee=7))

    status = trading.engine.status()

    assert status["balance"] == "500.000000"
    assert status["fees"] == "0.000007"
    assert status["realized_pnl"] == "0.000000"
    assert status["open_orders"][0]["yes_price"] == "0.4000" and status["open_orders"][0]["initial_count"] == "1.00"
    assert status["positions"][0]["position"] == "2.00"
    assert status["recent_fills"][0]["fee"] == "0.000007"
    assert status["limits"]["max_exposure"] == "100.000000"

    def words(value: object) -> list[str]:
        if isinstance(value, dict):
            return [str(k) for k in value] + [w for v in value.values() for w in words(v)]
        if isinstance(value, list):
            return [w for v in value for w in words(v)]
        return [str(value)]

    text = " ".join(words(status)).lower()
    assert not any(secret in text for secret in ("key", "secret", "private", "signature", "password"))
    money = [status[k] for k in ("balance", "exposure", "realized_pnl", "fees", "total_pnl")]
    assert all(isinstance(v, str) for v in money)


async def test_metrics_are_named_for_trading(trading: Trading) -> None:
    t = Trading(limits=RiskLimits(max_order_size=500))
    await t.ready()
    await t.engine.place(intent(count=600), strategy="console")

    names = set(t.engine.metrics())

    assert names == {
        "trading_orders_placed",
        "trading_orders_amended",
        "trading_orders_filled",
        "trading_orders_cancelled",
        "trading_orders_rejected",
        "trading_orders_refused",
        "trading_fills",
        "trading_maker_fills",
        "trading_taker_fills",
        "trading_account_syncs",
        "trading_position_differences",
        "trading_kill_switch",
        "trading_strategy_failures",
        "trading_refused_max_order_size",
    }


async def test_an_orders_lines_say_placed_amended_and_filled_and_a_partial_fill_is_the_fill_line_alone(
    trading: Trading,
) -> None:
    await trading.ready()
    mine = await trading.place("o-1", count=300)
    trading.client.answer("amend_order", AmendResult("o-1", mine.client_order_id, remaining_count=300, fill_count=0))
    await trading.engine.amend(mine, price=4100, count=300, strategy="console")
    await trading.engine.on_private_message(fill_message("o-1", 100, trade_id="t-1"))
    await trading.engine.on_private_message(fill_message("o-1", 200, trade_id="t-2"))

    words = [line[1].split(":")[0] for line in trading.lines if line[1].startswith(("ORDER", "FILL"))]
    assert words == ["ORDER PLACED", "ORDER AMENDED", "FILL", "FILL", "ORDER FILLED"]
