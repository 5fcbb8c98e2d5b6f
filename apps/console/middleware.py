"""A database that is down is an answer, not a traceback: every page and API says so with a 503."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

DATABASE_DOWN = "database unreachable; the trader keeps running and writes what it holds once it is back"


class DatabaseUnavailableMiddleware:
    """Turns a DatabaseError escaping a view into 503: JSON under /v3/, a one-line page elsewhere."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DatabaseError):
            return None
        logger.warning("%s %s: %s (%s)", request.method, request.path, DATABASE_DOWN, type(exception).__name__)
        if request.path.startswith("/v3/"):
            return JsonResponse({"error": DATABASE_DOWN, "reason": type(exception).__name__}, status=503)
        response = HttpResponse(f"503 {DATABASE_DOWN}\n", status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = "5"
        return response
