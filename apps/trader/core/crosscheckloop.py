"""The cross-check loop: compares live books with the exchange's REST books and resyncs those that stay wrong."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from apps.kalshi.crosscheck import BookCrossChecker
from apps.trader.core.ports import ExchangeRest, FeedClient

logger = logging.getLogger(__name__)

ConsoleLine = Callable[..., None]


class CrossCheckLoop:
    def __init__(
        self,
        rest: ExchangeRest,
        client: Callable[[], FeedClient | None],
        ready: Callable[[], bool],
        console: ConsoleLine,
        *,
        interval: float,
    ) -> None:
        self._rest = rest
        self._client = client
        self._ready = ready
        self._console = console
        self.interval = interval
        self._checker: BookCrossChecker | None = None
        self._checked_client: FeedClient | None = None
        self.resyncs = 0

    def metrics(self) -> dict[str, Any]:
        """The ``crosscheck_*`` status metrics (none before the first check)."""
        if self._checker is None:
            return {}
        return {f"crosscheck_{name}": value for name, value in self._checker.counters().items()} | {
            "crosscheck_resyncs": self.resyncs
        }

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check_once()

    async def check_once(self) -> None:
        """Compare every live book once (while ready); resync those that differ on consecutive checks."""
        client = self._client()
        if client is None or not self._ready():
            return
        if client is not self._checked_client or self._checker is None:
            self._checked_client = client

            def is_stale(ticker: str, watched: FeedClient = client) -> bool:
                return ticker in watched.stale  # read each time: the client replaces its stale set

            self._checker = BookCrossChecker(self._rest.orderbook, client.books, skip=is_stale)
        try:
            results = await self._checker.check_all(list(client.markets))
        except Exception:
            logger.exception("book cross-check failed")
            return
        wrong = [r for r in results if r.persistent]
        if wrong:
            self.resyncs += len(wrong)
            details = "; ".join(f"{r.ticker}: {', '.join(r.differences[:3])}" for r in wrong)
            self._console("warning", f"CROSS-CHECK: {len(wrong)} book(s) differ from the exchange; resyncing", details)
            await client.resync([r.ticker for r in wrong])
