"""The console page and the probes. All of them read rows, never the trader's memory."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.trader.models import TradingSession
from apps.trader.selectors import fleet_health, shards_current, status_current


@require_GET
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


@require_GET
@never_cache
def health(request: HttpRequest) -> JsonResponse:
    """200 while the trader is up (healthy, or degraded and healing); 503 with the reason otherwise."""
    result = fleet_health(shards=shards_current())
    return JsonResponse(result.as_dict(), status=200 if result.ok else 503)


@require_GET
@never_cache
def status(request: HttpRequest) -> JsonResponse:
    return JsonResponse(status_current(), json_dumps_params={"indent": 2})
