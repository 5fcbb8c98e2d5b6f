"""Replaying a recorded session through the built-in exchange, so the trader and console run on it.

The exchange is the ordinary simulator with its own random walk switched off (``message_rate`` 0). Each
market starts from its first recorded snapshot; recorded deltas become the exchange's changes, sent to
subscribers in the same protocol; a later recorded snapshot (a resync, or a reconnect after lost data)
moves the exchange's book to what it says through the level differences. Pacing follows the recorded
receive times, divided by ``speed`` (0: as fast as possible).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from asgiref.sync import sync_to_async

from apps.exchange.market import Change
from apps.exchange.simulator import ExchangeSimulator
from apps.kalshi.messages import OrderbookDelta, OrderbookSnapshot
from apps.kalshi.orderbook import OrderBook, differing_levels
from apps.marketdata.selectors import Recorded, first_snapshots, recording_page
from apps.trader.runtime import TraderRuntime

logger = logging.getLogger(__name__)

Fetch = Callable[[int, int], Awaitable[list[Recorded]]]
"""(after position, limit) -> the next recorded items."""


@dataclass
class ReplayStats:
    items: int = 0
    deltas: int = 0
    snapshots: int = 0
    changes: int = 0
    """Changes the exchange sent: one per delta, plus the level differences a snapshot brought."""
    rejected: int = 0
    """Recorded deltas the exchange's book could not take (they would leave a negative size)."""


def snapshot_changes(book: OrderBook, snapshot: OrderbookSnapshot) -> list[Change]:
    """The changes that take ``book`` to what ``snapshot`` shows."""
    target = OrderBook(book.market_ticker)
    target.apply_snapshot(snapshot)
    return [Change(side, price, wanted - held) for side, price, held, wanted in differing_levels(book, target)]


class SessionReplay:
    """Feeds one recorded session into an ExchangeSimulator created with the session's markets."""

    def __init__(
        self,
        exchange: ExchangeSimulator,
        *,
        session_id: int,
        speed: float = 1.0,
        max_pause: float | None = None,
        page_size: int = 5000,
        fetch: Fetch | None = None,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.exchange = exchange
        self.session_id = session_id
        self.speed = speed
        self.max_pause = max_pause
        self.page_size = page_size
        self._fetch = fetch or self._fetch_page
        self.stats = ReplayStats()

    async def _fetch_page(self, after: int, limit: int) -> list[Recorded]:
        return await sync_to_async(recording_page)(session_id=self.session_id, after=after, limit=limit)

    async def prepare(self) -> None:
        """Give every market its first recorded book, before anyone subscribes."""
        snapshots = await sync_to_async(first_snapshots)(session_id=self.session_id)
        for ticker, snapshot in snapshots.items():
            self._move_to(ticker, snapshot)

    async def run(self) -> ReplayStats:
        """Replay every recorded item once, paced; returns what was sent."""
        loop = asyncio.get_running_loop()
        after = 0
        origin: tuple[datetime, float] | None = None
        previous: datetime | None = None
        while True:
            page = await self._fetch(after, self.page_size)
            if not page:
                return self.stats
            for item in page:
                after = item.position
                if self.speed > 0:
                    if origin is None:
                        origin = (item.received_at, loop.time())
                    elif previous is not None and self.max_pause is not None:
                        pause = (item.received_at - previous).total_seconds()
                        if pause > self.max_pause:
                            # Skip the rest of a long silence (an outage, a quiet night) by moving the origin.
                            origin = (origin[0], origin[1] - (pause - self.max_pause) / self.speed)
                    previous = item.received_at
                    due = origin[1] + (item.received_at - origin[0]).total_seconds() / self.speed
                    delay = due - loop.time()
                    if delay > 0.001:
                        await asyncio.sleep(delay)
                self.apply(item)
            if self.speed == 0:
                await asyncio.sleep(0)  # let the exchange send between pages

    def apply(self, item: Recorded) -> None:
        """Make the exchange do what the recorded item says happened."""
        self.stats.items += 1
        message = item.message
        if isinstance(message, OrderbookDelta):
            self.stats.deltas += 1
            try:
                self.exchange.publish_change(message.market_ticker, Change(message.side, message.price, message.delta))
            except ValueError as exc:
                self.stats.rejected += 1
                logger.warning("replay: delta at sid %s seq %s skipped: %s", message.sid, message.seq, exc)
                return
            self.stats.changes += 1
        elif isinstance(message, OrderbookSnapshot):
            self.stats.snapshots += 1
            self.stats.changes += self._move_to(message.market_ticker, message)

    def _move_to(self, ticker: str, snapshot: OrderbookSnapshot) -> int:
        book = self.exchange.true_book(ticker)
        changes = snapshot_changes(book, snapshot)
        for change in changes:
            self.exchange.publish_change(ticker, change)
        return len(changes)


async def replay_through_trader(
    replay: SessionReplay, runtime: TraderRuntime, *, drain_timeout: float = 30.0
) -> ReplayStats | None:
    """Run ``runtime``, a trader on ``replay.exchange``, until the recording has been replayed to it, then
    shut it down ("the replay is over"); returns what was replayed, or None when the trader stopped first.

    The replay starts once the trader has subscribed, and the trader stops once it has taken every delta the
    exchange sent (at most ``drain_timeout`` seconds after the last one), so its recording is complete.
    """
    exchange = replay.exchange
    trader = asyncio.create_task(runtime.run())
    try:
        while exchange.stats["subscriptions"] == 0:
            if trader.done():
                return None
            await asyncio.sleep(0.05)
        replaying = asyncio.create_task(replay.run())
        await asyncio.wait({replaying, trader}, return_when=asyncio.FIRST_COMPLETED)
        if not replaying.done():
            replaying.cancel()
            await asyncio.gather(replaying, return_exceptions=True)
            return None
        stats = replaying.result()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        while not trader.done() and loop.time() < deadline and _undelivered(runtime, exchange) > 0:
            await asyncio.sleep(0.05)
        left = _undelivered(runtime, exchange)
        runtime.request_shutdown(
            f"the replay of session {replay.session_id} is over: {stats.items:,} recorded items replayed"
            + (f"; {left:,} deltas were still on their way" if left > 0 else "")
        )
        return stats
    finally:
        await trader


def _undelivered(runtime: TraderRuntime, exchange: ExchangeSimulator) -> int:
    """Deltas the exchange sent that the trader has not received yet."""
    coordinator = runtime.coordinator
    client = coordinator.client if coordinator is not None else None
    received = client.feed_status().counters.deltas_received if client is not None else 0
    return int(exchange.stats["deltas_sent"]) - received
