"""The console's WebSocket: history first, then the trader's live events."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError

from apps.console import limits, presence
from apps.console.access import may_watch
from apps.console.views import CONSOLE_PAGE_SIZE
from apps.kalshi.environments import Environment
from apps.kalshi.tokenbucket import TokenBucket
from apps.trader import control
from apps.trader.control import (
    MARKET_ACTIONS,
    TRADING_ACTIONS,
    ControlError,
    Shard,
    control_message,
    control_request,
    layer_send,
    order_id_request,
    route,
    route_trading,
    trading_message,
)
from apps.trader.selectors import (
    MARKET_FILTER_MAX,
    MarketQueryError,
    console_history,
    market_history,
    market_page,
    page_request,
    sessions_live,
    without_depth,
)

logger = logging.getLogger(__name__)


class ConsoleConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    group = settings.CONSOLE_GROUP
    closing = False
    """Set once this side has closed the socket: nothing more is sent or answered."""
    counted = False
    """Whether this socket is in the process's count of connected consoles (from accept to disconnect)."""
    watched: str | None = None
    """The market whose levels this console shows (``watch_market``); other books reach it as tops only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting: dict[str, asyncio.Task[None]] = {}
        """Control requests sent to a trader, by request id: each a timer that reports "no trader answered"."""
        self._last_seqs: dict[str, int] = {}
        """The last live event number seen from each trader (its broadcaster's origin)."""

    async def connect(self) -> None:
        if not may_watch(self.scope.get("user")):
            await self.close()  # before accept: the handshake is refused with 403
            return
        self.history_requests = TokenBucket(limits.HISTORY_BURST, limits.HISTORY_PER_SECOND)
        self.page_requests = TokenBucket(limits.PAGE_BURST, limits.PAGE_PER_SECOND)
        self.messages = TokenBucket(limits.MESSAGE_BURST, limits.MESSAGE_PER_SECOND)
        self.refusals = TokenBucket(limits.REFUSAL_BURST, limits.REFUSAL_PER_SECOND)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        self.counted = True
        presence.console_joined()
        # The newcomer alone gets the story so far, read from the rows the trader wrote.
        await self._send_history()

    async def _send_history(self) -> None:
        try:
            history = await database_sync_to_async(console_history)()
        except DatabaseError as exc:
            # Live events still flow through the channel layer; only the story so far is missing.
            await self.send_json(
                {
                    "type": "error",
                    "data": {"message": f"history unavailable: database unreachable ({type(exc).__name__})"},
                }
            )
            return
        await self.send_json({"type": "history_replay", "data": history})

    async def disconnect(self, code: int) -> None:
        if self.counted:
            self.counted = False
            presence.console_left()
        for timer in self._awaiting.values():
            timer.cancel()
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False) -> None:
        # Once we have closed a socket, events that were already on their way are dropped, not sent.
        if self.closing:
            return
        await super().send(text_data=text_data, bytes_data=bytes_data, close=close)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Bad input from a browser gets an error reply; it never kills the consumer. Persistent abuse closes it.
        if self.closing:
            return
        if not self.messages.take():
            await self._refuse("too many messages; slow down")
            return
        if text_data is None or len(text_data) > limits.MAX_CLIENT_MESSAGE:
            await self._refuse(f"send JSON text messages of at most {limits.MAX_CLIENT_MESSAGE} characters")
            return
        try:
            content = json.loads(text_data)
        except RecursionError:
            await self._refuse("message is nested too deeply")
            return
        except ValueError:
            await self._refuse("message is not valid JSON")
            return
        if not isinstance(content, dict):
            await self._refuse("message must be a JSON object with a 'type'")
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        kind = content.get("type")
        if kind == "ping":
            await self.send_json({"type": "pong", "data": {}})
        elif kind == "request_history":
            if not self.history_requests.take():
                wait = self.history_requests.seconds_until_next()
                await self._refuse(f"too many history requests; try again in {wait:.0f} s")
                return
            await self._send_history()
        elif kind == "request_markets":
            await self._send_markets(content)
        elif kind == "watch_market":
            await self._watch_market(content.get("market"))
        elif kind in MARKET_ACTIONS:
            await self._control(kind, content.get("markets"), content.get("session"))
        elif kind in TRADING_ACTIONS:
            await self._trading_control(kind, content)
        else:
            await self._refuse(
                f"unknown message type {kind!r}; expected ping, request_history, request_markets, "
                "watch_market, add_markets, remove_markets, cancel_order or kill_switch"
            )

    async def _send_markets(self, content: dict[str, Any]) -> None:
        """One page of the watched markets with their tops of book, as the page's filter and pager ask."""
        if not self.page_requests.take():
            wait = self.page_requests.seconds_until_next()
            await self._refuse(f"too many market requests; try again in {wait:.1f} s")
            return
        try:
            filter_text, offset, limit = page_request(
                filter_text=content.get("filter", ""),
                offset=content.get("offset", 0),
                limit=content.get("limit", CONSOLE_PAGE_SIZE),
            )
        except MarketQueryError as exc:
            await self._refuse(f"request_markets: {exc}")
            return
        try:
            page = await database_sync_to_async(market_page)(filter_text=filter_text, offset=offset, limit=limit)
        except DatabaseError as exc:
            await self._reply_error(f"markets unavailable: database unreachable ({type(exc).__name__})")
            return
        await self.send_json({"type": "markets_page", "data": page})

    async def _watch_market(self, ticker: Any) -> None:
        """Follow one market's levels from now on and send its story so far; None stops following."""
        if ticker is not None and (not isinstance(ticker, str) or not 0 < len(ticker) <= MARKET_FILTER_MAX):
            await self._refuse(f"watch_market: 'market' must be a ticker of at most {MARKET_FILTER_MAX} characters")
            return
        # The same budget as market pages: both are a click away and each reads a bounded slice of rows.
        if not self.page_requests.take():
            wait = self.page_requests.seconds_until_next()
            await self._refuse(f"too many market requests; try again in {wait:.1f} s")
            return
        self.watched = ticker
        if ticker is None:
            return
        try:
            history = await database_sync_to_async(market_history)(ticker=ticker)
        except DatabaseError as exc:
            await self._reply_error(f"market history unavailable: database unreachable ({type(exc).__name__})")
            return
        await self.send_json({"type": "market_history", "data": history})

    async def _may_control(self, action: str) -> bool:
        """Changing a real-money trader needs a staff login, checked again at each request (staff rights can be
        withdrawn while a socket is open); the loopback simulator needs none. A refusal is answered here."""
        if settings.ENVIRONMENT == Environment.SIM:
            return True
        user = self.scope.get("user")
        try:
            if user is not None and user.is_staff and await database_sync_to_async(_still_staff)(user.pk):
                return True
        except DatabaseError as exc:
            await self._reply_error(
                f"{action}: login not checked: database unreachable ({type(exc).__name__})", action=action
            )
            return False
        await self._reply_error(f"{action} needs a staff login outside sim", action=action)
        return False

    async def _live_shards(self) -> list[Shard]:
        return [
            Shard(row.pk, row.control_address, tuple(row.markets), _trades(row.latest_status))
            for row in await database_sync_to_async(sessions_live)()
            if row.control_address  # a trader takes requests only where its session says
        ]

    async def _control(self, action: str, markets: Any, session: Any = None) -> None:
        if not await self._may_control(action):
            return
        try:
            action, tickers = control_request(action, markets)
            routing = route(action, tickers, await self._live_shards(), _session_id(session))
        except ControlError as exc:
            await self._reply_error(str(exc))
            return
        if routing.refused:
            done_key = "added" if action == "add_markets" else "removed"
            await self._send_result(
                {
                    "action": action,
                    "requested": list(routing.refused),
                    done_key: [],
                    "refused": routing.refused,
                    "pending": [],
                    "session_id": None,
                }
            )
        for shard, shard_tickers in routing.targets:
            request_id = uuid.uuid4().hex
            message = control_message(action, shard_tickers, request_id=request_id, reply_channel=self.channel_name)
            await self._ask(shard, message, {"markets": shard_tickers}, f"{action} {', '.join(shard_tickers)}")

    async def _trading_control(self, action: str, content: dict[str, Any]) -> None:
        """``cancel_order`` (``order_id``, optional ``session``) or ``kill_switch`` (optional ``session``)."""
        if not await self._may_control(action):
            return
        try:
            order_id = order_id_request(content.get("order_id")) if action == "cancel_order" else None
            targets = route_trading(action, await self._live_shards(), _session_id(content.get("session")))
        except ControlError as exc:
            await self._reply_error(str(exc), action=action)
            return
        except DatabaseError as exc:
            await self._reply_error(
                f"{action}: no trader found: database unreachable ({type(exc).__name__})", action=action
            )
            return
        user = self.scope.get("user")
        name = user.get_username() if user is not None and user.is_authenticated else ""
        reason = f"from the console by {name}" if name else "from the console"
        about = f"cancel_order {order_id}" if order_id is not None else action
        for shard in targets:
            message = trading_message(
                action, reason=reason, order_id=order_id, request_id=uuid.uuid4().hex, reply_channel=self.channel_name
            )
            await self._ask(shard, message, {"order_id": order_id} if order_id is not None else {}, about)

    async def _ask(self, shard: Shard, message: dict[str, Any], sent: dict[str, Any], about: str) -> None:
        """Send one trader a request (``message``), say so with ``sent`` and wait in the background for its answer;
        ``about`` names the request in a "no answer" error."""
        action, request_id = message["action"], message["request_id"]
        try:
            await layer_send(self.channel_layer, shard.address, message)
        except Exception as exc:  # the channel layer is down: say so instead of pretending
            logger.warning("control request to session %s not sent: %s", shard.session_id, exc)
            await self._reply_error(f"could not reach the trader of session {shard.session_id}: {exc}", action=action)
            return
        self._awaiting[request_id] = asyncio.create_task(self._no_answer(request_id, shard.session_id, action, about))
        await self.send_json(
            {
                "type": "control_sent",
                "data": {"action": action, **sent, "session_id": shard.session_id, "request_id": request_id},
            }
        )

    async def _no_answer(self, request_id: str, session_id: int, action: str, about: str) -> None:
        timeout = control.reply_timeout(action)
        await asyncio.sleep(timeout)
        self._awaiting.pop(request_id, None)
        await self.send_json(
            {
                "type": "error",
                "data": {
                    "message": f"no trader answered: {about} sent to session {session_id} "
                    f"got no reply within {timeout:g} s",
                    "request_id": request_id,
                    "action": action,
                },
            }
        )

    async def trader_control_result(self, event: dict[str, Any]) -> None:
        """A trader's answer to one of this console's requests."""
        timer = self._awaiting.pop(str(event.get("request_id")), None)
        if timer is not None:
            timer.cancel()
        await self._send_result({**event["data"], "request_id": event.get("request_id")})

    async def _send_result(self, data: dict[str, Any]) -> None:
        await self.send_json({"type": "control_result", "data": data})

    async def _reply_error(self, message: str, *, action: str | None = None) -> None:
        """An error reply; ``action`` names the control request it answers, for the panel that sent it."""
        data: dict[str, Any] = {"message": message}
        if action is not None:
            data["action"] = action
        await self.send_json({"type": "error", "data": data})

    async def _refuse(self, message: str) -> None:
        """Answer a refused message with an error; a client that keeps sending them is cut off."""
        if self.refusals.take():
            await self._reply_error(message)
            return
        logger.warning("closing a console socket from %s: too many refused messages", self.scope.get("client"))
        await self.send_json({"type": "error", "data": {"message": "too many refused messages; closing"}})
        await self.close(code=limits.CLOSE_ABUSE)
        self.closing = True

    # Handlers for channel-layer events ``trader.<kind>``; each forwards ``{"type": kind, "data": ...}``.

    async def trader_state_transition(self, event: dict[str, Any]) -> None:
        await self._forward("state_transition", event)

    async def trader_trader_status(self, event: dict[str, Any]) -> None:
        await self._forward("trader_status", event)

    async def trader_orderbooks(self, event: dict[str, Any]) -> None:
        # Levels only for the market this console watches: the rest of the batch goes as tops.
        data = event["data"]
        books = data.get("books") if isinstance(data, dict) else None
        if isinstance(books, list):
            watched = self.watched
            books = [
                book if not isinstance(book, dict) or book.get("market_ticker") == watched else without_depth(book)
                for book in books
            ]
            event = {**event, "data": {**data, "books": books}}
        await self._forward("orderbooks", event)

    async def trader_console(self, event: dict[str, Any]) -> None:
        await self._forward("console", event)

    async def _forward(self, kind: str, event: dict[str, Any]) -> None:
        self._count_missed(event.get("seq"), event.get("origin"))
        message: dict[str, Any] = {"type": kind, "data": event["data"]}
        for key in ("seq", "origin"):  # lets the browser count, per trader, events the channel layer dropped
            if key in event:
                message[key] = event[key]
        await self.send_json(message)

    def _count_missed(self, seq: Any, origin: Any) -> None:
        """Count, for the metrics, the events of a trader (``origin``) that never reached this socket."""
        if not isinstance(seq, int) or not isinstance(origin, str):
            return
        last = self._last_seqs.get(origin)
        if last is not None and seq > last + 1:
            presence.events_missed(seq - last - 1)
        self._last_seqs[origin] = seq  # a lower number: the trader restarted, counting starts again


def _session_id(session: Any) -> int | None:
    """The session a control request names (None: it names none), or ControlError."""
    if session is not None and (not isinstance(session, int) or isinstance(session, bool)):
        raise ControlError("'session' must be a session id (an integer)")
    return session


def _trades(status: Any) -> bool | None:
    """Whether a trader's latest status says it trades; None before it has written one that tells."""
    trading = status.get("trading") if isinstance(status, dict) else None
    enabled = trading.get("enabled") if isinstance(trading, dict) else None
    return enabled if isinstance(enabled, bool) else None


def _still_staff(user_id: Any) -> bool:
    return get_user_model().objects.filter(pk=user_id, is_active=True, is_staff=True).exists()
