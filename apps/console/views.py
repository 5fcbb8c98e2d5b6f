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
from django.http.response import HttpResponseBase
from django.shortcuts import render, resolve_url
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from apps.console.access import may_watch
from apps.console.presence import console_counts
from apps.trader.core.health import Health
from apps.trader.core.states import TRADING_STATES
from apps.trader.metrics import TraderCollector
from apps.trader.selectors import (
    MarketQueryError,
    fleet_health,
    market_detail,
    market_page,
    page_request,
    shard_status,
    shards_current,
    status_current,
)

View = Callable[..., HttpResponseBase]


def staff_outside_sim(*, api: bool) -> Callable[[View], View]:
    """Outside sim: a page redirects to the login, an API answers 401 (no login) or 403 (not staff)."""

    def decorate(view: View) -> View:
        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if may_watch(request.user):
                return view(request, *args, **kwargs)
            if not api:
                return redirect_to_login(request.get_full_path())
            if request.user.is_authenticated:
                return JsonResponse({"error": "this needs a staff account"}, status=403)
            return JsonResponse({"error": "login required", "login": resolve_url(settings.LOGIN_URL)}, status=401)

        return guarded

    return decorate


CONSOLE_PAGE_SIZE = 50
"""Market rows the console shows at once; the page asks for more with request_markets."""


@require_safe
@staff_outside_sim(api=False)
def console_page(request: HttpRequest) -> HttpResponse:
    shards = shards_current()
    session = shards[0] if shards else None
    page = market_page(limit=CONSOLE_PAGE_SIZE)
    return render(
        request,
        "console/console.html",
        {
            "environment": str(settings.ENVIRONMENT),
            "ws_path": "/v3/ws",
            "state": session.current_state if session else "",
            "session_id": session.pk if session else None,
            "replay_of": session.replay_of_id if session else None,
            "markets": [book["market_ticker"] for book in page["markets"]],
            "markets_total": page["markets_total"],
            "page_size": CONSOLE_PAGE_SIZE,
            # The trading panel and steps show from the first paint for a trader that trades.
            "trading": session is not None
            and (
                session.current_state in TRADING_STATES
                or bool(((session.latest_status or {}).get("trading") or {}).get("enabled"))
            ),
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
    """Counts and aggregates by default; ``?market=T`` for one market's top of book; ``?markets=1`` with
    ``filter``, ``offset`` and ``limit`` for a page of markets."""
    indent = {"indent": 2}
    if "market" in request.GET:
        ticker = request.GET["market"]
        detail = market_detail(ticker=ticker)
        if detail is None:
            return JsonResponse({"error": f"no trader watches {ticker!r}"}, status=404, json_dumps_params=indent)
        return JsonResponse(detail, json_dumps_params=indent)
    if "markets" in request.GET:
        try:
            page = page_request(
                filter_text=request.GET.get("filter", ""),
                offset=_query_int(request, "offset", 0),
                limit=_query_int(request, "limit", STATUS_PAGE_DEFAULT),
            )
        except MarketQueryError as exc:
            return JsonResponse({"error": str(exc)}, status=400, json_dumps_params=indent)
        filter_text, offset, limit = page
        return JsonResponse(market_page(filter_text=filter_text, offset=offset, limit=limit), json_dumps_params=indent)
    return JsonResponse(status_current(), json_dumps_params=indent)


@require_safe
@never_cache
@staff_outside_sim(api=True)
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics for every shard ``/v3/status`` lists, from the same rows, plus this process's consoles.

    Outside sim it needs a staff login like ``/v3/status``; a Prometheus without one scrapes each trader's own
    ``--metrics-port`` (loopback) instead.
    """
    registry = CollectorRegistry()
    registry.register(TraderCollector(lambda: [shard_status(s) for s in shards_current()], consoles=console_counts))
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encode(registry), content_type=content_type)


STATUS_PAGE_DEFAULT = 100
"""Markets in a /v3/status page when the request names no limit."""


def _query_int(request: HttpRequest, name: str, default: int) -> int:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise MarketQueryError(f"'{name}' must be an integer") from None
