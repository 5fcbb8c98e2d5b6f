"""The trader's states and the table of allowed transitions."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    STARTUP = "startup"
    INITIALIZING = "initializing"
    CONNECTING = "kalshi_connectivity_orderbook_client"
    READY = "ready"
    ERROR = "error"
    SHUTDOWN = "shutdown"

    @property
    def label(self) -> str:
        """What the state means to a person reading a reason or a log line."""
        return STATE_LABELS[self]


STATE_LABELS: dict[State, str] = {
    State.STARTUP: "starting up",
    State.INITIALIZING: "initializing",
    State.CONNECTING: "connecting to the exchange",
    State.READY: "ready",
    State.ERROR: "recovering from an error",
    State.SHUTDOWN: "shutting down",
}


ALLOWED_TRANSITIONS: dict[State, frozenset[State]] = {
    State.STARTUP: frozenset({State.INITIALIZING, State.ERROR, State.SHUTDOWN}),
    State.INITIALIZING: frozenset({State.CONNECTING, State.ERROR, State.SHUTDOWN}),
    # CONNECTING -> CONNECTING is a further reconnect attempt, shown as its own transition.
    State.CONNECTING: frozenset({State.CONNECTING, State.READY, State.ERROR, State.SHUTDOWN}),
    State.READY: frozenset({State.CONNECTING, State.ERROR, State.SHUTDOWN}),
    State.ERROR: frozenset({State.STARTUP, State.SHUTDOWN}),
    State.SHUTDOWN: frozenset(),
}

# Seconds a state may last before the trader gives up on it and goes to ``error``; None means no limit.
STATE_TIMEOUTS: dict[State, float | None] = {
    State.STARTUP: 10.0,
    State.INITIALIZING: 30.0,
    State.CONNECTING: 60.0,
    State.READY: None,
    State.ERROR: None,  # error leaves by its own back-off
    State.SHUTDOWN: 15.0,
}
