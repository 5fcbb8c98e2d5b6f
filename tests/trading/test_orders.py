"""The order manager against a scripted exchange: answers, lost answers, and messages racing the answers.

Every test also checks the records handed to ``on_change``: one per real change, none for an update that
changes nothing, so the recording and the console see each change once.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from apps.kalshi.portfolio import AmendResult, CancelResult, OrderError, TimeInForce
from apps.trader.core.trading.orders import OrderManager
from apps.trader.core.trading.records import OrderRecord
from apps.trader.core.trading.risk import OrderIntent
from tests.support import eventually
from tests.trading.scripted import (
    ScriptedClient,
    T,
    fill_record,
    held,
    order,
    placement,
    rest_error,
    user_order,
)


class Desk:
    """An OrderManager on a scripted client, with every record it handed on."""

    def __init__(self) -> None:
        self.client = ScriptedClient()
        self.records: list[OrderRecord] = []
        clock = itertools.count(1_000_000)
        self.manager = OrderManager(self.client, on_change=self.records.append, clock_us=lambda: next(clock))

    def statuses(self) -> list[str]:
        return [r.status for r in self.records]

    async def resting(self, order_id: str = "o-1", count: int = 1000, price: int = 4000) -> OrderRecord:
        """An order the exchange answered as resting; the records start empty after it."""
        self.client.answer("create_order", placement(order_id, remaining_count=count))
        record = await self.manager.place(intent(count=count, price=price), strategy="s", reason="test")
        assert record.status == "resting"
        self.records.clear()
        return record


def intent(*, count: int = 1000, price: int = 4000, tif: TimeInForce = "good_till_canceled") -> OrderIntent:
    return OrderIntent(ticker=T, side="bid", yes_price=price, count=count, time_in_force=tif)


@pytest.fixture
def desk() -> Desk:
    return Desk()


async def run_ready_tasks() -> None:
    """Give every task that can run a turn (no time passes: the stand-ins answer without I/O)."""
    for _ in range(20):
        await asyncio.sleep(0)


# ---------------------------------------------------------------------------------------------- creates


async def test_a_create_answered_resting_is_sent_with_its_client_order_id_and_rests(desk: Desk) -> None:
    desk.client.answer("create_order", placement("o-1", remaining_count=1000))

    record = await desk.manager.place(intent(count=1000, price=4000), strategy="quoter", reason="placed by quoter")

    (request,) = desk.client.asked("create_order")
    assert (request.ticker, request.side, request.count, request.price) == (T, "bid", 1000, 4000)
    assert request.client_order_id == record.client_order_id
    assert (record.status, record.order_id, record.fill_count, record.remaining_count) == ("resting", "o-1", 0, 1000)
    assert desk.statuses() == ["submitted", "resting"]
    assert desk.manager.working() == [record]
    assert desk.manager.by_order_id("o-1") == record


async def test_a_create_answered_filled_in_full_is_executed(desk: Desk) -> None:
    desk.client.answer("create_order", placement("o-1", fill_count=1000, remaining_count=0))

    record = await desk.manager.place(intent(count=1000), strategy="s", reason="")

    assert (record.status, record.fill_count, record.remaining_count) == ("executed", 1000, 0)
    assert desk.statuses() == ["submitted", "executed"]
    assert desk.manager.working() == []


async def test_an_ioc_whose_rest_was_not_filled_is_cancelled_with_what_filled(desk: Desk) -> None:
    desk.client.answer("create_order", placement("o-1", fill_count=400, remaining_count=0))

    record = await desk.manager.place(intent(count=1000, tif="immediate_or_cancel"), strategy="s", reason="")

    assert (record.status, record.fill_count, record.remaining_count) == ("canceled", 400, 0)
    assert "6.00 not filled" in record.reason
    assert desk.statuses() == ["submitted", "canceled"]


async def test_a_create_refused_by_the_exchange_is_rejected_with_its_code_and_not_looked_up(desk: Desk) -> None:
    desk.client.answer("create_order", rest_error(400, "insufficient_balance"))

    record = await desk.manager.place(intent(), strategy="s", reason="")

    assert (record.status, record.error_code, record.order_id) == ("rejected", "insufficient_balance", "")
    assert "insufficient_balance" in record.reason
    assert desk.client.asked("find_order_by_client_id") == []
    assert desk.statuses() == ["submitted", "rejected"]


LOST = {
    "rate limited after retries": rest_error(429, "too_many_requests"),
    "5xx after retries": rest_error(503),
    "no answer at all": rest_error(0),
    "4xx after an attempt whose answer was lost": rest_error(400, "invalid_order", after_lost_answer=True),
}


@pytest.mark.parametrize("error", LOST.values(), ids=LOST.keys())
async def test_a_lost_create_is_recovered_by_its_client_order_id(desk: Desk, error: Exception) -> None:
    async def found(client_order_id: str) -> object:
        return order("o-9", client_order_id, status="resting", initial=1000, filled=300, fees=7)

    desk.client.answer("create_order", error)
    desk.client.answer("find_order_by_client_id", found)

    record = await desk.manager.place(intent(count=1000), strategy="s", reason="")

    assert desk.client.asked("find_order_by_client_id") == [record.client_order_id]
    assert (record.status, record.order_id, record.fill_count, record.remaining_count, record.fees) == (
        "resting",
        "o-9",
        300,
        700,
        7,
    )
    assert "lost" in record.reason
    assert desk.manager.by_order_id("o-9") == record
    assert desk.statuses() == ["submitted", "resting"]


async def test_a_lost_create_the_exchange_never_saw_is_rejected_with_the_reason(desk: Desk) -> None:
    desk.client.answer("create_order", rest_error(503))
    desk.client.answer("find_order_by_client_id", None)

    record = await desk.manager.place(intent(), strategy="s", reason="")

    assert record.status == "rejected"
    assert "no such order" in record.reason and "HTTP 503" in record.reason
    assert desk.manager.working() == []


async def test_a_lost_create_whose_lookup_fails_is_unknown_and_still_working(desk: Desk) -> None:
    desk.client.answer("create_order", rest_error(503))
    desk.client.answer("find_order_by_client_id", rest_error(0))

    record = await desk.manager.place(intent(), strategy="s", reason="")

    assert record.status == "unknown"
    assert "reading it back failed" in record.reason
    assert desk.manager.working() == [record]


async def test_an_order_found_missing_that_the_exchange_then_shows_resting_is_working_again(desk: Desk) -> None:
    # The lookup ran before the exchange had taken the create in: a later message proves the order exists,
    # and it must be counted and cancellable, not left resting unseen behind a "rejected" record.
    desk.client.answer("create_order", rest_error(503))
    desk.client.answer("find_order_by_client_id", None)
    record = await desk.manager.place(intent(count=1000), strategy="s", reason="")
    assert record.status == "rejected"

    revived = desk.manager.on_user_order(user_order("o-1", record.client_order_id, status="resting"))

    assert revived is not None
    assert (revived.status, revived.order_id, revived.remaining_count) == ("resting", "o-1", 1000)
    assert desk.manager.working() == [revived]


# ---------------------------------------------------------------------------------------------- races


async def test_a_fill_then_its_user_order_before_the_create_answer_count_once(desk: Desk) -> None:
    async def answer_after_messages(request: object) -> object:
        client_order_id = desk.manager.all()[0].client_order_id
        desk.manager.on_fill(fill_record("o-1", client_order_id, 400, fee=12))
        desk.manager.on_user_order(user_order("o-1", client_order_id, filled=400, maker_fees=12))
        return placement("o-1", fill_count=0, remaining_count=1000)  # the answer was made before the fill

    desk.client.answer("create_order", answer_after_messages)

    record = await desk.manager.place(intent(count=1000), strategy="s", reason="")

    assert (record.status, record.fill_count, record.remaining_count, record.fees) == ("resting", 400, 600, 12)
    # submitted, the fill, the user_order's "resting"; the answer says nothing new
    assert desk.statuses() == ["submitted", "submitted", "resting"]


async def test_a_user_order_then_its_fill_before_the_create_answer_count_once(desk: Desk) -> None:
    async def answer_after_messages(request: object) -> object:
        client_order_id = desk.manager.all()[0].client_order_id
        desk.manager.on_user_order(user_order("o-1", client_order_id, filled=400, maker_fees=12))
        desk.manager.on_fill(fill_record("o-1", client_order_id, 400, fee=12))
        return placement("o-1", fill_count=0, remaining_count=1000)

    desk.client.answer("create_order", answer_after_messages)

    record = await desk.manager.place(intent(count=1000), strategy="s", reason="")

    assert (record.status, record.fill_count, record.remaining_count, record.fees) == ("resting", 400, 600, 12)
    assert desk.statuses() == ["submitted", "resting"]


async def test_fees_add_up_over_fills_and_user_orders_in_any_order(desk: Desk) -> None:
    record = await desk.resting(count=1000)
    coid = record.client_order_id

    desk.manager.on_fill(fill_record("o-1", coid, 200, fee=5))
    desk.manager.on_user_order(user_order("o-1", coid, filled=500, maker_fees=5, taker_fees=8))  # two fills in
    desk.manager.on_fill(fill_record("o-1", coid, 300, fee=8))  # the second, late
    final = desk.manager.on_fill(fill_record("o-1", coid, 500, fee=11))

    assert final is not None
    assert (final.status, final.fill_count, final.remaining_count, final.fees) == ("executed", 1000, 0, 24)


async def test_a_complete_fill_before_the_answer_is_not_taken_back_by_the_older_answer(desk: Desk) -> None:
    async def answer_after_messages(request: object) -> object:
        client_order_id = desk.manager.all()[0].client_order_id
        desk.manager.on_user_order(user_order("o-1", client_order_id, status="executed", filled=1000, maker_fees=30))
        desk.manager.on_fill(fill_record("o-1", client_order_id, 1000, fee=30))
        return placement("o-1", fill_count=0, remaining_count=1000)

    desk.client.answer("create_order", answer_after_messages)

    record = await desk.manager.place(intent(count=1000), strategy="s", reason="")

    assert (record.status, record.fill_count, record.remaining_count, record.fees) == ("executed", 1000, 0, 30)
    assert desk.statuses() == ["submitted", "executed"]
    assert desk.manager.working() == []


async def test_an_older_user_order_does_not_take_an_order_back(desk: Desk) -> None:
    record = await desk.resting(count=1000)
    coid = record.client_order_id
    desk.manager.on_user_order(user_order("o-1", coid, status="canceled", filled=400))

    desk.manager.on_user_order(user_order("o-1", coid, status="resting", filled=400))
    desk.manager.on_user_order(user_order("o-1", coid, status="resting", filled=200))

    now = desk.manager.get(coid)
    assert now is not None
    assert (now.status, now.fill_count, now.remaining_count) == ("canceled", 400, 0)
    assert desk.statuses() == ["canceled"]


async def test_the_same_news_twice_is_recorded_once(desk: Desk) -> None:
    record = await desk.resting(count=1000)
    message = user_order("o-1", record.client_order_id, filled=300, maker_fees=4)

    desk.manager.on_user_order(message)
    desk.manager.on_user_order(message)
    desk.manager.on_resting([order("o-1", record.client_order_id, filled=300, fees=4)])

    assert desk.statuses() == ["resting"]


async def test_news_of_another_traders_order_is_not_taken_in(desk: Desk) -> None:
    await desk.resting()

    assert desk.manager.on_user_order(user_order("o-x", "someone-else")) is None
    assert desk.manager.on_fill(fill_record("o-x", "someone-else", 100)) is None
    assert desk.records == []


# ---------------------------------------------------------------------------------------------- amends


async def test_an_accepted_amend_moves_the_order(desk: Desk) -> None:
    record = await desk.resting(count=1000, price=4000)
    desk.client.answer("amend_order", AmendResult("o-1", None, remaining_count=1500, fill_count=0))

    amended = await desk.manager.amend(record, price=4200, count=1500, reason="follow the mid")

    (request,) = desk.client.asked("amend_order")
    assert (request.order_id, request.price, request.count, request.side) == ("o-1", 4200, 1500, "bid")
    assert (amended.status, amended.yes_price, amended.initial_count, amended.remaining_count) == (
        "resting",
        4200,
        1500,
        1500,
    )
    assert "follow the mid" in amended.reason
    assert desk.statuses() == ["resting"]


async def test_an_amend_that_fills_counts_what_filled_before_it(desk: Desk) -> None:
    # The answer's fill_count is what the amend itself filled; remaining_count is after the match.
    record = await desk.resting(count=1000, price=4000)
    desk.manager.on_fill(fill_record("o-1", record.client_order_id, 400, fee=3))
    desk.client.answer("amend_order", AmendResult("o-1", None, remaining_count=300, fill_count=300))

    amended = await desk.manager.amend(record, price=4500, count=1000, reason="")

    assert (amended.fill_count, amended.remaining_count, amended.initial_count) == (700, 300, 1000)


async def test_a_fill_while_the_amend_was_in_flight_is_kept(desk: Desk) -> None:
    record = await desk.resting(count=1000, price=4000)

    async def fill_first(request: object) -> AmendResult:
        desk.manager.on_fill(fill_record("o-1", record.client_order_id, 200))
        return AmendResult("o-1", None, remaining_count=800, fill_count=0)  # made before the fill

    desk.client.answer("amend_order", fill_first)

    amended = await desk.manager.amend(record, price=4100, count=1000, reason="")

    assert (amended.fill_count, amended.remaining_count) == (200, 800)


async def test_an_amend_refused_outright_leaves_the_order_as_it_was_with_the_reason(desk: Desk) -> None:
    record = await desk.resting(count=1000, price=4000)
    desk.client.answer("amend_order", rest_error(400, "invalid_order"))

    after = await desk.manager.amend(record, price=9000, count=1000, reason="")

    assert (after.status, after.yes_price, after.initial_count, after.remaining_count) == ("resting", 4000, 1000, 1000)
    assert "amend rejected" in after.reason and after.error_code == "invalid_order"
    assert desk.client.asked("get_order") == []
    assert desk.manager.working() == [after]
    assert len(desk.records) == 1


async def test_an_amend_whose_answer_was_lost_is_read_back(desk: Desk) -> None:
    record = await desk.resting(count=1000, price=4000)
    desk.client.answer("amend_order", rest_error(503))
    desk.client.answer("get_order", order("o-1", record.client_order_id, price=4200, initial=1000))

    after = await desk.manager.amend(record, price=4200, count=1000, reason="")

    assert desk.client.asked("get_order") == ["o-1"]
    assert (after.status, after.yes_price) == ("resting", 4200)
    assert "lost" in after.reason


async def test_an_amend_the_client_recovered_is_read_back(desk: Desk) -> None:
    record = await desk.resting(count=1000, price=4000)
    desk.client.answer("amend_order", AmendResult("o-1", None, remaining_count=1000, recovered=True))
    desk.client.answer("get_order", order("o-1", record.client_order_id, price=4300, initial=1000))

    after = await desk.manager.amend(record, price=4300, count=1000, reason="")

    assert after.yes_price == 4300 and "recovered" in after.reason


async def test_an_amend_of_an_order_not_yet_answered_does_nothing(desk: Desk) -> None:
    answer, release, arrived = held(placement("o-1", remaining_count=1000))
    desk.client.answer("create_order", answer)
    placing = asyncio.create_task(desk.manager.place(intent(), strategy="s", reason=""))
    await eventually(lambda: bool(arrived), what="the create to reach the exchange")
    submitted = desk.manager.all()[0]

    unchanged = await desk.manager.amend(submitted, price=4500, count=1000, reason="")

    assert unchanged == submitted
    release()
    await placing
    assert desk.client.asked("amend_order") == []


async def test_an_amend_of_a_final_order_does_nothing(desk: Desk) -> None:
    record = await desk.resting()
    done = desk.manager.on_user_order(user_order("o-1", record.client_order_id, status="canceled"))
    desk.records.clear()

    unchanged = await desk.manager.amend(record, price=4500, count=1000, reason="")

    assert unchanged == done
    assert desk.client.asked("amend_order") == []
    assert desk.records == []


# ---------------------------------------------------------------------------------------------- cancels


async def test_an_accepted_cancel_ends_the_order(desk: Desk) -> None:
    record = await desk.resting()
    desk.client.answer("cancel_order", CancelResult("o-1", None, reduced_by=1000))

    after = await desk.manager.cancel(record, reason="by s")

    assert desk.client.asked("cancel_order") == ["o-1"]
    assert (after.status, after.remaining_count) == ("canceled", 0)
    assert after.reason == "cancelled: by s"
    assert desk.manager.working() == []
    assert desk.statuses() == ["canceled"]


async def test_a_cancel_answered_404_reads_the_order_back_and_finds_it_filled(desk: Desk) -> None:
    record = await desk.resting(count=1000)
    desk.client.answer("cancel_order", rest_error(404, "not_found"))
    desk.client.answer("get_order", order("o-1", record.client_order_id, status="executed", filled=1000, fees=20))

    after = await desk.manager.cancel(record, reason="by s")

    assert (after.status, after.fill_count, after.remaining_count, after.fees) == ("executed", 1000, 0, 20)
    assert desk.statuses() == ["executed"]


async def test_a_cancel_the_batch_refused_reads_the_order_back(desk: Desk) -> None:
    record = await desk.resting(count=1000)
    desk.client.answer("cancel_order", CancelResult("o-1", None, 0, error=OrderError("not_found")))
    desk.client.answer("get_order", order("o-1", record.client_order_id, status="canceled", filled=100))

    after = await desk.manager.cancel(record, reason="by s")

    assert (after.status, after.fill_count) == ("canceled", 100)


@pytest.mark.parametrize("error", [rest_error(503), rest_error(0), rest_error(429), rest_error(401, "unauthorized")])
async def test_a_failed_cancel_leaves_the_order_working_with_the_failure_as_its_reason(
    desk: Desk, error: Exception
) -> None:
    record = await desk.resting()
    desk.client.answer("cancel_order", error)

    after = await desk.manager.cancel(record, reason="kill switch")

    assert after.status == "resting" and after.remaining_count == 1000
    assert after.reason.startswith("cancel failed:")
    assert desk.manager.working() == [after]
    assert len(desk.records) == 1


async def test_a_cancel_of_a_final_order_sends_nothing(desk: Desk) -> None:
    desk.client.answer("create_order", placement("o-1", fill_count=1000, remaining_count=0))
    record = await desk.manager.place(intent(), strategy="s", reason="")

    after = await desk.manager.cancel(record, reason="late")

    assert after.status == "executed"
    assert desk.client.asked("cancel_order") == []


async def test_a_cancel_while_the_create_is_in_flight_waits_for_its_answer(desk: Desk) -> None:
    # Read back before the exchange had the create, the order would look never placed and be left resting.
    answer, release, arrived = held(placement("o-1", remaining_count=1000))
    desk.client.answer("create_order", answer)
    desk.client.answer("find_order_by_client_id", None)  # what a lookup would say now
    desk.client.answer("cancel_order", CancelResult("o-1", None, reduced_by=1000))
    placing = asyncio.create_task(desk.manager.place(intent(), strategy="s", reason=""))
    await eventually(lambda: bool(arrived), what="the create to reach the exchange")

    cancelling = asyncio.create_task(desk.manager.cancel(desk.manager.all()[0], reason="kill switch"))
    await run_ready_tasks()
    assert not cancelling.done(), "the cancel did not wait for the create's answer"
    release()
    placed, cancelled = await placing, await cancelling

    assert placed.order_id == "o-1"
    assert desk.client.asked("cancel_order") == ["o-1"]
    assert cancelled.status == "canceled"
    assert desk.manager.working() == []


async def test_a_cancel_of_an_order_whose_create_was_lost_finds_it_first(desk: Desk) -> None:
    desk.client.answer("create_order", rest_error(503))
    desk.client.answer("find_order_by_client_id", rest_error(0))
    unknown = await desk.manager.place(intent(), strategy="s", reason="")
    assert unknown.status == "unknown" and not unknown.order_id

    async def found(client_order_id: str) -> object:
        return order("o-7", client_order_id)

    desk.client.answer("find_order_by_client_id", found)
    desk.client.answer("cancel_order", CancelResult("o-7", None, reduced_by=1000))

    after = await desk.manager.cancel(unknown, reason="kill switch")

    assert desk.client.asked("cancel_order") == ["o-7"]
    assert after.status == "canceled"


# ---------------------------------------------------------------------------------------------- snapshots


async def test_a_snapshot_updates_this_traders_orders_and_returns_the_strangers(desk: Desk) -> None:
    mine = await desk.resting("o-1")
    other = await desk.resting("o-2")
    stranger = order("o-x", "not-mine")

    changed, strangers = desk.manager.on_resting(
        [order("o-1", mine.client_order_id, filled=300, fees=2), order("o-2", other.client_order_id), stranger]
    )

    assert strangers == [stranger]
    assert [(c.order_id, c.fill_count, c.remaining_count, c.fees) for c in changed] == [("o-1", 300, 700, 2)]
    assert len(desk.records) == 1


async def test_settle_missing_reads_back_the_orders_no_longer_resting(desk: Desk) -> None:
    await desk.resting("o-1")
    gone = await desk.resting("o-2")
    desk.client.answer("get_order", order("o-2", gone.client_order_id, status="executed", filled=1000))

    settled = await desk.manager.settle_missing({"o-1"}, reason="not resting on the exchange any more")

    assert desk.client.asked("get_order") == ["o-2"]
    assert [(s.order_id, s.status) for s in settled] == [("o-2", "executed")]
    assert [o.order_id for o in desk.manager.working()] == ["o-1"]


async def test_settle_missing_leaves_an_order_whose_create_is_in_flight_to_its_answer(desk: Desk) -> None:
    answer, release, arrived = held(placement("o-1", remaining_count=1000))
    desk.client.answer("create_order", answer)
    placing = asyncio.create_task(desk.manager.place(intent(), strategy="s", reason=""))
    await eventually(lambda: bool(arrived), what="the create to reach the exchange")

    settled = await desk.manager.settle_missing(set(), reason="not resting on the exchange any more")

    assert settled == []
    assert desk.client.asked("find_order_by_client_id") == []
    release()
    assert (await placing).status == "resting"


async def test_settle_missing_with_a_failing_read_leaves_the_order_unknown(desk: Desk) -> None:
    await desk.resting("o-1")
    desk.client.answer("get_order", rest_error(503))

    (settled,) = await desk.manager.settle_missing(set(), reason="not resting")

    assert settled.status == "unknown"
    assert desk.manager.working() == [settled]


async def test_a_refused_order_is_recorded_final_with_its_rule(desk: Desk) -> None:
    record = desk.manager.refuse(intent(), strategy="s", rule="max_position", message="max_position: too much")

    assert (record.status, record.error_code, record.remaining_count, record.order_id) == (
        "refused",
        "max_position",
        0,
        "",
    )
    assert desk.records == [record]
    assert desk.client.calls == []


async def test_an_older_view_of_a_working_order_does_not_take_its_fills_back(desk: Desk) -> None:
    record = await desk.resting(count=1000)
    coid = record.client_order_id
    desk.manager.on_user_order(user_order("o-1", coid, filled=400, maker_fees=9))

    desk.manager.on_user_order(user_order("o-1", coid, filled=200, maker_fees=4))  # sent earlier, came later
    desk.manager.on_resting([order("o-1", coid, filled=100)])  # a snapshot read before the fills

    now = desk.manager.get(coid)
    assert now is not None
    assert (now.status, now.fill_count, now.remaining_count, now.fees) == ("resting", 400, 600, 9)
    assert desk.statuses() == ["resting"]
