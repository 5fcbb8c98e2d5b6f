"""Runtime control of running traders over the channel layer: add and remove markets, request and reply.

Every trader listens on its own channel (its *control address*, recorded on its TradingSession row). A
console picks the one trader a request is for (``route``), sends it ``trader.control`` with a request id
and its own reply channel, and the trader answers ``trader.control_result`` once the exchange has accepted
or refused each ticker. A trader that does not answer within ``REPLY_TIMEOUT`` is reported as such.

Which trader a request goes to (several traders, "shards", may share one channel layer and database):
- a request may name a session (``"session": 12``): it goes there if that trader is live, else it fails;
- ``remove_markets``: each ticker goes to the live trader that watches it;
- ``add_markets``: a ticker some live trader already watches is refused; the rest go to the only live
  trader, else to the live trader with the fewest markets (the oldest session on a tie).
Live means a running session whose heartbeat is fresher than TRADER_HEARTBEAT_STALE_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from channels.exceptions import ChannelFull

from apps.kalshi.backoff import Backoff
from apps.kalshi.tickers import InvalidTicker, normalize_ticker
from apps.trader.core.coordinator import Coordinator

logger = logging.getLogger(__name__)

CONTROL_ACTIONS = ("add_markets", "remove_markets")
MAX_MARKETS_PER_COMMAND = 100
CONTROL_MESSAGE = "trader.control"
RESULT_MESSAGE = "trader.control_result"
REPLY_TIMEOUT = 8.0
"""Seconds a console waits for a trader's answer; a trader waits at most CoordinatorOptions.control_wait (5 s)
for the exchange, so a live trader always answers within this."""
_PROBE = "trader.control_probe"


class ControlError(ValueError):
    """A control request that cannot be applied; the text says why."""


def control_request(action: object, markets: object) -> tuple[str, list[str]]:
    """Validate a request: (action, normalised tickers without repeats), or ControlError."""
    if action not in CONTROL_ACTIONS:
        raise ControlError(f"unknown action {action!r}; expected one of {', '.join(CONTROL_ACTIONS)}")
    if not isinstance(markets, list) or not markets or len(markets) > MAX_MARKETS_PER_COMMAND:
        raise ControlError(f"'markets' must be a list of 1 to {MAX_MARKETS_PER_COMMAND} tickers")
    try:
        tickers = list(dict.fromkeys(normalize_ticker(ticker) for ticker in markets))
    except InvalidTicker as exc:
        raise ControlError(str(exc)) from None
    assert isinstance(action, str)
    return action, tickers


def control_message(action: str, markets: list[str], *, request_id: str, reply_channel: str) -> dict[str, Any]:
    """The channel-layer message that asks one trader to act."""
    return {
        "type": CONTROL_MESSAGE,
        "action": action,
        "markets": markets,
        "request_id": request_id,
        "reply_channel": reply_channel,
    }


# ---------------------------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class Shard:
    """A live trader as its session row describes it."""

    session_id: int
    address: str
    markets: tuple[str, ...]


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


# ---------------------------------------------------------------------------------------------- the trader


class ControlListener:
    """The trader's side: receives requests on its own channel, applies them, answers each one.

    The channel layer may fail under it (a Redis restart, a timeout): the listener says so in the console,
    retries with back-off and says when it listens again. It never ends by itself; anything unexpected
    propagates to the coordinator's supervisor, which puts the trader in ``error`` and restarts it.
    """

    def __init__(self, coordinator: Coordinator, channel_layer: Any, address: str, *, backoff: Backoff | None = None):
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
        data: dict[str, Any] = {"action": message.get("action"), "requested": message.get("markets")}
        try:
            action, tickers = control_request(message.get("action"), message.get("markets"))
        except ControlError as exc:
            self.coordinator.console("warning", f"CONTROL: request refused: {exc}")
            data["error"] = str(exc)
        else:
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
                logger.exception("control request %s failed", request_id)
                data["error"] = f"the trader failed to apply it: {type(exc).__name__}: {exc}"
                self.coordinator.console("error", f"CONTROL: {action} {', '.join(tickers)} failed", data["error"])
        data["session_id"] = self.coordinator.session_id
        if not isinstance(reply_channel, str) or not reply_channel:
            return  # nobody to answer: the console lines above are the record
        try:
            await layer_send(
                self.layer, reply_channel, {"type": RESULT_MESSAGE, "request_id": request_id, "data": data}
            )
            self.answered += 1
        except Exception as exc:
            if not _is_layer_error(exc):
                raise
            self.coordinator.console("warning", f"CONTROL: could not answer request {request_id}: {exc}")


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
