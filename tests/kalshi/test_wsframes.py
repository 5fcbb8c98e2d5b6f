"""Taking whole data frames out of received bytes: every length form, every split, and what it leaves alone."""

from __future__ import annotations

import json

import pytest
from websockets.frames import Frame, Opcode

from apps.kalshi.wsframes import Stop, take_data_frames

MAX = 2**24


def server_frame(opcode: Opcode, payload: bytes, *, fin: bool = True) -> bytes:
    """A frame as a server writes it (unmasked), serialized by websockets itself."""
    return Frame(opcode, payload, fin=fin).serialize(mask=False)


def delta(seq: int, pad: int = 0) -> bytes:
    message = {
        "type": "orderbook_delta",
        "sid": 1,
        "seq": seq,
        "msg": {"market_ticker": "KXA" + "X" * pad, "price_dollars": "0.4200", "delta_fp": "1.00", "side": "yes"},
    }
    return json.dumps(message).encode()


def take_all(data: bytes, start: int = 0, max_size: int = MAX) -> tuple[list[bytes], int, Stop, int]:
    taken: list[bytes] = []
    pos, stop, end = take_data_frames(data, start, taken.append, max_size)
    return taken, pos, stop, end


# One payload of each length form: 7-bit, 16-bit and 64-bit lengths, and the edges between them.
PAYLOADS = [b"", b"{}", delta(1), delta(2, pad=125 - len(delta(2))), delta(3, pad=126 - len(delta(3))),
            delta(4, pad=70_000)]  # fmt: skip


def test_every_length_form_is_taken_whole_and_in_order() -> None:
    assert {len(p) < 126 for p in PAYLOADS} == {True, False} and any(len(p) > 65_535 for p in PAYLOADS)
    stream = b"".join(server_frame(Opcode.TEXT, p) for p in PAYLOADS) + server_frame(Opcode.BINARY, b"\x00\xff")

    taken, pos, stop, end = take_all(stream)

    assert taken == [*PAYLOADS, b"\x00\xff"]
    assert (pos, stop, end) == (len(stream), Stop.INCOMPLETE, len(stream))


def test_a_stream_split_anywhere_gives_the_same_messages() -> None:
    frames = [server_frame(Opcode.TEXT, p) for p in PAYLOADS[:5]]
    stream = b"".join(frames)
    for cut in range(len(stream) + 1):
        first, pos, stop, _ = take_all(stream[:cut])
        assert stop is Stop.INCOMPLETE
        # The reader keeps the bytes from ``pos`` on and puts the next bytes after them.
        second, rest, stop, _ = take_all(stream[pos:cut] + stream[cut:])
        assert first + second == PAYLOADS[:5], cut
        assert rest == len(stream) - pos and stop is Stop.INCOMPLETE


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_a_control_frame_stops_the_taking_and_says_where_it_ends(opcode: Opcode) -> None:
    before = server_frame(Opcode.TEXT, delta(1))
    control = server_frame(opcode, b"\x03\xe8bye" if opcode is Opcode.CLOSE else b"ping-data")
    after = server_frame(Opcode.TEXT, delta(2))
    stream = before + control + after

    taken, pos, stop, end = take_all(stream)

    assert taken == [delta(1)]
    assert (pos, stop, end) == (len(before), Stop.CONTROL, len(before) + len(control))
    assert take_all(stream, end)[0] == [delta(2)]


def test_a_control_frame_not_yet_whole_waits() -> None:
    control = server_frame(Opcode.PING, b"12345678")
    assert take_all(control[:-1])[1:] == (0, Stop.INCOMPLETE, 0)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(server_frame(Opcode.TEXT, b'{"a":', fin=False), id="first fragment"),
        pytest.param(server_frame(Opcode.CONT, b"1}"), id="continuation"),
        pytest.param(bytes([0xC1, 0x02]) + b"xy", id="rsv1 (an extension's frame)"),
        pytest.param(Frame(Opcode.TEXT, delta(1)).serialize(mask=True), id="masked"),
        pytest.param(bytes([0x83, 0x00]), id="reserved data opcode"),
        pytest.param(bytes([0x8B, 0x00]), id="reserved control opcode"),
        pytest.param(bytes([0x89, 126, 0, 126]) + b"x" * 126, id="control frame over 125 bytes"),
        pytest.param(bytes([0x81, 127]) + (2**40).to_bytes(8, "big"), id="over the size limit, header only"),
    ],
)
def test_anything_else_is_left_where_it_starts(frame: bytes) -> None:
    before = server_frame(Opcode.TEXT, delta(1))

    taken, pos, stop, end = take_all(before + frame + server_frame(Opcode.TEXT, delta(2)))

    assert taken == [delta(1)]
    assert (pos, stop, end) == (len(before), Stop.OTHER, len(before))


def test_the_size_limit_applies_to_a_whole_frame() -> None:
    frame = server_frame(Opcode.TEXT, b"x" * 200)
    assert take_all(frame, max_size=200)[0] == [b"x" * 200]
    assert take_all(frame, max_size=199)[1:] == (0, Stop.OTHER, 0)
