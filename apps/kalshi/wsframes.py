"""Whole WebSocket data frames taken straight from received bytes (RFC 6455, the server's side of a stream).

An exchange's stream is almost all small, unfragmented, uncompressed text frames. Taking those out of the
received bytes with a few byte reads each costs a fraction of what a general frame parser spends per frame;
everything else (control frames, fragments, extensions' bits, masking, oversized frames) is left to one.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

# First byte of a whole text or binary frame: FIN set, no RSV bits (no extension applies to it).
_WHOLE_TEXT = 0x81
_WHOLE_BINARY = 0x82
# First byte of a close, ping or pong frame (control frames are never fragmented).
_CONTROL = frozenset({0x88, 0x89, 0x8A})
CLOSE_FRAME = 0x88
_MAX_CONTROL_PAYLOAD = 125


class Stop(enum.Enum):
    """Why ``take_data_frames`` stopped before the end of the bytes."""

    INCOMPLETE = "incomplete"
    """The next frame has not fully arrived (or nothing is left)."""
    CONTROL = "control"
    """The next frame is a whole close, ping or pong frame."""
    OTHER = "other"
    """The next frame is none of the above: a fragment, a frame with RSV bits or a mask, a reserved opcode,
    a control frame too long, or a data frame over the size limit."""


def take_data_frames(data: bytes, start: int, take: Callable[[bytes], object], max_size: int) -> tuple[int, Stop, int]:
    """Pass the payload of each whole, unfragmented, unmasked data frame from ``data[start:]`` to ``take``,
    in order, until a frame that is not one.

    Returns ``(offset, stop, end)``: the offset of the first frame not taken, why, and for ``Stop.CONTROL``
    the offset just past that control frame (else ``offset``).
    """
    size = len(data)
    pos = start
    while True:
        if size - pos < 2:
            return pos, Stop.INCOMPLETE, pos
        first = data[pos]
        length = data[pos + 1]
        if length < 126:
            head = 2
        elif length == 126:
            if size - pos < 4:
                return pos, Stop.INCOMPLETE, pos
            length = (data[pos + 2] << 8) | data[pos + 3]
            head = 4
        elif length == 127:
            if size - pos < 10:
                return pos, Stop.INCOMPLETE, pos
            length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            head = 10
        else:
            return pos, Stop.OTHER, pos  # the mask bit: a server must not mask its frames
        end = pos + head + length
        if first in (_WHOLE_TEXT, _WHOLE_BINARY):
            if length > max_size:
                return pos, Stop.OTHER, pos
            if end > size:
                return pos, Stop.INCOMPLETE, pos
            take(data[pos + head : end])
            pos = end
        elif first in _CONTROL and length <= _MAX_CONTROL_PAYLOAD:
            if end > size:
                return pos, Stop.INCOMPLETE, pos
            return pos, Stop.CONTROL, end
        else:
            return pos, Stop.OTHER, pos
