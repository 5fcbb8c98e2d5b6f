"""Runtime control of a running trader over the channel layer: add and remove markets.

The console (or any process on the same channel layer) sends ``trader.control`` messages to one group;
the trader listens on its own loop and applies them to the live subscription.
"""

from __future__ import annotations

import logging
from typing import Any

from apps.kalshi.tickers import InvalidTicker, normalize_ticker
from apps.trader.core.coordinator import Coordinator

logger = logging.getLogger(__name__)

CONTROL_ACTIONS = ("add_markets", "remove_markets")
MAX_MARKETS_PER_COMMAND = 100


class ControlError(ValueError):
    """A control request that cannot be applied; the text says why."""


def control_message(action: str, markets: Any) -> dict[str, Any]:
    """Validate a request and build the channel-layer message for it."""
    if action not in CONTROL_ACTIONS:
        raise ControlError(f"unknown action {action!r}; expected one of {', '.join(CONTROL_ACTIONS)}")
    if not isinstance(markets, list) or not markets or len(markets) > MAX_MARKETS_PER_COMMAND:
        raise ControlError(f"'markets' must be a list of 1 to {MAX_MARKETS_PER_COMMAND} tickers")
    try:
        tickers = list(dict.fromkeys(normalize_ticker(ticker) for ticker in markets))
    except InvalidTicker as exc:
        raise ControlError(str(exc)) from None
    return {"type": "trader.control", "action": action, "markets": tickers}


async def listen_for_control(coordinator: Coordinator, channel_layer: Any, group: str) -> None:
    """Apply control messages sent to ``group`` until cancelled. Bad messages are logged, never fatal."""
    channel = await channel_layer.new_channel()
    await channel_layer.group_add(group, channel)
    try:
        while True:
            message = await channel_layer.receive(channel)
            try:
                request = control_message(message.get("action", ""), message.get("markets"))
                if request["action"] == "add_markets":
                    await coordinator.add_markets(request["markets"])
                else:
                    await coordinator.remove_markets(request["markets"])
            except ControlError as exc:
                coordinator.console("warning", f"CONTROL: request refused: {exc}")
            except Exception:
                logger.exception("control request failed")
    finally:
        await channel_layer.group_discard(group, channel)
