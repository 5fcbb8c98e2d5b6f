"""The console page, its login and the probes. All of them read rows, never the trader's memory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.views import LoginView, redirect_to_login
from django.db import DatabaseError, close_old_connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render, resolve_url
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from apps.console.access import may_watch
from apps.trader.core.health import Health
from apps.trader.models import TradingSession
from apps.trader.selectors import fleet_health, shards_current, status_current

View = Callable[..., HttpResponse]


def staff_outside_sim(*, api: bool) -> Callable[[View], View]:
    """Outside sim: a page redirects to the login, an API answers 401 (no login) or 403 (not staff)."""

    def decorate(view: View) -> View:
        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if may_watch(request.user):
                return view(request, *args, **kwargs)
            if not api:
                return redirect_to_login(request.get_full_path())
            if request.user.is_authenticated:
                return JsonResponse({"error": "this needs a staff account"}, status=403)
            return JsonResponse({"error": "login required", "login": resolve_url(settings.LOGIN_URL)}, status=401)

        return guarded

    return decorate


@require_safe
@staff_outside_sim(api=False)
def console_page(request: HttpRequest) -> HttpResponse:
    shards = shards_current()
    session = shards[0] if shards else None
    running = [s for s in shards if s.status == TradingSession.Status.RUNNING] or shards[:1]
    return render(
        request,
        "console/console.html",
        {
            "environment": str(settings.ENVIRONMENT),
            "ws_path": "/v3/ws",
            "state": session.current_state if session else "",
            "session_id": session.pk if session else None,
            "markets": list(dict.fromkeys(ticker for s in running for ticker in s.markets)),
        },
    )


class ConsoleLoginView(LoginView):
    """Django's login, in the console's look."""

    template_name = "console/login.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "environment": str(settings.ENVIRONMENT)}


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
            return fleet_health(shards=shards_current())
        finally:
            close_old_connections()  # hands a pooled connection back, drops a broken one


_health_reader = _HealthReader()


@require_safe
@never_cache
async def health(request: HttpRequest) -> JsonResponse:
    """200 while the trader is up (healthy, or degraded and healing); 503 with the reason otherwise,
    within HEALTH_DEADLINE even when the database does not answer.

    Open to probes everywhere, so it tells only the verdict and its reason.
    """
    result = await _health_reader.health(HEALTH_DEADLINE)
    return JsonResponse(result.as_dict(), status=200 if result.ok else 503)


@require_safe
@never_cache
@staff_outside_sim(api=True)
def status(request: HttpRequest) -> JsonResponse:
    return JsonResponse(status_current(), json_dumps_params={"indent": 2})
