"""The recording tap: messages, gaps, losses and heals reach the recorder in the order the feed produced them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from apps.kalshi.clock import epoch_us
from apps.kalshi.feed import FeedEvent, FeedEventKind, MarketMessage
from apps.trader.core.recordingtap import RecordingTap
from tests.trader.builders import MARKETS, ListRecorder, delta, snapshot

FED, CPI, BTC = MARKETS
T0 = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


Deliver = Callable[[RecordingTap, MarketMessage, int], Awaitable[None]]


async def awaited(tap: RecordingTap, message: MarketMessage, received_us: int) -> None:
    await tap.on_market_message(message, received_us)


async def taken(tap: RecordingTap, message: MarketMessage, received_us: int) -> None:
    """The coordinator's way: ``take``, awaiting only what it returns."""
    pending = tap.take(message, received_us)
    if pending is not None:
        await pending


@pytest.fixture(params=[awaited, taken], ids=["awaited", "taken"])
def deliver(request: pytest.FixtureRequest) -> Deliver:
    """Every test runs with each message awaited whole, and handed over the hot path's way."""
    return request.param  # type: ignore[no-any-return]


def tap_for(recorder: ListRecorder, markets: list[str]) -> RecordingTap:
    tap = RecordingTap(recorder, lambda: markets, lambda: T0)
    tap.session_id = 7
    return tap


async def test_a_seq_gap_is_recorded_in_order_and_healed_by_the_last_fresh_snapshot(deliver: Deliver) -> None:
    recorder = ListRecorder()
    tap = tap_for(recorder, [FED, CPI])
    await deliver(tap, snapshot(FED, 1, 1, yes=[("0.4200", "1.00")], no=[]), epoch_us(T0))
    await deliver(tap, snapshot(CPI, 1, 2, yes=[("0.1000", "1.00")], no=[]), epoch_us(T0))
    await tap.on_feed_event(FeedEvent(FeedEventKind.GAP, sid=1, expected_seq=3, received_seq=5, markets=(FED, CPI)))
    await deliver(tap, snapshot(FED, 1, 6, yes=[("0.4300", "1.00")], no=[]), epoch_us(T0))
    assert tap.awaiting_snapshot == {CPI}
    await deliver(tap, snapshot(CPI, 1, 7, yes=[("0.1100", "1.00")], no=[]), epoch_us(T0))
    await deliver(tap, delta(CPI, 1, 8, "0.1100", "1.00"), epoch_us(T0))

    assert recorder.rows == [
        ("message", FED, 1, 1),
        ("message", CPI, 1, 2),
        ("gap", "seq", 1, 3, 5, (FED, CPI)),
        ("message", FED, 1, 6),
        ("message", CPI, 1, 7),
        ("healed",),
        ("message", CPI, 1, 8),
    ]


async def test_a_lost_connection_is_recorded_once_and_healed_when_the_feed_is_live_again(deliver: Deliver) -> None:
    recorder = ListRecorder()
    tap = tap_for(recorder, [FED])
    await deliver(tap, snapshot(FED, 1, 1, yes=[("0.4200", "1.00")], no=[]), epoch_us(T0))
    await deliver(tap, delta(FED, 1, 2, "0.4200", "1.00"), epoch_us(T0))
    lost = FeedEvent(FeedEventKind.DISCONNECTED, reason="socket closed")
    await tap.on_feed_event(lost)
    await tap.on_feed_event(lost)  # a failed reconnect lost nothing new
    await tap.on_feed_event(FeedEvent(FeedEventKind.SYNCED, markets=(FED,)))

    assert recorder.rows[2:] == [("gap", "disconnect", 1, 3, None, (FED,)), ("healed",)]


async def test_a_new_subscription_without_a_recorded_gap_records_a_resubscribe(deliver: Deliver) -> None:
    recorder = ListRecorder()
    tap = tap_for(recorder, [FED])
    await deliver(tap, snapshot(FED, 1, 1, yes=[("0.4200", "1.00")], no=[]), epoch_us(T0))
    await deliver(tap, delta(FED, 1, 2, "0.4200", "1.00"), epoch_us(T0))
    await deliver(tap, snapshot(FED, 2, 1, yes=[("0.4200", "1.00")], no=[]), epoch_us(T0))

    assert recorder.rows[2:] == [
        ("gap", "resubscribe", 1, 3, None, (FED,)),
        ("message", FED, 2, 1),
        ("healed",),
    ]


async def test_the_loss_of_a_replaced_client_comes_before_the_next_clients_rows(deliver: Deliver) -> None:
    recorder = ListRecorder()
    tap = tap_for(recorder, [FED])
    await deliver(tap, snapshot(FED, 1, 1, yes=[("0.4200", "1.00")], no=[]), epoch_us(T0))
    recorder.writing.clear()
    tap.feed_replaced()  # returns at once, though the recorder waits
    tap.feed_replaced()  # the same loss, not twice
    recorder.writing.set()
    await deliver(tap, snapshot(FED, 2, 1, yes=[("0.4200", "1.00")], no=[]), epoch_us(T0))

    assert recorder.rows[1:] == [("gap", "disconnect", 1, 2, None, (FED,)), ("message", FED, 2, 1), ("healed",)]


async def test_without_a_recorder_or_a_session_nothing_is_recorded(deliver: Deliver) -> None:
    recorder = ListRecorder()
    tap = RecordingTap(recorder, lambda: [FED], lambda: T0)  # no session yet
    await deliver(tap, snapshot(FED, 1, 1, yes=[], no=[]), epoch_us(T0))
    await tap.on_feed_event(FeedEvent(FeedEventKind.DISCONNECTED))
    assert recorder.rows == []
    await deliver(RecordingTap(None, lambda: [FED], lambda: T0), snapshot(FED, 1, 1, yes=[], no=[]), epoch_us(T0))
