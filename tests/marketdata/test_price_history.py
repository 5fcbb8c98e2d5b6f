"""A market's best bid and ask over a session and the session's message rate, rebuilt from the recording."""

from __future__ import annotations

import asyncio

import pytest

from apps.marketdata.selectors import message_rates, price_history
from tests.marketdata.conftest import at, delta, new_session, record_script, recorded_session, snapshot

pytestmark = pytest.mark.django_db(transaction=True)


def ms(offset: int) -> int:
    return int(at(offset).timestamp() * 1000)


def test_it_gives_one_point_per_change_of_the_top_through_resyncs_and_a_new_subscription() -> None:
    session = recorded_session()

    history = price_history(session_id=session.pk, market_ticker="KXA")

    assert history["points"] == [
        [ms(10), "0.4200", "0.4500"],  # the first snapshot: ask is 1 - the best NO bid 0.5500
        [ms(30), "0.4300", "0.4500"],  # a better bid; the removed 0.4200 level and the resync change nothing
        [ms(100), "0.4300", "0.4400"],  # a NO bid at 0.5600
        [ms(120), "0.4400", None],  # sid 2's snapshot has no NO side
        [ms(150), None, None],
    ]
    assert (history["from_start"], history["to_end"]) == (True, True)


def test_it_reads_only_the_newest_deltas_from_the_first_snapshot_among_them() -> None:
    session = recorded_session()

    history = price_history(session_id=session.pk, market_ticker="KXA", deltas=2)

    assert history["points"] == [[ms(120), "0.4400", None], [ms(150), None, None]]
    assert (history["from_start"], history["to_end"]) == (False, True)


def test_without_a_snapshot_among_the_newest_deltas_it_reads_forwards_from_the_latest_snapshot() -> None:
    session = new_session(["KXA"])
    asyncio.run(
        record_script(
            session.pk,
            [
                ("message", snapshot("KXA", 1, 1, yes=[(4100, 300)], no=[(5500, 2000)])),
                ("message", delta("KXA", 1, 2, "yes", 4200, 100)),
                ("message", delta("KXA", 1, 3, "yes", 4300, 100)),
                ("message", delta("KXA", 1, 4, "yes", 4400, 100)),
            ],
        )
    )

    history = price_history(session_id=session.pk, market_ticker="KXA", deltas=2)

    assert history["points"] == [
        [ms(10), "0.4100", "0.4500"],
        [ms(20), "0.4200", "0.4500"],
        [ms(30), "0.4300", "0.4500"],
    ]
    assert (history["from_start"], history["to_end"]) == (True, False)
    assert price_history(session_id=session.pk, market_ticker="KXA", deltas=3)["to_end"] is True


def test_it_thins_long_histories_to_the_points_asked_for_keeping_the_last() -> None:
    session = recorded_session()

    points = price_history(session_id=session.pk, market_ticker="KXA", points=2)["points"]

    assert points == [[ms(10), "0.4200", "0.4500"], [ms(150), None, None]]


def test_a_market_never_recorded_has_no_points() -> None:
    session = recorded_session()

    assert price_history(session_id=session.pk, market_ticker="KXNOPE")["points"] == []


def test_message_rates_count_recorded_messages_between_sampled_positions() -> None:
    session = recorded_session()

    rates = message_rates(session_id=session.pk, samples=3, window=0)

    # 13 numbered rows, 10 ms apart; samples at positions 1, 7 and 13 (all messages, no gap among them).
    assert rates == [[ms(70), 100.0], [ms(150), 75.0]]
    # A rate spans at least the window: the 140 ms from position 1 to 13 make one.
    assert message_rates(session_id=session.pk, samples=3, window=0.1) == [[ms(150), round(12 / 0.14, 1)]]
    assert message_rates(session_id=session.pk, samples=3) == []


def test_a_delta_the_book_cannot_take_ends_the_history_there() -> None:
    session = new_session(["KXA"])
    script = [
        ("message", snapshot("KXA", 1, 1, yes=[(4100, 300)], no=[(5500, 2000)])),
        ("message", delta("KXA", 1, 2, "yes", 4100, -500)),  # more than rests there
        ("message", delta("KXA", 1, 3, "yes", 4200, 100)),
    ]
    asyncio.run(record_script(session.pk, script))

    history = price_history(session_id=session.pk, market_ticker="KXA")

    assert history["points"] == [[ms(10), "0.4100", "0.4500"]]
    assert history["to_end"] is False
