"""Market control: adding and removing markets on the live subscription, and following what the exchange refused.

The session's market list is ``options.markets``, changed in place: every component reads it from there.
"""

from __future__ import annotations

from collections.abc import Callable

from apps.kalshi.feed import FeedEvent, MarketChange
from apps.trader.core.bookpublisher import BookPublisher
from apps.trader.core.options import CoordinatorOptions
from apps.trader.core.ports import FeedClient
from apps.trader.core.states import BOOKS_LIVE, State

ConsoleLine = Callable[..., None]


class MarketControl:
    def __init__(
        self,
        options: CoordinatorOptions,
        client: Callable[[], FeedClient | None],
        state: Callable[[], State],
        console: ConsoleLine,
        publisher: BookPublisher,
    ) -> None:
        self._options = options
        self._client = client
        self._state = state
        self._console = console
        self._publisher = publisher

    async def add_markets(self, tickers: list[str]) -> MarketChange:
        """Subscribe to more markets on the live connection, as far as the exchange accepts them.

        Tickers must already be normalised (apps.kalshi.tickers). Each is added only once the exchange
        accepts it; a refusal comes back with the exchange's reason and leaves the subscription as it was.
        """
        client, state = self._client(), self._state()
        if client is None or (state is not State.CONNECTING and state not in BOOKS_LIVE):
            reason = f"the trader has no exchange connection (state {state.value}); try again when it is ready"
            return MarketChange(refused=dict.fromkeys(dict.fromkeys(tickers), reason))
        change = await client.add_markets(tickers, wait=self._options.control_wait)
        self.sync()
        if change.done:
            now = f"now {len(self._options.markets)} markets"
            self._console("info", f"MARKETS: added {', '.join(change.done)}", now)
        self._console_change("add", change)
        return change

    async def remove_markets(self, tickers: list[str]) -> MarketChange:
        """Drop markets from the live subscription and from status."""
        client = self._client()
        if client is not None:
            change = await client.remove_markets(tickers, wait=self._options.control_wait)
        else:
            change = MarketChange()
            for ticker in dict.fromkeys(tickers):
                if ticker in self._options.markets:
                    change.done.append(ticker)
                else:
                    change.refused[ticker] = "not subscribed"
        _drop(self._options.markets, change.done)
        self._publisher.forget(change.done)
        self.sync()
        if change.done:
            now = f"now {len(self._options.markets)} markets"
            self._console("info", f"MARKETS: removed {', '.join(change.done)}", now)
        self._console_change("remove", change)
        return change

    def refused(self, event: FeedEvent) -> int:
        """The exchange refused markets of the subscription: they are dropped, the rest carry on.

        Returns how many markets are left.
        """
        watched = set(self._options.markets)
        refused = [t for t in event.markets if t in watched]
        _drop(self._options.markets, refused)
        self._publisher.forget(refused)
        left = len(self._options.markets)
        self._console(
            "error",
            f"MARKETS: the exchange refused {', '.join(event.markets)}: {event.reason}",
            f"dropped; continuing with {left} market(s)",
        )
        return left

    def sync(self) -> None:
        """The live client's markets are the truth (the exchange accepted them); a new client starts from them."""
        client = self._client()
        if client is not None and client.markets != self._options.markets:
            self._options.markets[:] = client.markets

    def _console_change(self, verb: str, change: MarketChange) -> None:
        for ticker, reason in change.refused.items():
            self._console("warning", f"MARKETS: could not {verb} {ticker}: {reason}")
        if change.pending:
            self._console(
                "warning",
                f"MARKETS: the exchange has not answered yet for {', '.join(change.pending)}",
                f"its answer still applies when it comes ({verb})",
            )


def _drop(markets: list[str], tickers: list[str]) -> None:
    """Remove ``tickers`` from ``markets`` in place, in one pass (10,000 markets: no search per ticker)."""
    if tickers:
        gone = set(tickers)
        markets[:] = [t for t in markets if t not in gone]
