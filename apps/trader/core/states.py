"""The trader's states and the table of allowed transitions."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    STARTUP = "startup"
    INITIALIZING = "initializing"
    CONNECTING = "kalshi_connectivity_orderbook_client"
    READY = "ready"
    TRADING_CONNECT = "trading_client_connect"
    """Books live; the private channels (fills, orders, positions) are being subscribed."""
    DATA_SYNC = "kalshi_data_sync"
    """Subscribed; balance, positions and resting orders are being read from REST."""
    TRADING_READY = "trading_ready"
    """Books live and the account known: the strategy runs and orders may leave."""
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
    State.TRADING_CONNECT: "connecting the trading client",
    State.DATA_SYNC: "loading the account",
    State.TRADING_READY: "trading",
    State.ERROR: "recovering from an error",
    State.SHUTDOWN: "shutting down",
}


ALLOWED_TRANSITIONS: dict[State, frozenset[State]] = {
    State.STARTUP: frozenset({State.INITIALIZING, State.ERROR, State.SHUTDOWN}),
    State.INITIALIZING: frozenset({State.CONNECTING, State.ERROR, State.SHUTDOWN}),
    # CONNECTING -> CONNECTING is a further reconnect attempt, shown as its own transition.
    State.CONNECTING: frozenset({State.CONNECTING, State.READY, State.ERROR, State.SHUTDOWN}),
    # READY -> TRADING_CONNECT only when trading is enabled; without it READY is where the trader stays.
    State.READY: frozenset({State.CONNECTING, State.TRADING_CONNECT, State.ERROR, State.SHUTDOWN}),
    # A lost market feed goes back to CONNECTING from every trading state; a lost private feed goes back to
    # TRADING_CONNECT (TRADING_CONNECT -> TRADING_CONNECT is a further attempt, as for CONNECTING).
    State.TRADING_CONNECT: frozenset(
        {State.TRADING_CONNECT, State.DATA_SYNC, State.CONNECTING, State.ERROR, State.SHUTDOWN}
    ),
    State.DATA_SYNC: frozenset(
        {State.TRADING_READY, State.TRADING_CONNECT, State.CONNECTING, State.ERROR, State.SHUTDOWN}
    ),
    State.TRADING_READY: frozenset({State.TRADING_CONNECT, State.CONNECTING, State.ERROR, State.SHUTDOWN}),
    State.ERROR: frozenset({State.STARTUP, State.SHUTDOWN}),
    State.SHUTDOWN: frozenset(),
}

BOOKS_LIVE: frozenset[State] = frozenset({State.READY, State.TRADING_CONNECT, State.DATA_SYNC, State.TRADING_READY})
"""States in which every book is live: ``ready`` and the trading states built on it."""

TRADING_STATES: frozenset[State] = frozenset({State.TRADING_CONNECT, State.DATA_SYNC, State.TRADING_READY})

# Seconds a state may last before the trader gives up on it and goes to ``error``; None means no limit.
STATE_TIMEOUTS: dict[State, float | None] = {
    State.STARTUP: 10.0,
    State.INITIALIZING: 30.0,
    State.CONNECTING: 60.0,
    State.READY: None,
    State.TRADING_CONNECT: 60.0,
    State.DATA_SYNC: 30.0,
    State.TRADING_READY: None,
    State.ERROR: None,  # error leaves by its own back-off
    State.SHUTDOWN: 15.0,
}
