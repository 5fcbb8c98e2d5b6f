"""The errors of Kalshi's REST API as the client raises them; apart from the client, so that code which only
handles them does not load the HTTP library."""

from __future__ import annotations


class KalshiRestError(Exception):
    """A REST call that failed: an HTTP error status, a transport failure (status 0), too many retries, or a
    2xx answer whose body carries an ``error``.

    ``code``, ``message`` and ``details`` are Kalshi's (``{"error": {"code", "message", "details"}}``); the
    code is what callers branch on (``invalid_order``, ``available_balance_too_low``, ...), "" when none came.
    """

    def __init__(
        self,
        status: int,
        path: str,
        message: str,
        *,
        method: str = "GET",
        code: str = "",
        details: str = "",
        after_lost_answer: bool = False,
    ) -> None:
        self.status = status
        self.path = path
        self.message = message
        self.method = method
        self.code = code
        self.details = details
        self.after_lost_answer = after_lost_answer
        """An earlier attempt of this same request got a 5xx or no answer: it may have been carried out, and
        this error may be about the state it left (a cancel retried after its answer was lost finds no order)."""
        where = f"{method} {path}"
        super().__init__(f"{where}: HTTP {status}: {message}" if status else f"{where}: {message}")


class MalformedResponse(KalshiRestError):
    """A successful response whose body does not have the documented shape; the message names the field."""
