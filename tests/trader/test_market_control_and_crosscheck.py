"""Market control and the cross-check loop, each on its own with stand-ins; and the session writer keeping
what a replaced heartbeat carried."""

from __future__ import annotations

from typing import Any

from apps.kalshi.feed import FeedEvent, FeedEventKind
from apps.kalshi.orderbook import OrderBook
from apps.trader.core.bookpublisher import BookPublisher
from apps.trader.core.crosscheckloop import CrossCheckLoop
from apps.trader.core.eventbus import EventBus
from apps.trader.core.marketcontrol import MarketControl
from apps.trader.core.options import CoordinatorOptions
from apps.trader.core.sessionwriter import SessionWriter
from apps.trader.core.states import State
from tests.support import eventually
from tests.trader.builders import MemoryStore, StandInClient, StandInClients, snapshot


class Lines:
    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    def __call__(self, level: str, message: str, context: str = "") -> None:
        self.seen.append((level, message, context))


def control_for(markets: list[str], state: State = State.READY) -> tuple[MarketControl, StandInClient, Lines]:
    options = CoordinatorOptions(environment="sim", markets=markets, exchange_url="ws://x")
    client = StandInClients()(object(), markets)  # type: ignore[arg-type]
    publisher = BookPublisher(EventBus(), lambda: client)
    lines = Lines()
    return MarketControl(options, lambda: client, lambda: state, lines, publisher), client, lines


async def test_markets_are_added_and_removed_on_the_live_client_and_the_session_list_follows() -> None:
    markets = ["A"]
    control, client, lines = control_for(markets)
    assert (await control.add_markets(["B", "C"])).done == ["B", "C"]
    assert (await control.remove_markets(["A"])).done == ["A"]
    assert markets == client.markets == ["B", "C"]
    assert [line[1] for line in lines.seen] == ["MARKETS: added B, C", "MARKETS: removed A"]
    assert lines.seen[-1][2] == "now 2 markets"


async def test_without_a_connection_adding_is_refused_with_the_reason() -> None:
    control, _, _ = control_for(["A"], state=State.ERROR)
    change = await control.add_markets(["B", "B"])
    assert change.refused == {"B": "the trader has no exchange connection (state error); try again when it is ready"}


async def test_markets_the_exchange_refuses_are_dropped_and_the_count_left_is_returned() -> None:
    markets = ["A", "B"]
    control, _, lines = control_for(markets)
    left = control.refused(FeedEvent(FeedEventKind.REFUSED, reason="exchange error 11", markets=("B",)))
    assert (left, markets) == (1, ["A"])
    assert lines.seen == [
        ("error", "MARKETS: the exchange refused B: exchange error 11", "dropped; continuing with 1 market(s)")
    ]


async def test_a_book_that_stays_wrong_is_resynced_and_counted() -> None:
    client = StandInClients()(object(), ["A", "B"])  # type: ignore[arg-type]

    class Listener:
        async def on_market_message(self, message: Any, book: Any) -> None: ...

    client.listener = Listener()  # type: ignore[assignment]
    await client.feed(snapshot("A", 1, 1, yes=[("0.4200", "1.00")], no=[]))
    await client.feed(snapshot("B", 1, 2, yes=[("0.3000", "1.00")], no=[]))

    async def exchange_book(ticker: str) -> OrderBook:
        book = OrderBook(ticker)
        price = "0.4200" if ticker == "A" else "0.3100"  # B differs from the live book
        book.apply_snapshot(snapshot(ticker, 1, 9, yes=[(price, "1.00")], no=[]))
        return book

    class Rest:
        async def discover(self, count: int) -> list[str]:
            return []

        orderbook = staticmethod(exchange_book)

        def metrics(self) -> dict[str, int]:
            return {}

    lines = Lines()
    loop = CrossCheckLoop(Rest(), lambda: client, lambda: True, lines, interval=60.0)
    assert loop.metrics() == {}
    await loop.check_once()
    assert client.resynced == []  # one difference may be a book that is late
    await loop.check_once()
    assert client.resynced == [["B"]]
    assert lines.seen[0][1] == "CROSS-CHECK: 1 book(s) differ from the exchange; resyncing"
    assert loop.metrics()["crosscheck_resyncs"] == 1


async def test_a_heartbeat_replaced_before_it_was_written_keeps_what_it_carried() -> None:
    store = MemoryStore()
    store.answering.clear()
    writer = SessionWriter(store)
    writer.start(1)
    top = {"market_ticker": "A", "seq": 1}

    def beat(tops: list[dict[str, Any]], markets: list[str] | None) -> None:
        writer.heartbeat(state="ready", status={}, counters={}, console=[], tops=tops, markets=markets)

    beat([top, {"market_ticker": "B", "seq": 1}], None)
    beat([{"market_ticker": "C", "seq": 1}], ["A", "C"])
    beat([{"market_ticker": "B", "seq": 2}], None)
    store.answering.set()
    await writer.flush()
    await writer.close()
    (written,) = store.heartbeats  # the latest replaced the others, and carries what they carried
    assert written["tops"] == [top, {"market_ticker": "B", "seq": 2}, {"market_ticker": "C", "seq": 1}]
    assert written["markets"] == ["A", "C"]


async def test_a_heartbeat_queued_while_one_is_being_written_carries_only_what_is_new() -> None:
    store = MemoryStore()
    store.answering.clear()
    writer = SessionWriter(store)
    writer.start(1)

    def beat(tops: list[dict[str, Any]], markets: list[str] | None) -> None:
        writer.heartbeat(state="ready", status={}, counters={}, console=[], tops=tops, markets=markets)

    beat([{"market_ticker": "A", "seq": 1}, {"market_ticker": "B", "seq": 1}], ["A", "B"])
    await eventually(lambda: store.heartbeat_calls == 1)  # the first write is under way
    beat([{"market_ticker": "B", "seq": 2}, {"market_ticker": "C", "seq": 1}], None)
    store.answering.set()
    await writer.flush()
    await writer.close()
    first, second = store.heartbeats
    assert first["tops"] == [{"market_ticker": "A", "seq": 1}, {"market_ticker": "B", "seq": 1}]
    assert first["markets"] == ["A", "B"]
    # The first was written: the second does not write A or the list again, and B only as it changed.
    assert second["tops"] == [{"market_ticker": "B", "seq": 2}, {"market_ticker": "C", "seq": 1}]
    assert second["markets"] is None
