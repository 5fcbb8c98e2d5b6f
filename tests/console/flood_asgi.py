"""An ASGI app that streams 60 KB messages to every WebSocket as fast as it can: a console that never rests."""

from __future__ import annotations

import asyncio
from typing import Any

MESSAGES, SIZE = 1000, 60_000


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    for _ in range(MESSAGES):
        await send({"type": "websocket.send", "text": "x" * SIZE})
        await asyncio.sleep(0)  # let the reactor write
