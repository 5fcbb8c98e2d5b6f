"""The recording tap: hands every applied message to the Recorder, with the gaps, losses and heals around them.

It owns the bookkeeping that turns feed events into gap rows: the last recorded (sid, seq) since the feed
was last lost (for a disconnect gap), and the markets a gap made stale that have had no snapshot since (the
gap heals when that set empties). Rows reach the recorder in the order the feed produced them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from apps.kalshi.clock import from_epoch_us
from apps.kalshi.feed import FeedEvent, FeedEventKind, MarketMessage
from apps.kalshi.messages import OrderbookSnapshot
from apps.trader.core.ports import Recorder


class RecordingTap:
    def __init__(
        self, recorder: Recorder | None, markets: Callable[[], list[str]], wall_clock: Callable[[], datetime]
    ) -> None:
        self._recorder = recorder
        self._markets = markets
        """The session's market list of the moment."""
        self._wall_clock = wall_clock
        self.session_id: int | None = None
        self._last_recorded: tuple[int, int] | None = None
        """(sid, seq) of the last recorded message since the feed was last lost, for a disconnect gap."""
        self._awaiting_snapshot: set[str] = set()
        """Markets a recorded gap made stale that have had no snapshot since; the gap heals when it empties."""
        self._lost: asyncio.Future[None] | None = None
        """The loss of a replaced client, being recorded; rows of the next client wait for it."""

    @property
    def awaiting_snapshot(self) -> frozenset[str]:
        return frozenset(self._awaiting_snapshot)

    def take(self, message: MarketMessage, received_us: int) -> Awaitable[None] | None:
        """``on_market_message`` on the hot path: the next message of the same subscription, with no loss or
        heal around it, goes straight to the recorder without a coroutine of its own. Returns None, or an
        awaitable the caller awaits before the next message (the recorder is full, or something unusual
        goes the whole way)."""
        recorder, session_id = self._recorder, self.session_id
        if recorder is None or session_id is None:
            return None
        last = self._last_recorded
        if self._lost is not None or self._awaiting_snapshot or (last is not None and last[0] != message.sid):
            return self.on_market_message(message, received_us)
        self._last_recorded = (message.sid, message.seq)
        return recorder.take(session_id, message, received_us)

    async def on_market_message(self, message: MarketMessage, received_us: int) -> None:
        """Record one applied snapshot or delta. Awaiting the recorder is the back-pressure path: it returns
        at once unless the recorder is full."""
        if self._recorder is not None and self.session_id is not None:
            if self._lost is not None:
                await self.settle()
            last = self._last_recorded
            if last is not None and last[0] != message.sid and not self._awaiting_snapshot:
                # A new subscription (after error 10 or 25) with no gap recorded: whatever the old one
                # did not deliver is lost, and the recording says so.
                await self._record_feed_lost("resubscribe")
            self._last_recorded = (message.sid, message.seq)
            await self._recorder.record(self.session_id, message, received_us)
            if self._awaiting_snapshot and isinstance(message, OrderbookSnapshot):
                self._awaiting_snapshot.discard(message.market_ticker)
                if not self._awaiting_snapshot:
                    await self._recorder.mark_healed(self.session_id, healed_at=from_epoch_us(received_us))

    async def on_feed_event(self, event: FeedEvent) -> None:
        if self._recorder is not None and self.session_id is not None:
            await self.settle()
            await self._record_feed_event(self._recorder, self.session_id, event)

    def feed_replaced(self) -> None:
        """A new client replaces one that stopped after live data (an error): record the loss.

        The state loop does not wait for it (the recorder may be full and waiting on the database); the
        new client's first row waits for it instead, so the recording keeps its order.
        """
        if self._recorder is None or self.session_id is None or self._last_recorded is None or self._lost:
            return  # nothing recorded since the last loss, or that loss is still being recorded
        self._lost = asyncio.ensure_future(self._record_feed_lost())

    async def settle(self) -> None:
        """Return once the loss of a replaced client is recorded."""
        if self._lost is not None:
            lost, self._lost = self._lost, None
            await lost

    async def _record_feed_event(self, recorder: Recorder, session_id: int, event: FeedEvent) -> None:
        """Gaps, lost connections and heals go into the recording, in order with the messages."""
        if event.kind is FeedEventKind.GAP:
            self._awaiting_snapshot.update(event.markets)
            await recorder.record_gap(
                session_id,
                kind="seq",
                sid=event.sid,
                expected_seq=event.expected_seq,
                received_seq=event.received_seq,
                markets=event.markets,
                detected_at=self._wall_clock(),
            )
        elif event.kind in (FeedEventKind.DISCONNECTED, FeedEventKind.FATAL):
            await self._record_feed_lost()
        elif event.kind is FeedEventKind.SYNCED and self._awaiting_snapshot:
            # Every market is live (a market removed meanwhile will send no snapshot): heal what is open.
            self._awaiting_snapshot.clear()
            await recorder.mark_healed(session_id, healed_at=self._wall_clock())

    async def _record_feed_lost(self, kind: str = "disconnect") -> None:
        """The feed stopped after live data: a lost connection, a client replaced after an error, or
        ("resubscribe") a subscription the exchange ended.

        Only the first loss after live data is recorded: attempts that never got data lost nothing new.
        """
        if self._recorder is None or self.session_id is None or self._last_recorded is None:
            return
        sid, seq = self._last_recorded
        self._last_recorded = None
        self._awaiting_snapshot.update(self._markets())
        await self._recorder.record_gap(
            self.session_id,
            kind=kind,
            sid=sid,
            expected_seq=seq + 1,
            received_seq=None,
            markets=self._markets(),
            detected_at=self._wall_clock(),
        )
