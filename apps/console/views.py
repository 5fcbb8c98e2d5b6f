"""The console page and the probes. All of them read rows, never the trader's memory."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.trader.core.health import Health
from apps.trader.selectors import session_current, session_health, status_current


@require_GET
def console_page(request: HttpRequest) -> HttpResponse:
    session = session_current()
    return render(
        request,
        "console/console.html",
        {
            "environment": str(settings.ENVIRONMENT),
            "ws_path": "/v3/ws",
            "state": session.current_state if session else "",
            "session_id": session.pk if session else None,
            "markets": session.markets if session else [],
        },
    )


HEALTH_DEADLINE = 2.0
"""Seconds /v3/health waits for the database before it answers 503 on its own."""


class _HealthReader:
    """Reads health on its own thread, one read at a time: probes never wait on (or occupy) the thread the
    trader's writes or other requests use, and probes that arrive while the database hangs share the read
    in flight instead of piling up threads behind it."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health")
        self._read: asyncio.Future[Health] | None = None

    async def health(self, deadline: float) -> Health:
        read = self._read
        if read is None or read.done() or read.get_loop() is not asyncio.get_running_loop():
            self._read = read = asyncio.wrap_future(self._executor.submit(self._session_health))
            # A read every probe gave up on still ends with an answer: take it, so none goes unretrieved.
            read.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            return await asyncio.wait_for(asyncio.shield(read), timeout=deadline)
        except TimeoutError:
            return Health("unhealthy", f"database unreachable: no answer within {deadline:g} s")
        except DatabaseError as exc:
            return Health("unhealthy", f"database unreachable ({type(exc).__name__})")

    @staticmethod
    def _session_health() -> Health:
        close_old_connections()
        try:
            return session_health(session=session_current())
        finally:
            close_old_connections()  # hands a pooled connection back, drops a broken one


_health_reader = _HealthReader()


@require_GET
@never_cache
async def health(request: HttpRequest) -> JsonResponse:
    """200 while the trader is up (healthy, or degraded and healing); 503 with the reason otherwise,
    within HEALTH_DEADLINE even when the database does not answer."""
    result = await _health_reader.health(HEALTH_DEADLINE)
    return JsonResponse(result.as_dict(), status=200 if result.ok else 503)


@require_GET
@never_cache
def status(request: HttpRequest) -> JsonResponse:
    return JsonResponse(status_current(), json_dumps_params={"indent": 2})
