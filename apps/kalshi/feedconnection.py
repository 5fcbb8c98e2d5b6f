"""The feed's WebSocket connection: websockets' client connection, with a lean path for the stream's frames.

websockets does the handshake, the closing handshake, pings and pongs, and every frame out of the ordinary;
the whole, unfragmented data frames that make up nearly all of an exchange's stream are taken out of the
received bytes here (``wsframes``) and queued for the reader, which takes them without awaiting one by one.
The order of messages is kept: once a frame goes to websockets' general path (a fragment, say), every
later byte of that connection does too.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import deque
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from apps.kalshi.wsframes import CLOSE_FRAME, Stop, take_data_frames

_END_OF_HEAD = b"\r\n\r\n"
_MAX_HEAD = 64 * 1024
"""A handshake response whose head is longer than this is left to websockets (which refuses it)."""
_NO_LIMIT = 2**63


class _Mode(enum.Enum):
    HANDSHAKE = "handshake"
    LEAN = "lean"
    GENERAL = "general"


class FeedConnection(ClientConnection):
    """A client connection for an exchange's stream; read it with ``frames`` and ``next_frame()``.

    It also notes when any bytes last arrived, pings included: Kalshi pings every 10 s even when a market
    is quiet, so "no bytes at all for a while" is the signal of a dead socket, while "no data messages" is
    only a quiet market.
    """

    last_received: float = 0.0
    max_queued = 4096
    """Frames queued for the reader above which the socket is no longer read (back-pressure); reading
    resumes when the reader has taken them all."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frames: deque[bytes] = deque()
        """Received messages (as bytes) the reader has not taken yet, in order."""
        self._mode = _Mode.HANDSHAKE
        self._pending = b""
        """The bytes of a frame (or of the handshake's head) that has not fully arrived."""
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False

    @property
    def lean(self) -> bool:
        """True while the stream's data frames take the lean path."""
        return self._mode is _Mode.LEAN

    async def next_frame(self) -> bytes:
        """The next message: from ``frames`` when it holds one, else the next to arrive.

        Raises ConnectionClosed, as ``recv`` does, once the connection has ended and every message
        received before has been taken.
        """
        while not self.frames:
            if self._reading_paused:
                self._reading_paused = False
                self.transport.resume_reading()
            if self._mode is not _Mode.LEAN or self.protocol.state is State.CLOSED:
                return await self.recv(decode=False)
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.frames.popleft()

    def data_received(self, data: bytes) -> None:
        self.last_received = time.monotonic()
        if self._mode is _Mode.GENERAL:
            super().data_received(data)
            return
        if self._pending:
            data = self._pending + data
        if self._mode is _Mode.LEAN:
            self._take(data, 0)
        else:
            self._handshake(data)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._wake()

    def _handshake(self, data: bytes) -> None:
        """Hand websockets the response's head alone, so that its parser stands at the first frame."""
        end = data.find(_END_OF_HEAD)
        if end < 0 and len(data) <= _MAX_HEAD:
            self._pending = data
            return
        self._pending = b""
        if end < 0:
            self._to_general(data)
            return
        end += len(_END_OF_HEAD)
        super().data_received(data[:end])
        if self.protocol.state is State.OPEN:
            self._mode = _Mode.LEAN
            self._take(data, end)
        else:
            self._to_general(data[end:])  # a refusal's body, or whatever websockets makes of the rest

    def _take(self, data: bytes, start: int) -> None:
        frames = self.frames
        queued = len(frames)
        max_size = self.protocol.max_message_size or _NO_LIMIT
        pos = start
        while True:
            pos, stop, end = take_data_frames(data, pos, frames.append, max_size)
            if stop is Stop.CONTROL:
                closing = data[pos] == CLOSE_FRAME
                super().data_received(data[pos:end])  # websockets answers pings and closes
                pos = end
                if closing:
                    self._to_general(data[pos:])
                    break
            elif stop is Stop.OTHER:
                self._to_general(data[pos:])
                break
            else:
                self._pending = data[pos:]
                break
        if len(frames) > queued:
            self._wake()
            if len(frames) > self.max_queued and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()

    def _to_general(self, rest: bytes) -> None:
        """From here on websockets reads every byte; the reader gets its messages once ``frames`` is empty."""
        self._mode = _Mode.GENERAL
        self._pending = b""
        self._wake()
        if rest:
            super().data_received(rest)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
