"""Compare live orderbooks with the exchange's REST snapshots.

The live book and the REST snapshot are taken at slightly different moments, so one difference can be a
book that moved in between. ``BookCrossChecker`` therefore calls a market mismatched only when the
difference is seen on consecutive checks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from apps.kalshi.fixedpoint import format_price, format_size
from apps.kalshi.orderbook import OrderBook, differing_levels
from apps.kalshi.resterrors import KalshiRestError

if TYPE_CHECKING:
    from apps.kalshi.rest import KalshiRestClient

FetchBook = Callable[[str], Awaitable[OrderBook]]
"""Fetch the exchange's current book of a ticker, e.g. ``KalshiRestClient.orderbook``."""


def diff_books(live: OrderBook, exchange: OrderBook) -> list[str]:
    """Every level whose size differs, YES side first then NO, best price first; empty when equal.

    Each line reads like "yes 0.4200: live 12.50, exchange 10.00"; a missing level reads "none".
    """
    return [
        f"{side} {format_price(price)}: live {_size(ours)}, exchange {_size(theirs)}"
        for side, price, ours, theirs in differing_levels(live, exchange)
    ]


def _size(size: int) -> str:
    return format_size(size) if size else "none"


async def compare_with_rest(rest: KalshiRestClient, book: OrderBook) -> list[str]:
    """Fetch the REST book of ``book.market_ticker`` (all levels) and list how ``book`` differs from it."""
    exchange = await rest.orderbook(book.market_ticker)
    return diff_books(book, exchange)


@dataclass(frozen=True, slots=True)
class CrossCheckResult:
    ticker: str
    differences: tuple[str, ...] = ()
    streak: int = 0
    """Consecutive checks of this market, this one included, that found a difference."""
    persistent: bool = False
    """The difference has lasted ``persistence`` checks: the live book is wrong, not just late."""
    error: str | None = None
    """The fetch failed; nothing was compared and the streak is unchanged."""


class BookCrossChecker:
    """Checks live books against exchange snapshots and flags differences that persist.

    ``fetch`` gets the exchange's book of a ticker; ``books`` is the live {ticker: OrderBook} mapping,
    read at each check (a dict that the feed keeps up to date). ``skip`` names markets not to check now,
    e.g. ``lambda t: t in client.stale`` while a book awaits its snapshot; a skipped market's streak
    restarts, since its book is being rebuilt.
    """

    def __init__(
        self,
        fetch: FetchBook,
        books: Mapping[str, OrderBook],
        *,
        persistence: int = 2,
        skip: Callable[[str], bool] | None = None,
    ) -> None:
        if persistence < 1:
            raise ValueError("persistence must be at least 1")
        self._fetch = fetch
        self._books = books
        self.persistence = persistence
        self._skip = skip
        self._streaks: dict[str, int] = {}
        self.checks = 0
        """Comparisons made (fetch failures and skipped markets are not counted)."""
        self.mismatches = 0
        """Comparisons that found a difference."""
        self.persistent_mismatches = 0
        """Comparisons whose difference had lasted ``persistence`` checks."""
        self.errors = 0
        self.last_results: dict[str, CrossCheckResult] = {}

    @property
    def mismatched(self) -> dict[str, tuple[str, ...]]:
        """Markets whose latest check was a persistent mismatch, with that check's differences."""
        return {t: r.differences for t, r in self.last_results.items() if r.persistent}

    async def check_market(self, ticker: str) -> CrossCheckResult | None:
        """Compare one market; None when it has no live book or ``skip`` says not now.

        A failed fetch (KalshiRestError) is counted in ``errors`` and reported in the result.
        """
        book = self._books.get(ticker)
        if book is None or (self._skip is not None and self._skip(ticker)):
            self._streaks.pop(ticker, None)
            self.last_results.pop(ticker, None)
            return None
        try:
            exchange = await self._fetch(ticker)
        except KalshiRestError as exc:
            self.errors += 1
            result = CrossCheckResult(ticker, streak=self._streaks.get(ticker, 0), error=str(exc))
            self.last_results[ticker] = result
            return result
        # The live book is read after the await, so it is compared as it stands when the snapshot arrived.
        book = self._books.get(ticker)
        if book is None:
            self._streaks.pop(ticker, None)
            self.last_results.pop(ticker, None)
            return None
        differences = tuple(diff_books(book, exchange))
        self.checks += 1
        streak = self._streaks.get(ticker, 0) + 1 if differences else 0
        self._streaks[ticker] = streak
        persistent = streak >= self.persistence
        if differences:
            self.mismatches += 1
        if persistent:
            self.persistent_mismatches += 1
        result = CrossCheckResult(ticker, differences, streak, persistent)
        self.last_results[ticker] = result
        return result

    async def check_all(self, tickers: Iterable[str] | None = None) -> list[CrossCheckResult]:
        """Check ``tickers`` (default: every live book) one after another, to go easy on rate limits."""
        wanted = list(self._books) if tickers is None else list(tickers)
        results: list[CrossCheckResult] = []
        for ticker in wanted:
            result = await self.check_market(ticker)
            if result is not None:
                results.append(result)
        return results

    def counters(self) -> dict[str, int]:
        return {
            "checks": self.checks,
            "mismatches": self.mismatches,
            "persistent_mismatches": self.persistent_mismatches,
            "errors": self.errors,
        }
