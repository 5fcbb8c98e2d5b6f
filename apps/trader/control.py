"""Runtime control of running traders over the channel layer: markets, order cancels and the kill switch.

Every trader listens on its own channel (its *control address*, recorded on its TradingSession row). A
console picks the trader a request is for (``route`` for markets, ``route_trading`` for orders), sends it
``trader.control`` with a request id and its own reply channel, and the trader answers
``trader.control_result`` once it has acted (the exchange accepted or refused each ticker, the order ended,
the working orders were cancelled). A trader that does not answer within ``reply_timeout(action)`` is
reported as such.

Which trader a request goes to (several traders, "shards", may share one channel layer and database):
- a request may name a session (``"session": 12``): it goes there if that trader is live, else it fails;
- ``remove_markets``: each ticker goes to the live trader that watches it;
- ``add_markets``: a ticker some live trader already watches is refused; the rest go to the only live
  trader, else to the live trader with the fewest markets (the oldest session on a tie);
- ``cancel_order``: to the session named, else to the only live trader that may trade;
- ``kill_switch``: to the session named, else to every live trader that may trade. A trader "may trade"
  unless its latest status says trading is off: a kill switch rather reaches one trader too many (which
  answers that it does not trade) than misses one whose first status is not written yet.
Live means a running session whose heartbeat is fresher than TRADER_HEARTBEAT_STALE_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels.exceptions import ChannelFull

from apps.kalshi.backoff import Backoff
from apps.kalshi.feed import MarketChange
from apps.kalshi.tickers import InvalidTicker, normalize_ticker

logger = logging.getLogger(__name__)

MARKET_ACTIONS = ("add_markets", "remove_markets")
TRADING_ACTIONS = ("cancel_order", "kill_switch")
CONTROL_ACTIONS = MARKET_ACTIONS + TRADING_ACTIONS
MAX_MARKETS_PER_COMMAND = 100
MAX_ORDER_ID = 100
MAX_REASON = 200
CONTROL_MESSAGE = "trader.control"
RESULT_MESSAGE = "trader.control_result"
REPLY_TIMEOUT = 8.0
"""Seconds a console waits for a trader's answer to a market request; a trader waits at most
CoordinatorOptions.control_wait (5 s) for the exchange, so a live trader always answers within this."""
TRADING_REPLY_TIMEOUT = 20.0
"""Seconds a console waits for a cancel or a kill switch: the trader answers once every cancel it sent has
been answered by the exchange, which takes longer than a subscription under load."""
_ORDER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]*")
_PROBE = "trader.control_probe"


class ControlError(ValueError):
    """A control request that cannot be applied; the text says why."""


def reply_timeout(action: str) -> float:
    """Seconds a console waits for a trader's answer to ``action``."""
    return TRADING_REPLY_TIMEOUT if action in TRADING_ACTIONS else REPLY_TIMEOUT


def control_request(action: object, markets: object) -> tuple[str, list[str]]:
    """Validate a market request: (action, normalised tickers without repeats), or ControlError."""
    if action not in MARKET_ACTIONS:
        raise ControlError(f"unknown action {action!r}; expected one of {', '.join(MARKET_ACTIONS)}")
    if not isinstance(markets, list) or not markets or len(markets) > MAX_MARKETS_PER_COMMAND:
        raise ControlError(f"'markets' must be a list of 1 to {MAX_MARKETS_PER_COMMAND} tickers")
    try:
        tickers = list(dict.fromkeys(normalize_ticker(ticker) for ticker in markets))
    except InvalidTicker as exc:
        raise ControlError(str(exc)) from None
    assert isinstance(action, str)
    return action, tickers


def order_id_request(order_id: object) -> str:
    """Validate the order a cancel names (a client or an exchange order id), or ControlError."""
    if not isinstance(order_id, str) or not 0 < len(order_id) <= MAX_ORDER_ID or not _ORDER_ID.fullmatch(order_id):
        raise ControlError(f"'order_id' must be an order id: 1 to {MAX_ORDER_ID} letters, digits, '-', '_', '.' or ':'")
    return order_id


def reason_request(reason: object) -> str:
    """Validate the reason a trading request gives (it becomes the orders' reason and a console line)."""
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON or not reason.isprintable():
        raise ControlError(f"'reason' must be printable text of 1 to {MAX_REASON} characters")
    return reason.strip()


def control_message(action: str, markets: list[str], *, request_id: str, reply_channel: str) -> dict[str, Any]:
    """The channel-layer message that asks one trader to add or remove markets."""
    return {
        "type": CONTROL_MESSAGE,
        "action": action,
        "markets": markets,
        "request_id": request_id,
        "reply_channel": reply_channel,
    }


def trading_message(
    action: str, *, reason: str, request_id: str, reply_channel: str, order_id: str | None = None
) -> dict[str, Any]:
    """The channel-layer message that asks one trader to cancel an order (``order_id``) or pull its kill switch."""
    message: dict[str, Any] = {
        "type": CONTROL_MESSAGE,
        "action": action,
        "reason": reason,
        "request_id": request_id,
        "reply_channel": reply_channel,
    }
    if order_id is not None:
        message["order_id"] = order_id
    return message


# ---------------------------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class Shard:
    """A live trader as its session row describes it."""

    session_id: int
    address: str
    markets: tuple[str, ...]
    trading: bool | None = None
    """Whether its latest status says it trades; None before it has written one."""


@dataclass
class Routing:
    targets: list[tuple[Shard, list[str]]] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    """Tickers no trader is asked about, with the reason."""


def route(action: str, tickers: list[str], shards: Sequence[Shard], session_id: int | None = None) -> Routing:
    """Which live trader gets which tickers (the rule is in this module's docstring)."""
    routing = Routing()
    if session_id is not None:
        chosen = [s for s in shards if s.session_id == session_id]
        if not chosen:
            raise ControlError(f"session {session_id} is not a live trader")
        shards = chosen
    if not shards:
        raise ControlError("no trader is running (no live session with a fresh heartbeat)")
    owner = {ticker: shard for shard in shards for ticker in shard.markets}
    if action == "remove_markets":
        by_shard: dict[int, list[str]] = {}
        for ticker in tickers:
            if ticker in owner:
                by_shard.setdefault(owner[ticker].session_id, []).append(ticker)
            else:
                routing.refused[ticker] = "no live trader watches it"
        routing.targets = [(s, by_shard[s.session_id]) for s in shards if s.session_id in by_shard]
        return routing
    fresh = []
    for ticker in tickers:
        if ticker in owner:
            routing.refused[ticker] = f"already watched by session {owner[ticker].session_id}"
        else:
            fresh.append(ticker)
    if fresh:
        target = min(shards, key=lambda s: (len(s.markets), s.session_id))
        routing.targets = [(target, fresh)]
    return routing


def route_trading(action: str, shards: Sequence[Shard], session_id: int | None = None) -> list[Shard]:
    """Which live traders get a cancel or a kill switch (the rule is in this module's docstring)."""
    if session_id is not None:
        chosen = [s for s in shards if s.session_id == session_id]
        if not chosen:
            raise ControlError(f"session {session_id} is not a live trader")
        if chosen[0].trading is False:
            raise ControlError(f"session {session_id} does not trade")
        return chosen
    if not shards:
        raise ControlError("no trader is running (no live session with a fresh heartbeat)")
    trading = [s for s in shards if s.trading is not False]
    if not trading:
        raise ControlError("no live trader trades")
    if action == "cancel_order" and len(trading) > 1:
        sessions = ", ".join(str(s.session_id) for s in trading)
        raise ControlError(f"several traders trade (sessions {sessions}); name the order's session")
    return trading


# ---------------------------------------------------------------------------------------------- the trader


class ConsoleWriter(Protocol):
    def __call__(self, level: str, message: str, context: str = "") -> None: ...


class Controlled(Protocol):
    """What the listener needs of the trader it controls (the coordinator)."""

    @property
    def session_id(self) -> int | None: ...

    @property
    def console(self) -> ConsoleWriter: ...

    async def add_markets(self, tickers: list[str]) -> MarketChange: ...

    async def remove_markets(self, tickers: list[str]) -> MarketChange: ...

    async def cancel_order(self, order_id: str, reason: str) -> dict[str, Any]: ...

    async def kill_switch(self, reason: str) -> int: ...


class ControlListener:
    """The trader's side: receives requests on its own channel, applies them, answers each one.

    The channel layer may fail under it (a Redis restart, a timeout): the listener says so in the console,
    retries with back-off and says when it listens again. It never ends by itself; anything unexpected
    propagates to the coordinator's supervisor, which puts the trader in ``error`` and restarts it.
    """

    def __init__(self, coordinator: Controlled, channel_layer: Any, address: str, *, backoff: Backoff | None = None):
        self.coordinator = coordinator
        self.layer = channel_layer
        self.address = address
        self.backoff = backoff or Backoff(initial=0.5, cap=15.0)
        self.answered = 0
        self._requests: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            while True:
                try:
                    message = await self.layer.receive(self.address)
                except Exception as exc:
                    if not _is_layer_error(exc):
                        raise
                    await self._wait_for_layer(exc)
                    continue
                if message.get("type") == CONTROL_MESSAGE:
                    task = asyncio.create_task(self._handle(message), name="trader:control-request")
                    self._requests.add(task)
                    task.add_done_callback(self._requests.discard)
        finally:
            for task in list(self._requests):
                task.cancel()

    async def _wait_for_layer(self, error: BaseException) -> None:
        """The channel layer failed: retry with back-off until a probe to our own channel goes through."""
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        self.coordinator.console(
            "warning", f"CONTROL: channel layer unreachable ({reason})", "market control is paused; retrying"
        )
        while True:
            delay = self.backoff.next_delay()
            await asyncio.sleep(delay)
            try:
                await layer_send(self.layer, self.address, {"type": _PROBE})
            except Exception as exc:
                if not _is_layer_error(exc):
                    raise
                logger.info("control: channel layer still unreachable (%s); next try in %.1f s", exc, delay)
                continue
            self.backoff.reset()
            self.coordinator.console("info", "CONTROL: channel layer reachable again; listening for requests")
            return

    async def _handle(self, message: dict[str, Any]) -> None:
        request_id = str(message.get("request_id", ""))[:100]
        reply_channel = message.get("reply_channel")
        if message.get("action") in TRADING_ACTIONS:
            data = await self._trading(message)
        else:
            data = await self._markets(message)
        data["session_id"] = self.coordinator.session_id
        if not isinstance(reply_channel, str) or not reply_channel:
            return  # nobody to answer: the console lines are the record
        try:
            await layer_send(
                self.layer, reply_channel, {"type": RESULT_MESSAGE, "request_id": request_id, "data": data}
            )
            self.answered += 1
        except Exception as exc:
            if not _is_layer_error(exc):
                raise
            self.coordinator.console("warning", f"CONTROL: could not answer request {request_id}: {exc}")

    async def _markets(self, message: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {"action": message.get("action"), "requested": message.get("markets")}
        try:
            action, tickers = control_request(message.get("action"), message.get("markets"))
        except ControlError as exc:
            self.coordinator.console("warning", f"CONTROL: request refused: {exc}")
            data["error"] = str(exc)
            return data
        data["requested"] = tickers
        try:
            if action == "add_markets":
                change = await self.coordinator.add_markets(tickers)
                data["added"] = change.done
            else:
                change = await self.coordinator.remove_markets(tickers)
                data["removed"] = change.done
            data.update(refused=change.refused, pending=change.pending)
        except Exception as exc:  # a bug, not a refusal: the requester and the console both hear of it
            logger.exception("control request %s failed", message.get("request_id"))
            data["error"] = f"the trader failed to apply it: {type(exc).__name__}: {exc}"
            self.coordinator.console("error", f"CONTROL: {action} {', '.join(tickers)} failed", data["error"])
        return data

    async def _trading(self, message: dict[str, Any]) -> dict[str, Any]:
        """A cancel or a kill switch: said in the console first, then done; the answer says how it ended."""
        action = str(message["action"])
        data: dict[str, Any] = {"action": action}
        try:
            reason = reason_request(message.get("reason"))
            order_id = order_id_request(message.get("order_id")) if action == "cancel_order" else None
        except ControlError as exc:
            self.coordinator.console("warning", f"CONTROL: {action} refused: {exc}")
            data["error"] = str(exc)
            return data
        try:
            if order_id is not None:
                data["order_id"] = order_id
                self.coordinator.console("info", f"CONTROL: cancel order {order_id} {reason}")
                data["order"] = await self.coordinator.cancel_order(order_id, reason)
            else:
                self.coordinator.console("warning", f"CONTROL: kill switch {reason}")
                data["cancelled"] = await self.coordinator.kill_switch(reason)
        except ValueError as exc:  # not this trader's order, or a trader that does not trade
            self.coordinator.console("warning", f"CONTROL: {action} refused: {exc}")
            data["error"] = str(exc)
        except Exception as exc:  # a bug or a lost exchange: the requester and the console both hear of it
            logger.exception("control request %s failed", message.get("request_id"))
            data["error"] = f"the trader failed to apply it: {type(exc).__name__}: {exc}"
            self.coordinator.console("error", f"CONTROL: {action} failed", data["error"])
        return data


async def layer_send(layer: Any, channel: str, message: dict[str, Any], *, attempts: int = 3) -> None:
    """``layer.send`` that tries again on a transport error: after a Redis restart each pooled connection
    fails once ("Connection closed by server") before it reconnects, and an answer must not be lost to that."""
    for attempt in range(1, attempts + 1):
        try:
            await layer.send(channel, message)
            return
        except Exception as exc:
            if attempt == attempts or not _is_layer_error(exc) or isinstance(exc, ChannelFull):
                raise
            await asyncio.sleep(0.1 * attempt)


def _is_layer_error(exc: BaseException) -> bool:
    """A failure of the channel layer's transport (redis-py's errors, sockets, timeouts), not a bug here."""
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    return type(exc).__module__.partition(".")[0] == "redis" or isinstance(exc, ChannelFull)
