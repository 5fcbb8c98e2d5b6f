"""The account's private WebSocket feed: fills, order updates and positions, reconciled from REST on every connect.

The private channels carry no ``seq``, so nothing on the socket says a message was lost while it was down.
After each (re)connect, once the three channels are subscribed, the account is read afresh from REST
(``KalshiTradingClient.reconcile``) and handed to the listener; messages that arrive meanwhile wait and
follow the snapshot, in order. The URL is checked against the trading rules when the feed is built and
before every connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from websockets.asyncio.client import ClientConnection, connect

from apps.kalshi.backoff import Backoff
from apps.kalshi.environments import TradingPermission, TradingRefused, check_trading_url
from apps.kalshi.feed import ConnectionStatus, FeedEvent, FeedEventKind, reconnect_until_closed
from apps.kalshi.messages import ErrorReply, MalformedMessage, OtherMessage, Subscribed, parse_message
from apps.kalshi.privatemessages import PRIVATE_CHANNELS, PrivateMessage, parse_private_frame, subscribe_private_command
from apps.kalshi.resterrors import KalshiRestError
from apps.kalshi.signing import WS_PATH, Credentials
from apps.kalshi.trading import AccountSnapshot, KalshiTradingClient
from apps.kalshi.wsattempt import connection_attempt

logger = logging.getLogger(__name__)


class AccountListener(Protocol):
    async def on_account_snapshot(self, snapshot: AccountSnapshot) -> None:
        """The account as REST has it now: replace what was known (after every connect, and on demand)."""

    async def on_private_message(self, message: PrivateMessage) -> None:
        """A fill, an order's new state or a position's new state, in the order the exchange sent them."""

    async def on_feed_event(self, event: FeedEvent) -> None:
        """Connection news: connected, disconnected (with the next attempt's delay), fatal, notices."""


@dataclass
class PrivateFeedCounters:
    messages_received: int = 0
    """Private-channel messages parsed (fill, user_order, market_position)."""
    malformed_frames: int = 0
    reconnects: int = 0
    reconciles: int = 0


class PrivateFeed:
    """One authenticated connection subscribed to ``fill``, ``user_orders`` and ``market_positions``."""

    def __init__(
        self,
        *,
        url: str,
        credentials: Credentials,
        permission: TradingPermission,
        trading: KalshiTradingClient,
        listener: AccountListener,
        market_tickers: list[str] | None = None,
        backoff: Backoff | None = None,
        open_timeout: float = 10.0,
        subscribe_timeout: float = 10.0,
        keepalive: float = 20.0,
        wall_clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        check_trading_url(permission, url, websocket=True)
        self.url = url
        self.permission = permission
        self.status = ConnectionStatus.DISCONNECTED
        self.counters = PrivateFeedCounters()
        self._credentials = credentials
        self._trading = trading
        self._listener = listener
        self._market_tickers = list(market_tickers or [])
        self._backoff = backoff or Backoff()
        self._open_timeout = open_timeout
        self._subscribe_timeout = subscribe_timeout
        self._keepalive = keepalive
        self._wall_clock_ms = wall_clock_ms
        self._closing = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._live = False
        """The connection's snapshot was delivered: messages go straight to the listener."""
        self._waiting: list[PrivateMessage] = []
        self._reconciling: asyncio.Task[None] | None = None
        self._reconcile_lock = asyncio.Lock()

    async def run(self) -> None:
        """Connect, subscribe, reconcile and read until ``close()``; reconnect with back-off after a failure.

        Raises HandshakeRejected when the exchange refuses the credentials, and TradingRefused when the
        trading rules no longer allow the URL: retrying cannot help either.
        """
        await reconnect_until_closed(
            self._connect_once,
            closing=self._closing,
            backoff=self._backoff,
            on_feed_event=self._listener.on_feed_event,
            on_reconnect=self._count_reconnect,
        )

    async def _connect_once(self) -> str:
        check_trading_url(self.permission, self.url, websocket=True)
        self.status = ConnectionStatus.CONNECTING
        reason = await self._connect_and_read()
        self.status = ConnectionStatus.DISCONNECTED
        return reason

    def _count_reconnect(self) -> None:
        self.counters.reconnects += 1

    async def close(self) -> None:
        self._closing.set()
        if self._ws is not None:
            await self._ws.close()

    async def reconcile(self) -> AccountSnapshot:
        """Read the account from REST now and hand it to the listener (also done after every connect).

        Messages that arrive while REST is read wait and follow the snapshot, so a newer message is never
        overwritten by the older snapshot.
        """
        async with self._reconcile_lock:
            live, self._live = self._live, False
            try:
                snapshot = await self._trading.reconcile()
                self.counters.reconciles += 1
                await self._listener.on_account_snapshot(snapshot)
            finally:
                await self._deliver_waiting()
                self._live = live
            return snapshot

    async def _deliver_waiting(self) -> None:
        while self._waiting:
            await self._listener.on_private_message(self._waiting.pop(0))

    async def _connect_and_read(self) -> str:
        try:
            return await connection_attempt(
                self._open_and_read, on_feed_event=self._listener.on_feed_event, closing=self._closing
            )
        finally:
            self._ws = None
            await self._stop_reconciling()

    async def _open_and_read(self) -> str:
        headers = self._credentials.headers("GET", WS_PATH, self._wall_clock_ms())
        async with connect(
            self.url,
            additional_headers=headers,
            open_timeout=self._open_timeout,
            ping_interval=self._keepalive,
            ping_timeout=self._keepalive,
            close_timeout=2.0,
        ) as ws:
            self._ws = ws
            self.status = ConnectionStatus.CONNECTED
            await self._listener.on_feed_event(FeedEvent(FeedEventKind.CONNECTED, reason=f"connected to {self.url}"))
            return await self._read(ws)

    async def _read(self, ws: ClientConnection) -> str:
        self._live = False
        self._waiting = []
        subscribed: set[str] = set()
        await ws.send(json.dumps(subscribe_private_command(1, self._market_tickers)))
        # A subscription the exchange never confirms would leave the account unreconciled: drop and retry.
        loop = asyncio.get_running_loop()
        closing: list[asyncio.Task[None]] = []

        def give_up() -> None:
            if self._reconciling is None:
                closing.append(loop.create_task(ws.close()))

        overdue = loop.call_later(self._subscribe_timeout, give_up)
        try:
            async for frame in ws:
                try:
                    message = parse_message(frame)
                    private = parse_private_frame(message.raw) if isinstance(message, OtherMessage) else None
                except MalformedMessage as exc:
                    self.counters.malformed_frames += 1
                    logger.warning("malformed private frame ignored: %s", exc)
                    continue
                if private is not None:
                    self.counters.messages_received += 1
                    if self._live:
                        await self._listener.on_private_message(private)
                    else:
                        self._waiting.append(private)
                elif isinstance(message, Subscribed) and message.channel in PRIVATE_CHANNELS:
                    subscribed.add(message.channel)
                    if subscribed == set(PRIVATE_CHANNELS) and self._reconciling is None:
                        self._backoff.reset()
                        await self._listener.on_feed_event(
                            FeedEvent(FeedEventKind.SUBSCRIBED, reason=f"subscribed to {', '.join(PRIVATE_CHANNELS)}")
                        )
                        self._reconciling = asyncio.get_running_loop().create_task(self._go_live(ws))
                elif isinstance(message, ErrorReply):
                    reason = f"the exchange refused the private subscription: error {message.code} ({message.msg})"
                    await self._listener.on_feed_event(FeedEvent(FeedEventKind.NOTICE, reason=reason, level="error"))
                    return reason
        finally:
            overdue.cancel()
        if closing:
            missing = ", ".join(c for c in PRIVATE_CHANNELS if c not in subscribed)
            return f"the exchange did not confirm the subscription to {missing} within {self._subscribe_timeout:g} s"
        return "connection closed"

    async def _go_live(self, ws: ClientConnection) -> None:
        """Reconcile, then deliver what waited, then let messages through. A failed reconcile drops the
        connection: the next one reconciles again, after back-off."""
        try:
            await self.reconcile()
        except (KalshiRestError, TradingRefused) as exc:
            # After a TradingRefused, run() checks the rules before connecting again and raises it.
            await self._listener.on_feed_event(
                FeedEvent(FeedEventKind.NOTICE, reason=f"reconcile failed: {exc}", level="error")
            )
            await ws.close()
            return
        await self._deliver_waiting()
        self._live = True  # no await between the queue running dry and this: nothing can slip in between

    async def _stop_reconciling(self) -> None:
        task, self._reconciling = self._reconciling, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._live = False
