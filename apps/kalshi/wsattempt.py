"""One WebSocket connection to Kalshi, as both feed clients run it: why it ended, in words, and the one end
that retrying cannot help (the exchange refused the credentials)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from apps.kalshi.feed import FeedEvent, FeedEventKind, HandshakeRejected


async def connection_attempt(
    open_and_read: Callable[[], Awaitable[str]],
    *,
    on_feed_event: Callable[[FeedEvent], Awaitable[None]],
    closing: asyncio.Event,
) -> str:
    """Run ``open_and_read`` (connect, then read until the connection ends; returns why it ended) and return
    why the connection ended. A handshake answered 401/403 is told as a FATAL event, sets ``closing`` (no
    reconnect) and raises HandshakeRejected."""
    try:
        return await open_and_read()
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            reason = f"the exchange refused the handshake with HTTP {status}: check the API key id and private key"
            await on_feed_event(FeedEvent(FeedEventKind.FATAL, reason=reason, level="error"))
            closing.set()
            raise HandshakeRejected(reason) from None
        return f"handshake failed with HTTP {status}"
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        return f"cannot connect: {type(exc).__name__}: {exc}"
    except ConnectionClosed as exc:
        return close_reason(exc)


def close_reason(exc: ConnectionClosed) -> str:
    if exc.rcvd is not None:
        return f"closed by the exchange (code {exc.rcvd.code}{': ' + exc.rcvd.reason if exc.rcvd.reason else ''})"
    return "dropped without a close frame"
