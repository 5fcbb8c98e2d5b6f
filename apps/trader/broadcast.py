"""The bridge from the event bus to the channel layer, awaited on the trader's own loop."""

from __future__ import annotations

import uuid
from typing import Any

from apps.trader.core.eventbus import Event

EVENT_PREFIX = "trader."
"""Channel-layer event types are ``trader.<kind>``, so they never clash with ``websocket.*``."""


def layer_message(event: Event, seq: int | None = None, origin: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": f"{EVENT_PREFIX}{event.kind}", "data": event.data}
    if seq is not None:
        message["seq"] = seq
    if origin is not None:
        message["origin"] = origin
    return message


class ChannelLayerBroadcaster:
    """An event bus subscriber that sends every event to one channel-layer group.

    group_send never reports a message it dropped (a member over capacity, or expired), so every event
    carries a running ``seq``: a console that sees it jump knows how many it missed and says so. Several
    traders (shards) share one group, so each numbers its events under its own ``origin``.
    """

    def __init__(self, channel_layer: Any, group: str, origin: str | None = None) -> None:
        self._layer = channel_layer
        self._group = group
        self.origin = origin or uuid.uuid4().hex[:12]
        self.sent = 0

    async def __call__(self, event: Event) -> None:
        self.sent += 1
        await self._layer.group_send(self._group, layer_message(event, self.sent, self.origin))
