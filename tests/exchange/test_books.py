from __future__ import annotations

import json
import random
from collections import defaultdict

import pytest

from apps.exchange.config import DEFAULT_MARKETS
from apps.exchange.market import DECI_CENT, LINEAR_CENT, TAPERED_DECI_CENT, SimMarket, valid_prices
from apps.kalshi.fixedpoint import CONTRACT, DOLLAR
from apps.kalshi.messages import OrderbookDelta, OrderbookSnapshot, parse_message
from apps.kalshi.orderbook import OrderBook
from apps.kalshi.signing import Credentials
from tests.exchange.helpers import drain, open_ws, recv_n, send, subscribe
from tests.support import StartSim

FED, CPI, BTC, NBA, ETH = DEFAULT_MARKETS[:5]


class Client:
    """What a correct trader does: snapshot as baseline, deltas applied in order."""

    def __init__(self) -> None:
        self.books: dict[tuple[int, str], OrderBook] = {}
        self.seqs: dict[int, list[int]] = defaultdict(list)

    def apply(self, text: str) -> OrderbookSnapshot | OrderbookDelta | None:
        message = parse_message(text)
        if isinstance(message, OrderbookSnapshot):
            book = self.books.setdefault((message.sid, message.market_ticker), OrderBook(message.market_ticker))
            book.apply_snapshot(message)
        elif isinstance(message, OrderbookDelta):
            self.books[(message.sid, message.market_ticker)].apply_delta(message)
        else:
            return None
        self.seqs[message.sid].append(message.seq)
        return message


def assert_same(client_book: OrderBook, exchange_book: OrderBook | None) -> None:
    assert exchange_book is not None
    assert client_book.yes == exchange_book.yes
    assert client_book.no == exchange_book.no
    assert client_book.market_id == exchange_book.market_id


async def test_client_book_equals_exchange_book_at_every_seq(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(message_rate=5000.0)
    ws = await open_ws(sim, credentials)
    await send(
        ws,
        {
            "id": 1,
            "cmd": "subscribe",
            "params": {"channels": ["orderbook_delta"], "market_tickers": sim.markets},
        },
    )
    client = Client()
    assert parse_message(await ws.recv()).type == "subscribed"
    for count in range(1, 2001):
        message = client.apply(str(await ws.recv()))
        assert message is not None
        if count % 40 == 0:
            for (sid, ticker), book in client.books.items():
                assert_same(book, sim.book_at(ticker, sid, message.seq))
    # Freeze the exchange, read what is in flight, then the client agrees with the live book too.
    sim.config.message_rate = 0.0
    for frame in await drain(ws):
        client.apply(json.dumps(frame))
    last_seq = client.seqs[1][-1]
    for (sid, ticker), book in client.books.items():
        assert book.seq is not None
        assert book.seq <= last_seq
        assert_same(book, sim.book_at(ticker, sid, last_seq))
        assert_same(book, sim.true_book(ticker))
    await ws.close()
    # The record outlives the connection.
    assert_same(client.books[(1, FED)], sim.book_at(FED, 1, last_seq))


async def test_seq_is_per_sid_gapless_and_starts_at_1(start_sim: StartSim, credentials: Credentials) -> None:
    # A window of minutes, not the default 5000 events: on a busy machine the sim's send queue runs far
    # ahead of these readers, and the books are compared at the seqs they reached.
    sim = await start_sim(message_rate=4000.0, history_size=1_000_000)
    ws_one = await open_ws(sim, credentials)
    ws_two = await open_ws(sim, credentials)
    client_one, client_two = Client(), Client()
    (sid_a,), frames_a = await subscribe(ws_one, [FED, CPI], command_id=1)
    (sid_b,), frames_b = await subscribe(ws_one, [CPI, BTC], command_id=2)
    (sid_c,), frames_c = await subscribe(ws_two, [CPI], command_id=1)
    assert len({sid_a, sid_b, sid_c}) == 3

    for frame in frames_a + frames_b:
        if "seq" in frame:
            client_one.apply(json.dumps(frame))
    for frame in frames_c:
        if "seq" in frame:
            client_two.apply(json.dumps(frame))
    for _ in range(1500):
        client_one.apply(str(await ws_one.recv()))
    for _ in range(300):
        client_two.apply(str(await ws_two.recv()))
    for client in (client_one, client_two):
        for seqs in client.seqs.values():
            assert seqs == list(range(1, len(seqs) + 1))
    assert set(client_one.seqs) == {sid_a, sid_b}
    assert set(client_two.seqs) == {sid_c}
    # Each sid carries the same changes of a shared market, numbered by its own counter.
    for sid in (sid_a, sid_b, sid_c):
        book = (client_one if sid != sid_c else client_two).books[(sid, CPI)]
        assert book.seq is not None
        assert_same(book, sim.book_at(CPI, sid, book.seq))
    await ws_one.close()
    await ws_two.close()


async def test_prices_follow_each_markets_tick_structure(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(message_rate=6000.0)
    ws = await open_ws(sim, credentials)
    await subscribe(ws, [FED, BTC, ETH])
    prices: dict[str, set[str]] = defaultdict(set)
    sizes: set[str] = set()

    for raw in [await ws.recv() for _ in range(3000)]:
        frame = json.loads(raw)
        prices[frame["msg"]["market_ticker"]].add(frame["msg"]["price_dollars"])
        sizes.add(frame["msg"]["delta_fp"])
    assert all(p.endswith("00") for p in prices[FED])
    assert any(not p.endswith("0") or p[-2] != "0" for p in prices[BTC]), "deci-cent prices such as 0.4250"
    for price in prices[ETH]:
        if "0.1000" < price < "0.9000":
            assert price.endswith("00"), "tapered deci-cent uses whole cents in the middle"
    assert any(not s.endswith(".00") for s in sizes), "some fractional sizes"
    await ws.close()


async def test_use_yes_price_reports_no_levels_in_yes_terms(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim()
    ws = await open_ws(sim, credentials)
    params = {"channels": ["orderbook_delta"], "market_ticker": FED, "use_yes_price": True}
    await send(ws, {"id": 1, "cmd": "subscribe", "params": params})
    _, raw = await recv_n(ws, 2)
    snapshot = parse_message(json.dumps(raw))
    assert isinstance(snapshot, OrderbookSnapshot)
    assert dict(snapshot.no) == {DOLLAR - p: s for p, s in sim.true_book(FED).no.items()}
    await ws.close()


async def test_same_seed_same_run(start_sim: StartSim, credentials: Credentials) -> None:
    runs = []
    for seed in (11, 11, 12):
        sim = await start_sim(seed=seed)
        ws = await open_ws(sim, credentials)
        _, snapshots = await subscribe(ws, [FED, BTC])
        sim.config.message_rate = 5000.0
        deltas = [frame["msg"] for frame in await recv_n(ws, 300)]
        for delta in deltas:
            del delta["ts"], delta["ts_ms"]
        runs.append((snapshots, deltas))
        await ws.close()
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]


async def test_book_at_window_is_bounded(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(message_rate=5000.0, history_size=50)
    ws = await open_ws(sim, credentials)
    (sid,), _ = await subscribe(ws, [FED])
    frames = await recv_n(ws, 300)
    await ws.close()  # the subscription ends: its log stops growing, so the window holds still
    # The sim may have issued many more seqs than we read (its send queue runs ahead of the reader),
    # even more than the window holds: walk up to the window, then to its newest seq.
    newest = frames[-1]["seq"]
    for _ in range(100_000):
        if sim.book_at(FED, sid, newest) is not None:
            break
        newest += 1
    while sim.book_at(FED, sid, newest + 1) is not None:
        newest += 1
    assert sim.book_at(FED, sid, newest - 49) is not None  # the last 50 seqs are kept
    assert sim.book_at(FED, sid, newest - 50) is None  # older than the retained window
    assert sim.book_at(FED, sid, 1) is None
    assert sim.book_at(FED, 999, 1) is None
    with pytest.raises(KeyError):
        sim.book_at("NOPE-1", sid, newest)


@pytest.mark.parametrize("structure", [LINEAR_CENT, DECI_CENT, TAPERED_DECI_CENT])
def test_market_walk_never_crosses_or_goes_negative(structure: str) -> None:
    market = SimMarket("TEST-1", structure=structure, rng=random.Random(5), close_time="", history_size=100)
    grid = set(valid_prices(structure))
    fractional = 0
    event = 0
    for _ in range(1, 20_001):
        drawn = market.next_change()
        assert drawn.delta != 0
        assert drawn.price in grid
        market.house_change(drawn)
        for change in market.take_changes():
            event += 1
            market.apply(change, event)
            fractional += change.delta % CONTRACT != 0
        best_yes, best_no = market.best("yes"), market.best("no")
        if best_yes is not None and best_no is not None:
            assert best_yes + best_no < DOLLAR
    assert all(size > 0 for size in (*market.yes.values(), *market.no.values()))
    assert len(market.yes) > 0
    assert len(market.no) > 0
    assert fractional > 0
    # The retained history rebuilds the current book exactly.
    assert (market.matching.depth("bid"), market.matching.depth("ask")) == (
        market.yes,
        {DOLLAR - price: size for price, size in market.no.items()},
    )
    assert market.book_at_event(event) == (market.yes, market.no)
    assert market.book_at_event(event - 1_000) is None
