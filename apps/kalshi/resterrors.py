"""The errors of Kalshi's REST API as the client raises them; apart from the client, so that code which only
handles them does not load the HTTP library."""

from __future__ import annotations


class KalshiRestError(Exception):
    """A REST call that failed: an HTTP error status, a transport failure (status 0) or too many 429s."""

    def __init__(self, status: int, path: str, message: str) -> None:
        self.status = status
        self.path = path
        self.message = message
        where = f"GET {path}"
        super().__init__(f"{where}: HTTP {status}: {message}" if status else f"{where}: {message}")


class MalformedResponse(KalshiRestError):
    """A successful response whose body does not have the documented shape; the message names the field."""
