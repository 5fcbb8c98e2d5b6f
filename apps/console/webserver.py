"""Daphne with the limits a web app open to browsers needs; serves the embedded trader and web workers.

Plain Daphne holds a request whose body never completes until Twisted's 60 s idle timeout (for ever if a
byte trickles in now and then), buffers without limit what a console does not read, and drops a socket
that sends an oversized frame without a close frame. Those live below the ASGI app, so they are set here:

- a request must arrive whole (line, headers, body) within ``request_timeout`` seconds, else 408 and close;
- a WebSocket whose unsent output passes ``max_unsent_bytes`` is closed with 4009 (the console reconnects);
- a WebSocket client that has sent more than MAX_QUEUED_MESSAGES the app has not taken yet is closed with 4008;
- a frame over the message limit, or invalid UTF-8, is answered with a close frame (1009 / 1007).

``python -m apps.console.webserver [daphne options] trader_v3.asgi:application`` runs a web worker with
them; it takes every ``daphne`` option plus ``--request-timeout`` and ``--max-unsent-bytes``.
"""

from __future__ import annotations

import logging
import sys
import time
from functools import partial
from typing import Any

# daphne.cli imports daphne.server first, which installs Twisted's asyncio reactor before anything else can.
from daphne.cli import CommandLineInterface
from daphne.http_protocol import WebRequest
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol

from apps.console.limits import CLOSE_ABUSE, CLOSE_TOO_SLOW

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
"""Seconds from a request's first line until its body is complete."""
IDLE_TIMEOUT = 20
"""Seconds a connection may sit without sending a byte (Twisted's default is 60)."""
MAX_UNSENT_BYTES = 1024 * 1024
"""Output queued for one WebSocket that its client has not read yet."""
MAX_MESSAGE_BYTES = 64 * 1024
"""A console message is a few hundred bytes; the consumer refuses anything over 4096 characters anyway."""
MAX_QUEUED_MESSAGES = 32
"""Messages from one client waiting for the app; a console sends one every few seconds."""


def unsent_bytes(transport: Any) -> int:
    """Bytes written to a Twisted TCP transport that the kernel has not taken yet (0 when unknown)."""
    buffered = len(getattr(transport, "dataBuffer", b"")) - int(getattr(transport, "offset", 0))
    return buffered + int(getattr(transport, "_tempDataLen", 0))


class ConsoleWebSocketProtocol(WebSocketProtocol):  # type: ignore[misc]
    """Daphne's WebSocket protocol with bounds on what a client may leave unread and unanswered."""

    flooded = False

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.flooded:
            return
        if self.application_queue.qsize() >= MAX_QUEUED_MESSAGES:
            self.flooded = True
            logger.warning("closing a WebSocket from %s: it sends faster than it is answered", self.client_addr)
            self.sendClose(code=CLOSE_ABUSE, reason="too many messages")
            return
        super().onMessage(payload, isBinary)

    def serverSend(self, content: str | bytes, binary: bool = False) -> None:
        if self.state in (self.STATE_CLOSING, self.STATE_CLOSED):
            return  # what the app still sends after a close has nowhere to go
        super().serverSend(content, binary)
        unsent = unsent_bytes(self.transport)
        if unsent > self.server.max_unsent_bytes:
            logger.warning("closing a WebSocket from %s: %d bytes sent to it are unread", self.client_addr, unsent)
            # The close frame queues behind the unread data; autobahn drops the connection if no reply comes.
            self.sendClose(code=CLOSE_TOO_SLOW, reason="too slow: output not read")


class ConsoleServer(Server):  # type: ignore[misc]
    def __init__(
        self,
        *args: Any,
        request_timeout: float = REQUEST_TIMEOUT,
        max_unsent_bytes: int = MAX_UNSENT_BYTES,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("websocket_max_message_size", MAX_MESSAGE_BYTES)
        kwargs.setdefault("websocket_max_frame_size", MAX_MESSAGE_BYTES)
        self.request_timeout = request_timeout
        self.max_unsent_bytes = max_unsent_bytes
        self._then_ready = kwargs.pop("ready_callable", None)
        super().__init__(*args, ready_callable=self._configure_factories, **kwargs)

    def _configure_factories(self) -> None:
        # Server.run has built its factories and not started the reactor yet: nothing is connected.
        self.http_factory.timeOut = IDLE_TIMEOUT
        # Fail a bad frame with a close frame (1009, 1007, ...) instead of dropping the TCP connection.
        self.ws_factory.setProtocolOptions(failByDrop=False)
        self.ws_factory.protocol = ConsoleWebSocketProtocol
        if self._then_ready is not None:
            self._then_ready()

    def timeout_checker(self) -> None:
        """Every 2 s (Daphne's timer): answer 408 to requests that have not arrived whole in time."""
        now = time.time()
        for protocol, details in list(self.connections.items()):
            arrived = hasattr(protocol, "request_start")  # Daphne stamps it once the body is complete
            if isinstance(protocol, WebRequest) and not arrived and now - details["connected"] > self.request_timeout:
                transport = protocol.channel.transport if protocol.channel else None
                if transport is not None:
                    transport.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    transport.loseConnection()
        super().timeout_checker()


class ConsoleCommandLine(CommandLineInterface):  # type: ignore[misc]
    """``daphne``'s command line, serving with ConsoleServer."""

    def __init__(self) -> None:
        super().__init__()
        self.parser.add_argument(
            "--request-timeout",
            type=float,
            default=REQUEST_TIMEOUT,
            help=f"Seconds for a request to arrive whole, else 408 (default {REQUEST_TIMEOUT:g})",
        )
        self.parser.add_argument(
            "--max-unsent-bytes",
            type=int,
            default=MAX_UNSENT_BYTES,
            help=f"Close a WebSocket whose unread output passes this (default {MAX_UNSENT_BYTES})",
        )
        self.parser.set_defaults(
            websocket_max_message_size=MAX_MESSAGE_BYTES, websocket_max_frame_size=MAX_MESSAGE_BYTES
        )

    def run(self, args: list[str]) -> None:
        options = self.parser.parse_args(args)
        self.server_class = partial(
            ConsoleServer, request_timeout=options.request_timeout, max_unsent_bytes=options.max_unsent_bytes
        )
        super().run(args)


if __name__ == "__main__":
    ConsoleCommandLine().run(sys.argv[1:])
