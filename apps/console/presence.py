"""How many console sockets this process serves, for its metrics."""

from __future__ import annotations

_connected = 0


def console_joined() -> None:
    global _connected
    _connected += 1


def console_left() -> None:
    global _connected
    _connected -= 1


def consoles_connected() -> int:
    """Open console sockets in this process (the embedded trader's web app, or one web worker)."""
    return _connected
