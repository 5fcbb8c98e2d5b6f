from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from apps.exchange.config import DEFAULT_MARKETS
from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.backoff import Backoff
from apps.kalshi.crosscheck import BookCrossChecker, compare_with_rest, diff_books
from apps.kalshi.discovery import ExchangeClosed, NoOpenMarkets, discover_markets
from apps.kalshi.fixedpoint import CONTRACT, format_price, format_size, parse_size
from apps.kalshi.orderbook import OrderBook
from apps.kalshi.rest import KalshiRestClient
from apps.kalshi.resterrors import KalshiRestError
from apps.kalshi.signing import Credentials
from tests.exchange.helpers import http_json
from tests.support import StartSim

FED, CPI, BTC, NBA, ETH, NY = DEFAULT_MARKETS
MARKETS = [f"KXDISC-26-M{i:02d}" for i in range(14)]


@pytest.fixture
async def sim(start_sim: StartSim) -> ExchangeSimulator:
    return await start_sim(seed=23)


@pytest.fixture
async def rest(sim: ExchangeSimulator, credentials: Credentials) -> AsyncIterator[KalshiRestClient]:
    async with KalshiRestClient(sim.api_url, credentials, backoff=Backoff(initial=0.001, cap=0.005)) as client:
        yield client


def set_volumes(sim: ExchangeSimulator, volumes: dict[str, int]) -> None:
    """Give markets known volumes (1/100 contract).

    The simulator only accrues volume from trades on subscribed markets; setting it on its market model
    gives a spread of volumes, ties included, without running a feed.
    """
    for ticker, volume in volumes.items():
        sim._markets[ticker].volume = volume


async def expected_top(sim: ExchangeSimulator, credentials: Credentials, count: int) -> list[str]:
    """The answer worked out from the simulator's own REST listing: open markets by 24 h volume, then ticker."""
    status, body = await http_json(sim, "/trade-api/v2/markets?status=open&limit=1000", credentials)
    assert status == 200
    assert body["cursor"] == ""
    ranked = sorted(body["markets"], key=lambda m: (-parse_size(m["volume_24h_fp"]), m["ticker"]))
    return [m["ticker"] for m in ranked[:count]]


# ------------------------------------------------------------------------------------------ discovery


async def test_discovery_picks_the_highest_24h_volume_across_pages(
    start_sim: StartSim, credentials: Credentials
) -> None:
    sim = await start_sim(markets=MARKETS, seed=23)
    # Distinct volumes, a tie (M03 and M09) and fractional contracts; listing order is not volume order.
    volumes = [500, 7_000, 120, 9_999, 0, 4_250, 50, 8_000, 3_333, 9_999, 10, 7_000, 25, 1]
    set_volumes(sim, {t: v * CONTRACT + (i % 3) * 25 for i, (t, v) in enumerate(zip(MARKETS, volumes, strict=True))})
    # The busiest market is closed: it must not be picked.
    set_volumes(sim, {MARKETS[6]: 1_000_000 * CONTRACT})
    sim.set_market_status(MARKETS[6], "closed")

    async with KalshiRestClient(sim.api_url, credentials) as rest:
        for count in (1, 4, 5, 13):
            expected = await expected_top(sim, credentials, count)
            assert await discover_markets(rest, count, page_size=3) == expected
            assert await discover_markets(rest, count) == expected
        requests_before = rest.metrics.requests
        picked = await discover_markets(rest, 5, page_size=3)
        # One status call, then five pages of three for the 13 open markets.
        assert rest.metrics.requests - requests_before == 6
    assert MARKETS[6] not in picked
    assert len(picked) == 5
    assert picked != MARKETS[:5]  # the answer is not just the listing order


async def test_ties_are_broken_by_ticker(start_sim: StartSim, credentials: Credentials) -> None:
    sim = await start_sim(markets=list(reversed(MARKETS[:6])), seed=23)
    set_volumes(sim, dict.fromkeys(MARKETS[:6], 42 * CONTRACT))
    async with KalshiRestClient(sim.api_url, credentials) as rest:
        assert await discover_markets(rest, 3, page_size=2) == MARKETS[:3]


async def test_asking_for_more_than_are_open_returns_all_open(sim: ExchangeSimulator, rest: KalshiRestClient) -> None:
    sim.set_market_status(NBA, "finalized")
    picked = await discover_markets(rest, 50)
    assert sorted(picked) == sorted(t for t in DEFAULT_MARKETS if t != NBA)


async def test_a_closed_exchange_raises_exchange_closed(sim: ExchangeSimulator, rest: KalshiRestClient) -> None:
    sim.set_exchange_status(False)
    with pytest.raises(ExchangeClosed) as caught:
        await discover_markets(rest, 3)
    assert caught.value.estimated_resume_time is None
    assert str(caught.value) == "the exchange is closed; no resume time given"
    assert rest.metrics.requests == 1  # no listing was fetched


async def test_exchange_closed_names_the_resume_time(credentials: Credentials) -> None:
    body = {"exchange_active": False, "trading_active": False, "exchange_estimated_resume_time": "2026-07-01T13:00:00Z"}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    async with KalshiRestClient("https://kalshi.invalid/trade-api/v2", credentials, transport=transport) as rest:
        with pytest.raises(ExchangeClosed, match=r"^the exchange is closed; trading resumes at 2026-07-01T13:00:00Z$"):
            await discover_markets(rest, 3)


async def test_trading_paused_but_exchange_active_still_discovers(
    sim: ExchangeSimulator, rest: KalshiRestClient
) -> None:
    sim.set_exchange_status(True, trading_active=False)
    assert len(await discover_markets(rest, 2)) == 2


async def test_no_open_markets_is_a_clear_error(sim: ExchangeSimulator, rest: KalshiRestClient) -> None:
    for ticker in DEFAULT_MARKETS:
        sim.set_market_status(ticker, "closed")
    with pytest.raises(NoOpenMarkets, match="no open markets"):
        await discover_markets(rest, 3)


async def test_discovery_rides_out_429s(sim: ExchangeSimulator, rest: KalshiRestClient) -> None:
    sim.faults.rest_429 = 3
    assert len(await discover_markets(rest, 2)) == 2
    assert rest.metrics.retries_429 == 3


async def test_count_must_be_positive(rest: KalshiRestClient) -> None:
    with pytest.raises(ValueError, match="count"):
        await discover_markets(rest, 0)


# ------------------------------------------------------------------------------------------ cross-check


async def test_a_still_book_matches_the_exchange(sim: ExchangeSimulator, rest: KalshiRestClient) -> None:
    sim.faults.stall = True
    for ticker in (FED, BTC, ETH):
        assert await compare_with_rest(rest, sim.true_book(ticker)) == []


async def test_differences_are_listed_level_by_level(sim: ExchangeSimulator, rest: KalshiRestClient) -> None:
    sim.faults.stall = True
    book = sim.true_book(CPI)
    truth = sim.true_book(CPI)
    (best_yes, yes_size), (second_yes, _) = truth.levels("yes", 2)
    best_no = truth.levels("no", 1)[0][0]
    book.yes[best_yes] = yes_size + 250  # bigger than the exchange's
    del book.yes[second_yes]  # missing here
    book.no[best_no + 100] = 1_000  # a level the exchange does not have
    differences = await compare_with_rest(rest, book)
    assert differences == [
        f"yes {format_price(best_yes)}: live {format_size(yes_size + 250)}, exchange {format_size(yes_size)}",
        f"yes {format_price(second_yes)}: live none, exchange {format_size(truth.yes[second_yes])}",
        f"no {format_price(best_no + 100)}: live 10.00, exchange none",
    ]
    assert all(KalshiRestError.__name__ not in d for d in differences)


def test_diff_books_reads_like_the_brief() -> None:
    live, exchange = OrderBook("M"), OrderBook("M")
    live.yes[4200] = 1250
    exchange.yes[4200] = 1000
    assert diff_books(live, exchange) == ["yes 0.4200: live 12.50, exchange 10.00"]
    assert diff_books(exchange, exchange) == []


async def test_checker_flags_only_a_mismatch_that_persists(sim: ExchangeSimulator, rest: KalshiRestClient) -> None:
    sim.faults.stall = True
    books = {t: sim.true_book(t) for t in (FED, NBA)}
    checker = BookCrossChecker(rest.orderbook, books)

    first = await checker.check_all()
    assert [(r.ticker, r.differences, r.persistent) for r in first] == [(FED, (), False), (NBA, (), False)]

    price, size = books[NBA].levels("yes", 1)[0]
    books[NBA].yes[price] = size + 100
    second = {r.ticker: r for r in await checker.check_all()}
    assert second[NBA].differences and second[NBA].streak == 1
    assert not second[NBA].persistent
    assert checker.mismatched == {}

    third = {r.ticker: r for r in await checker.check_all()}
    assert third[NBA].persistent and third[NBA].streak == 2
    assert not third[FED].persistent
    assert checker.mismatched == {NBA: third[NBA].differences}
    assert checker.counters() == {"checks": 6, "mismatches": 2, "persistent_mismatches": 1, "errors": 0}

    books[NBA].yes[price] = size  # the live book is right again
    fourth = await checker.check_market(NBA)
    assert fourth is not None and fourth.streak == 0 and not fourth.differences
    assert checker.mismatched == {}


async def test_a_book_that_catches_up_is_never_flagged(sim: ExchangeSimulator, rest: KalshiRestClient) -> None:
    """A live book one step behind the snapshot differs once, then agrees: that is movement, not a fault."""
    sim.faults.stall = True
    live = sim.true_book(BTC)
    price, size = live.levels("no", 1)[0]
    exchange_sizes = iter([size + 500, size + 500, size + 700, size + 700])

    async def fetch(ticker: str) -> OrderBook:
        book = await rest.orderbook(ticker)
        book.no[price] = next(exchange_sizes)  # the exchange has moved on
        return book

    checker = BookCrossChecker(fetch, {BTC: live})
    streaks = []
    for catch_up in (size + 500, None, size + 700, None):
        result = await checker.check_market(BTC)
        assert result is not None and not result.persistent
        streaks.append(result.streak)
        if catch_up is not None:
            live.no[price] = catch_up  # the live feed delivers the delta a moment later
    assert streaks == [1, 0, 1, 0]
    assert checker.persistent_mismatches == 0
    assert checker.mismatches == 2


async def test_checker_counts_fetch_errors_and_skips(sim: ExchangeSimulator, rest: KalshiRestClient) -> None:
    sim.faults.stall = True
    books = {FED: sim.true_book(FED), "KXNOPE-26-X": OrderBook("KXNOPE-26-X")}
    books[FED].yes.clear()
    stale = {FED}
    checker = BookCrossChecker(rest.orderbook, books, skip=lambda t: t in stale)

    assert await checker.check_market(FED) is None  # waiting for its snapshot
    missing = await checker.check_market("KXNOPE-26-X")
    assert missing is not None and missing.error is not None and "404" in missing.error
    assert await checker.check_market("KXNOT-LIVE") is None

    stale.clear()
    assert not (await checker.check_market(FED)).persistent
    sim.faults.rest_429 = 100  # a REST outage between two checks leaves the streak as it was
    rest.max_retries_429 = 1
    interrupted = await checker.check_market(FED)
    assert interrupted.error is not None and interrupted.streak == 1
    sim.faults.rest_429 = 0
    assert (await checker.check_market(FED)).persistent
    assert checker.counters() == {"checks": 2, "mismatches": 2, "persistent_mismatches": 1, "errors": 2}


def test_persistence_must_be_positive() -> None:
    async def fetch(ticker: str) -> OrderBook:
        return OrderBook(ticker)

    with pytest.raises(ValueError, match="persistence"):
        BookCrossChecker(fetch, {}, persistence=0)
