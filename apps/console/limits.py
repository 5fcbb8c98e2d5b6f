"""Per-connection limits for the console's socket: what one browser may ask of the server."""

from __future__ import annotations

MAX_CLIENT_MESSAGE = 4096
"""Characters in one message from a browser; the console's own messages are far smaller."""
HISTORY_BURST, HISTORY_PER_SECOND = 3, 0.2
"""A replay reads the session's rows and sends tens of KB: three at once, then one per 5 s."""
PAGE_BURST, PAGE_PER_SECOND = 10, 5.0
"""request_markets reads one page (at most 500 rows): a filter box typed into sends a few a second."""
MESSAGE_BURST, MESSAGE_PER_SECOND = 60, 20.0
"""Every message: the console sends a ping every few seconds and a control request now and then."""
REFUSAL_BURST, REFUSAL_PER_SECOND = 20, 0.5
"""Refused messages (bad JSON, too big, over a limit): past this a client is abusing the socket and is closed."""
CLOSE_ABUSE = 4008
"""Close code for a client cut off for refused messages (4xxx: the range an application may send; cf. 1008)."""
CLOSE_TOO_SLOW = 4009
"""Close code for a client that does not read what it is sent (set by apps.console.webserver)."""
