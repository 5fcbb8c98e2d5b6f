"""A small HTTP/1.1 server on asyncio and h11 for the exchange's REST API: every method, request bodies, keep-alive.

The WebSocket library answers only bodiless requests, and Kalshi's order API needs POST and DELETE with JSON
bodies, so REST has a listener of its own. h11 does the HTTP/1.1 parsing and framing (it is what httpx's
own transport uses); this module only moves bytes and calls the handler once per complete request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
from websockets.datastructures import Headers

logger = logging.getLogger(__name__)

MAX_BODY = 1_048_576
"""Bytes a request body may have; a larger one gets 413 and the connection is closed."""
READ_SIZE = 65_536


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    """Without the query string."""
    query: str
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class HttpServer:
    """Serves ``handler`` on ``host``:``port`` (0 picks a free port): ``await start()``, ``await stop()``."""

    def __init__(self, handler: Handler, host: str, port: int = 0, *, max_body: int = MAX_BODY) -> None:
        self._handler = handler
        self._host = host
        self._requested_port = port
        self._max_body = max_body
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._requested_port)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the HTTP server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._connections):
            writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=16_384)
        try:
            while True:
                try:
                    request = await self._read_request(connection, reader)
                except _BadRequest as exc:
                    await self._send(connection, writer, HttpResponse(exc.status, _error(str(exc))), close=True)
                    return
                if request is None:
                    return  # the client closed the connection between requests
                try:
                    response = await self._handler(request)
                except Exception:
                    logger.exception("REST: %s %s failed", request.method, request.path)
                    response = HttpResponse(500, _error("internal error"))
                await self._send(connection, writer, response)
                if connection.our_state is h11.MUST_CLOSE or connection.their_state is h11.MUST_CLOSE:
                    return
                connection.start_next_cycle()
        except (ConnectionError, h11.LocalProtocolError, asyncio.IncompleteReadError):
            return
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read_request(self, connection: h11.Connection, reader: asyncio.StreamReader) -> HttpRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as exc:
                raise _BadRequest(exc.error_status_hint, f"malformed request: {exc}") from None
            if event is h11.NEED_DATA:
                data = await reader.read(READ_SIZE)
                if not data and head is None and not body and connection.their_state is h11.IDLE:
                    return None
                connection.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
                length = dict(event.headers).get(b"content-length")
                if length is not None and length.isdigit() and int(length) > self._max_body:
                    raise _BadRequest(413, f"request body over {self._max_body} bytes")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self._max_body:
                    raise _BadRequest(413, f"request body over {self._max_body} bytes")
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = urlsplit(head.target.decode("ascii", "replace"))
                headers = Headers([(name.decode("latin-1"), value.decode("latin-1")) for name, value in head.headers])
                return HttpRequest(head.method.decode("ascii"), target.path, target.query, headers, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None

    @staticmethod
    async def _send(
        connection: h11.Connection, writer: asyncio.StreamWriter, response: HttpResponse, *, close: bool = False
    ) -> None:
        headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body)))]
        if close:
            headers.append(("Connection", "close"))
        writer.write(connection.send(h11.Response(status_code=response.status, headers=headers)) or b"")
        writer.write(connection.send(h11.Data(data=response.body)) or b"")
        writer.write(connection.send(h11.EndOfMessage()) or b"")
        await writer.drain()


def _error(message: str) -> bytes:
    """Kalshi's wrapped error shape."""
    return json.dumps({"error": {"code": "bad_request", "message": message, "details": ""}}).encode()
