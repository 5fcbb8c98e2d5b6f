"""Book publishing: one ``orderbooks`` event per tick with only the changed books, bounded, oldest change first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from apps.kalshi.clock import epoch_us
from apps.trader.core.bookpublisher import BookPublisher, ChangedMarkets
from apps.trader.core.eventbus import EventBus
from tests.support import eventually
from tests.trader.builders import StandInClient, StandInClients, delta, snapshot
from tests.trader.conftest import EventLog

T0 = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


async def a_publisher(bus: EventBus, markets: list[str], per_tick: int = 1000) -> tuple[BookPublisher, StandInClient]:
    holder: list[StandInClient] = []

    def current() -> StandInClient | None:
        return holder[0] if holder else None

    publisher = BookPublisher(bus, current, per_tick=per_tick)
    publisher.session_id = 12

    class Listener:
        async def on_feed_event(self, event: Any) -> None: ...

        async def on_market_message(self, message: Any, book: Any) -> None:
            ts_ms = getattr(message, "ts_ms", None)
            publisher.book_changed(message.market_ticker, epoch_us(T0 + timedelta(seconds=message.seq)), ts_ms)

    holder.append(StandInClients()(Listener(), markets))
    return publisher, holder[0]


async def published(log: EventLog, events: int) -> list[dict[str, Any]]:
    await eventually(lambda: len(log.of("orderbooks")) >= events)
    return log.of("orderbooks")


async def test_a_tick_publishes_only_the_changed_books_as_one_event(bus: EventBus) -> None:
    log = EventLog()
    bus.subscribe("log", log)
    publisher, client = await a_publisher(bus, ["A", "B", "C"])
    for ticker in ("A", "B", "C"):
        await client.feed(snapshot(ticker, 1, 1, yes=[("0.4200", "12.50")], no=[("0.5600", "3.00")]))
    assert publisher.publish() == 3
    await client.feed(delta("B", 1, 2, "0.4300", "1.00", ts_ms=1_764_561_600_123))
    await client.feed(delta("B", 1, 3, "0.4300", "1.00", ts_ms=1_764_561_600_456))
    assert publisher.publish() == 1
    assert publisher.publish() == 0  # nothing changed: no event

    first, second = await published(log, 2)
    assert first["session_id"] == 12
    assert [book["market_ticker"] for book in first["books"]] == ["A", "B", "C"]
    assert first["books"][0] == {
        "market_ticker": "A",
        "sid": 1,
        "seq": 1,
        "yes_bid": {"price": "0.4200", "size": "12.50"},
        "yes_ask": {"price": "0.4400", "size": "3.00"},
        "spread": "0.0200",
        "stale": False,
        "updated_at": (T0 + timedelta(seconds=1)).isoformat(),
        "ts_ms": None,  # a snapshot carries no exchange time
        "yes_bids": [{"price": "0.4200", "size": "12.50"}],
        "yes_asks": [{"price": "0.4400", "size": "3.00"}],
    }
    (book,) = second["books"]
    assert (book["market_ticker"], book["seq"], book["ts_ms"]) == ("B", 3, 1_764_561_600_456)
    assert book["yes_bid"] == {"price": "0.4300", "size": "2.00"}
    assert len(log.of("orderbooks")) == 2


async def test_a_tick_is_bounded_and_the_rest_wait_oldest_first(bus: EventBus) -> None:
    log = EventLog()
    bus.subscribe("log", log)
    publisher, client = await a_publisher(bus, [f"M{n}" for n in range(5)], per_tick=2)
    for n in range(5):
        await client.feed(snapshot(f"M{n}", 1, n + 1, yes=[("0.4200", "1.00")], no=[]))
    await client.feed(delta("M0", 1, 9, "0.4200", "1.00"))  # already waiting: keeps its place
    assert [publisher.publish() for _ in range(4)] == [2, 2, 1, 0]
    await client.feed(delta("M4", 1, 10, "0.4200", "1.00"))
    assert publisher.publish() == 1

    events = await published(log, 4)
    assert [[book["market_ticker"] for book in e["books"]] for e in events] == [
        ["M0", "M1"],
        ["M2", "M3"],
        ["M4"],
        ["M4"],
    ]
    assert events[0]["books"][0]["seq"] == 9  # the book as it is when published


async def test_the_heartbeat_takes_each_published_top_once_and_removed_markets_are_forgotten(bus: EventBus) -> None:
    publisher, client = await a_publisher(bus, ["A", "B"])
    await client.feed(snapshot("A", 1, 1, yes=[("0.4200", "1.00")], no=[]))
    await client.feed(snapshot("B", 1, 2, yes=[("0.4200", "1.00")], no=[]))
    assert publisher.take_published(100) == []  # nothing published yet
    assert publisher.publish() == 2
    assert sorted(top["market_ticker"] for top in publisher.take_published(100)) == ["A", "B"]
    assert publisher.take_published(100) == []
    client.stale.add("A")
    publisher.markets_changed(["A"])  # stale now: shown again though its book did not move
    assert publisher.publish() == 1
    assert [(top["market_ticker"], top["stale"]) for top in publisher.take_published(100)] == [("A", True)]

    await client.feed(delta("B", 1, 3, "0.4200", "1.00"))
    assert publisher.publish() == 1
    publisher.forget(["B"])
    assert publisher.take_published(100) == []


async def test_the_heartbeat_takes_the_tops_consoles_were_shown_not_formatted_again(bus: EventBus) -> None:
    log = EventLog()
    bus.subscribe("log", log)
    publisher, client = await a_publisher(bus, ["A", "B", "C"])
    for seq, ticker in enumerate(["A", "B", "C"], start=1):
        await client.feed(snapshot(ticker, 1, seq, yes=[("0.4200", "1.00")], no=[]))
    assert publisher.publish() == 3
    (event,) = await published(log, 1)
    tops = publisher.take_published(100)
    assert [top["market_ticker"] for top in tops] == ["A", "B", "C"]
    assert all(top is book for top, book in zip(tops, event["books"], strict=True))


async def test_the_heartbeat_takes_at_most_its_budget_oldest_first_each_market_with_its_latest_top(
    bus: EventBus,
) -> None:
    publisher, client = await a_publisher(bus, ["A", "B", "C"])
    for seq, ticker in enumerate(["C", "A", "B"], start=1):
        await client.feed(snapshot(ticker, 1, seq, yes=[("0.4200", "1.00")], no=[]))
    assert publisher.publish() == 3
    await client.feed(delta("C", 1, 4, "0.4200", "1.00"))  # C moved again: its newer top keeps C's place
    assert publisher.publish() == 1
    assert [(top["market_ticker"], top["seq"]) for top in publisher.take_published(2)] == [("C", 4), ("A", 2)]
    assert [(top["market_ticker"], top["seq"]) for top in publisher.take_published(2)] == [("B", 3)]
    assert publisher.take_published(2) == []


def test_changed_markets_come_out_oldest_first_once_each_and_never_after_a_discard() -> None:
    changed = ChangedMarkets()
    for ticker in ("A", "B", "A", "C", "B"):
        changed.mark(ticker)
    changed.discard("B")
    assert len(changed) == 2
    assert [changed.take(), changed.take(), changed.take()] == ["A", "C", None]
    changed.mark("B")  # marked again after the discard: comes out once
    changed.mark("B")
    assert [changed.take(), changed.take()] == ["B", None]


async def test_each_book_carries_its_five_best_levels_a_side_in_yes_prices(bus: EventBus) -> None:
    log = EventLog()
    bus.subscribe("log", log)
    publisher, client = await a_publisher(bus, ["A"])
    yes = [(f"0.{40 + i}00", f"{i + 1}.00") for i in range(7)]  # 0.4000 .. 0.4600
    no = [(f"0.{50 - i}00", f"{i + 1}.50") for i in range(6)]  # NO bids 0.5000 .. 0.4500: asks 0.5000 .. 0.5500
    await client.feed(snapshot("A", 1, 1, yes=yes, no=no))
    publisher.publish()

    (event,) = await published(log, 1)
    book = event["books"][0]
    assert book["yes_bids"] == [{"price": f"0.{46 - i}00", "size": f"{7 - i}.00"} for i in range(5)]
    assert book["yes_asks"] == [{"price": f"0.{50 + i}00", "size": f"{i + 1}.50"} for i in range(5)]
    assert book["yes_bid"] == book["yes_bids"][0] and book["yes_ask"] == book["yes_asks"][0]


async def test_levels_are_best_first_with_sizes_written_as_kalshi_writes_them(bus: EventBus) -> None:
    log = EventLog()
    bus.subscribe("log", log)
    publisher, client = await a_publisher(bus, ["A"])
    yes = [("0.0100", "1000.07"), ("0.4200", "0.05"), ("0.3000", "7.10")]
    no = [(f"0.{n:02d}00", f"{n}.00") for n in range(10, 17)]  # seven levels: five are shown
    await client.feed(snapshot("A", 1, 1, yes=yes, no=no))
    assert publisher.publish() == 1

    (event,) = await published(log, 1)
    (book,) = event["books"]
    assert book["yes_bids"] == [
        {"price": "0.4200", "size": "0.05"},
        {"price": "0.3000", "size": "7.10"},
        {"price": "0.0100", "size": "1000.07"},
    ]
    assert [level["price"] for level in book["yes_asks"]] == ["0.8400", "0.8500", "0.8600", "0.8700", "0.8800"]
    assert book["yes_asks"][0] == book["yes_ask"] == {"price": "0.8400", "size": "16.00"}
    assert book["yes_bid"] == {"price": "0.4200", "size": "0.05"} and book["spread"] == "0.4200"
