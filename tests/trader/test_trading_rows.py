"""The trader's orders, fills and positions as rows: each order as it stands and every change of it with its
reason, fills linked to their orders, positions in time; a batch written twice adds nothing twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
from django.db import OperationalError

from apps.trader.core.sessionwriter import SessionWriter
from apps.trader.core.trading.records import OrderState
from apps.trader.models import Fill, Order, OrderChange, PositionSnapshot, TradingSession
from apps.trader.services import DjangoSessionStore, session_start, trading_records_write, unwritten_load_all
from tests.support import eventually
from tests.trader.trading_records import a_trading_morning, changed, fill, placed, position

pytestmark = pytest.mark.django_db

AT_0 = datetime(2026, 12, 2, 14, 30, 5, 123456, tzinfo=UTC)


def new_session() -> TradingSession:
    return session_start(environment="sim", markets=["KXA"], exchange_url="ws://127.0.0.1:1/trade-api/ws/v2")


def rows(session: TradingSession) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the session's trading rows say, to compare two writes."""
    return {
        "orders": list(
            Order.objects.filter(session=session)
            .order_by("client_order_id")
            .values_list(
                "client_order_id", "exchange_order_id", "status", "fill_count", "remaining_count", "fees", "updated_at"
            )
        ),
        "changes": list(
            OrderChange.objects.filter(order__session=session)
            .order_by("id")
            .values_list("order__client_order_id", "status", "reason", "at")
        ),
        "fills": list(Fill.objects.filter(session=session).values_list("trade_id", "order__client_order_id")),
        "positions": list(PositionSnapshot.objects.filter(session=session).values_list("ticker", "position", "at")),
    }


def test_the_order_states_are_the_records_states() -> None:
    assert {value for value, _ in Order.Status.choices} == set(get_args(OrderState))


def test_a_batch_of_mixed_records_becomes_orders_their_changes_fills_and_positions() -> None:
    session = new_session()
    trading_records_write(session_id=session.pk, records=a_trading_morning())

    bid = Order.objects.get(session=session, client_order_id="c-1")
    assert (bid.exchange_order_id, bid.ticker, bid.side, bid.yes_price, bid.time_in_force) == (
        "ex-1",
        "KXA",
        "bid",
        4500,
        "good_till_canceled",
    )
    assert (bid.status, bid.initial_count, bid.fill_count, bid.remaining_count, bid.fees) == (
        "canceled",
        500,
        200,
        0,
        3_150,
    )
    assert (bid.strategy, bid.created_at, bid.updated_at) == ("quoter", AT_0, AT_0 + _ms(1500))
    assert list(bid.changes.values_list("status", "fill_count", "reason")) == [
        ("submitted", 0, "placed by quoter: bid 0.0200 under the mid"),
        ("resting", 0, "resting on the exchange"),
        ("resting", 200, "filled 2.00 at 0.4500"),
        ("canceled", 200, "cancelled: kill switch"),
    ]
    refused = Order.objects.get(session=session, client_order_id="c-2")
    assert (refused.status, refused.error_code, refused.exchange_order_id) == ("refused", "max_position", "")
    assert list(refused.changes.values_list("error_code", "reason")) == [
        ("max_position", "refused by max_position: 5.00 over the limit of 10.00")
    ]

    [traded] = Fill.objects.filter(session=session)
    assert traded.order == bid
    assert (traded.trade_id, traded.exchange_order_id, traded.client_order_id, traded.side) == (
        "t-1",
        "ex-1",
        "c-1",
        "bid",
    )
    assert (traded.yes_price, traded.count, traded.fee, traded.is_taker, traded.post_position) == (
        4500,
        200,
        3_150,
        False,
        200,
    )
    assert traded.traded_at == AT_0.replace(microsecond=123000) + _ms(900)  # the exchange's time, to the ms
    assert traded.received_at == AT_0 + _ms(900) + _us(850)

    [held] = PositionSnapshot.objects.filter(session=session)
    assert (held.ticker, held.position, held.cost, held.realized_pnl, held.fees_paid) == ("KXA", 200, 900_000, 0, 3_150)
    assert (held.mark_price, held.unrealized_pnl, held.at) == (4550, 10_000, AT_0 + _ms(900))


def test_a_batch_written_twice_adds_nothing_twice() -> None:
    session = new_session()
    batch = a_trading_morning()
    trading_records_write(session_id=session.pk, records=batch)
    once = rows(session)
    trading_records_write(session_id=session.pk, records=batch)
    assert rows(session) == once
    assert (len(once["orders"]), len(once["changes"]), len(once["fills"]), len(once["positions"])) == (2, 5, 1, 1)


def test_an_order_keeps_its_latest_state_when_an_older_batch_is_written_again() -> None:
    session = new_session()
    bid = placed("c-1")
    resting = changed(bid, at_ms=40, reason="resting on the exchange", status="resting", order_id="ex-1")
    amend_refused = changed(
        resting, at_ms=70, reason="amend refused by price_band", order_id="", error_code="price_band"
    )
    executed = changed(
        resting, at_ms=80, reason="filled 5.00 at 0.4500", status="executed", fill_count=500, remaining_count=0
    )
    trading_records_write(session_id=session.pk, records=[bid, resting])
    trading_records_write(session_id=session.pk, records=[amend_refused, executed])
    trading_records_write(session_id=session.pk, records=[bid, resting])

    order = Order.objects.get(session=session)
    assert (order.status, order.fill_count, order.remaining_count) == ("executed", 500, 0)
    assert order.exchange_order_id == "ex-1"  # a later record without the exchange's id does not forget it
    assert (order.created_at, order.updated_at) == (AT_0, AT_0 + _ms(80))
    assert list(order.changes.values_list("status", flat=True)) == ["submitted", "resting", "resting", "executed"]


def test_a_fill_written_before_its_order_is_linked_when_the_order_is() -> None:
    session = new_session()
    resting = placed("c-9", status="resting", order_id="ex-9")
    trading_records_write(session_id=session.pk, records=[fill("t-9", order=resting, client_order_id="")])
    assert Fill.objects.get(trade_id="t-9").order is None
    trading_records_write(session_id=session.pk, records=[resting])
    assert Fill.objects.get(trade_id="t-9").order == Order.objects.get(client_order_id="c-9")


def test_a_fill_of_an_order_the_trader_never_recorded_has_no_order() -> None:
    session = new_session()
    trading_records_write(session_id=session.pk, records=[placed("c-1"), fill("t-1", order_id="ex-other")])
    assert Fill.objects.get(trade_id="t-1").order is None


def test_the_position_of_a_market_at_one_instant_is_the_last_written() -> None:
    session = new_session()
    big = 3_000_000_000_000  # three million dollars in micro-dollars: beyond 32 bits, exact
    trading_records_write(
        session_id=session.pk,
        records=[position(at_ms=5, position=100), position(at_ms=5, position=300, cost=big), position("KXB", at_ms=5)],
    )
    trading_records_write(session_id=session.pk, records=[position(at_ms=5, position=400, mark_price=None)])
    snapshots = {row.ticker: row for row in PositionSnapshot.objects.filter(session=session)}
    assert (snapshots["KXA"].position, snapshots["KXA"].cost, snapshots["KXA"].mark_price) == (400, 900_000, None)
    trading_records_write(session_id=session.pk, records=[position(at_ms=6, cost=big)])
    assert PositionSnapshot.objects.filter(session=session).order_by("-at", "-id").first().cost == big  # type: ignore[union-attr]
    assert PositionSnapshot.objects.filter(session=session).count() == 3


class StoreThatFails(DjangoSessionStore):
    """The real store, except that its trading writes fail while ``failing``."""

    def __init__(self) -> None:
        super().__init__(own_thread=False)
        self.failing = True

    async def trading_records(self, **kwargs: Any) -> None:
        if self.failing:
            raise OperationalError("connection refused")
        await super().trading_records(**kwargs)


@pytest.mark.django_db(transaction=True)
async def test_records_a_shutdown_could_not_write_are_written_at_the_next_start(tmp_path: Path) -> None:
    session = await asyncio.to_thread(new_session)
    store = StoreThatFails()
    writer = SessionWriter(store, retry_interval=60.0)
    writer.start(session.pk)
    batch = a_trading_morning()
    for record in batch:
        writer.trading(record)
    await eventually(lambda: writer.status()["status"] == "unreachable", seconds=5)
    assert writer.pending == len(batch)
    saved = writer.spill(tmp_path)
    await writer.close()
    assert saved is not None

    [line] = await asyncio.to_thread(unwritten_load_all, directory=tmp_path)
    assert line == (
        f"{saved.name}: session {session.pk}: wrote 0 transition(s), 7 trading record(s) and its closing, "
        "saved at shutdown"
    )
    assert not saved.exists()
    written = await asyncio.to_thread(rows, session)
    assert [change[1] for change in written["changes"]] == ["submitted", "resting", "refused", "resting", "canceled"]
    assert written["fills"] == [("t-1", "c-1")]

    # The same file written again (say the first load's answer was lost) adds nothing.
    again = writer.spill(tmp_path)
    assert again is not None
    await asyncio.to_thread(unwritten_load_all, directory=tmp_path)
    assert await asyncio.to_thread(rows, session) == written


def _ms(milliseconds: int) -> timedelta:
    return timedelta(milliseconds=milliseconds)


def _us(microseconds: int) -> timedelta:
    return timedelta(microseconds=microseconds)
