"""What this process's console sockets add to its metrics: how many are open, and what the channel layer lost."""

from __future__ import annotations

from apps.trader.metrics import ConsoleCounts

_connected = 0
_missed_events = 0


def console_joined() -> None:
    global _connected
    _connected += 1


def console_left() -> None:
    global _connected
    _connected -= 1


def events_missed(count: int) -> None:
    """A console saw a trader's event numbers jump by ``count`` more than one: the channel layer dropped them
    (``group_send`` never tells the sender)."""
    global _missed_events
    _missed_events += count


def console_counts() -> ConsoleCounts:
    """Open console sockets in this process (the embedded trader's web app, or one web worker), and the live
    events they missed."""
    return ConsoleCounts(connected=_connected, missed_events=_missed_events)
