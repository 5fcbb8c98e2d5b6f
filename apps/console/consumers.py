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

from apps.kalshi.environments import Environment
from apps.trader import control
from apps.trader.control import (
    CONTROL_ACTIONS,
    ControlError,
    Shard,
    control_message,
    control_request,
    layer_send,
    route,
)
from apps.trader.selectors import console_history, sessions_live

logger = logging.getLogger(__name__)

MAX_CLIENT_MESSAGE = 4096


class ConsoleConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    group = settings.CONSOLE_GROUP

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting: dict[str, asyncio.Task[None]] = {}
        """Control requests sent to a trader, by request id: each a timer that reports "no trader answered"."""

    async def connect(self) -> None:
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        # The newcomer alone gets the story so far, read from the rows the trader wrote.
        await self.send_json({"type": "history_replay", "data": await database_sync_to_async(console_history)()})

    async def disconnect(self, code: int) -> None:
        for timer in self._awaiting.values():
            timer.cancel()
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Bad input from a browser gets an error reply; it never kills the consumer.
        if text_data is None or len(text_data) > MAX_CLIENT_MESSAGE:
            await self._reply_error("send JSON text messages of at most 4096 characters")
            return
        try:
            content = json.loads(text_data)
        except ValueError:
            await self._reply_error("message is not valid JSON")
            return
        if not isinstance(content, dict):
            await self._reply_error("message must be a JSON object with a 'type'")
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict[str, Any], **kwargs: Any) -> None:
        kind = content.get("type")
        if kind == "ping":
            await self.send_json({"type": "pong", "data": {}})
        elif kind == "request_history":
            await self.send_json({"type": "history_replay", "data": await database_sync_to_async(console_history)()})
        elif kind in CONTROL_ACTIONS:
            await self._control(kind, content.get("markets"), content.get("session"))
        else:
            await self._reply_error(
                f"unknown message type {kind!r}; expected ping, request_history, add_markets or remove_markets"
            )

    async def _control(self, action: str, markets: Any, session: Any = None) -> None:
        # Changing what a real-money trader watches needs a staff login; the loopback simulator does not.
        user = self.scope.get("user")
        if settings.ENVIRONMENT != Environment.SIM and not (user is not None and user.is_staff):
            await self._reply_error(f"{action} needs a staff login outside sim")
            return
        try:
            action, tickers = control_request(action, markets)
            if session is not None and (not isinstance(session, int) or isinstance(session, bool)):
                raise ControlError("'session' must be a session id (an integer)")
            shards = [
                Shard(row.pk, row.control_address, tuple(row.markets))
                for row in await database_sync_to_async(sessions_live)()
            ]
            routing = route(action, tickers, shards, session)
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
            await self._ask(shard, action, shard_tickers)

    async def _ask(self, shard: Shard, action: str, tickers: list[str]) -> None:
        """Send one trader a request and wait (in the background) for its answer."""
        request_id = uuid.uuid4().hex
        message = control_message(action, tickers, request_id=request_id, reply_channel=self.channel_name)
        try:
            await layer_send(self.channel_layer, shard.address, message)
        except Exception as exc:  # the channel layer is down: say so instead of pretending
            logger.warning("control request to session %s not sent: %s", shard.session_id, exc)
            await self._reply_error(f"could not reach the trader of session {shard.session_id}: {exc}")
            return
        self._awaiting[request_id] = asyncio.create_task(self._no_answer(request_id, shard.session_id, action, tickers))
        await self.send_json(
            {
                "type": "control_sent",
                "data": {
                    "action": action,
                    "markets": tickers,
                    "session_id": shard.session_id,
                    "request_id": request_id,
                },
            }
        )

    async def _no_answer(self, request_id: str, session_id: int, action: str, tickers: list[str]) -> None:
        timeout = control.REPLY_TIMEOUT
        await asyncio.sleep(timeout)
        self._awaiting.pop(request_id, None)
        await self.send_json(
            {
                "type": "error",
                "data": {
                    "message": f"no trader answered: {action} {', '.join(tickers)} sent to session {session_id} "
                    f"got no reply within {timeout:g} s",
                    "request_id": request_id,
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

    async def _reply_error(self, message: str) -> None:
        await self.send_json({"type": "error", "data": {"message": message}})

    # Handlers for channel-layer events ``trader.<kind>``; each forwards ``{"type": kind, "data": ...}``.

    async def trader_state_transition(self, event: dict[str, Any]) -> None:
        await self._forward("state_transition", event)

    async def trader_trader_status(self, event: dict[str, Any]) -> None:
        await self._forward("trader_status", event)

    async def trader_orderbook(self, event: dict[str, Any]) -> None:
        await self._forward("orderbook", event)

    async def trader_console(self, event: dict[str, Any]) -> None:
        await self._forward("console", event)

    async def _forward(self, kind: str, event: dict[str, Any]) -> None:
        message: dict[str, Any] = {"type": kind, "data": event["data"]}
        if "seq" in event:
            message["seq"] = event["seq"]  # lets the browser count events the channel layer dropped
        await self.send_json(message)
