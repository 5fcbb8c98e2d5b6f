"""Pick the markets to trade: the open markets with the most 24 h volume, after checking the exchange is open."""

from __future__ import annotations

import heapq

from apps.kalshi.rest import MAX_MARKETS_LIMIT, KalshiRestClient, MarketInfo


class DiscoveryError(Exception):
    """Discovery cannot produce a market list."""


class ExchangeClosed(DiscoveryError):
    """GET /exchange/status says the exchange is not active."""

    def __init__(self, estimated_resume_time: str | None) -> None:
        self.estimated_resume_time = estimated_resume_time
        when = f"trading resumes at {estimated_resume_time}" if estimated_resume_time else "no resume time given"
        super().__init__(f"the exchange is closed; {when}")


class NoOpenMarkets(DiscoveryError):
    """The exchange lists no open market (status=open, mve_filter=exclude)."""


def rank_key(market: MarketInfo) -> tuple[int, str]:
    """Highest 24 h volume first; equal volumes in ticker order, so the choice is repeatable."""
    return (-market.volume_24h, market.ticker)


async def discover_markets(rest: KalshiRestClient, count: int, *, page_size: int = MAX_MARKETS_LIMIT) -> list[str]:
    """The tickers of the ``count`` open markets with the highest 24 h volume, best first.

    Raises ExchangeClosed when the exchange is not active, NoOpenMarkets when nothing is open, and
    KalshiRestError when a call fails. Every page of the listing is read; fewer than ``count`` tickers
    come back when fewer markets are open.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    status = await rest.exchange_status()
    if not status.exchange_active:
        raise ExchangeClosed(status.estimated_resume_time)
    # Keyed by ticker: cursor paging over a changing list may show a market twice; the later entry wins.
    latest: dict[str, MarketInfo] = {}
    async for market in rest.markets(status="open", mve_filter="exclude", limit=page_size):
        latest[market.ticker] = market
    if not latest:
        raise NoOpenMarkets("the exchange lists no open markets (status=open, mve_filter=exclude)")
    return [m.ticker for m in heapq.nsmallest(count, latest.values(), key=rank_key)]
