"""Session history on the web: the list of sessions, one session's page from its recording, and its export."""

from __future__ import annotations

from collections.abc import AsyncIterator

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_safe

from apps.console.views import staff_outside_sim
from apps.trader.models import TradingSession
from apps.trader.selectors import MARKET_FILTER_MAX, export_part, session_recording_view, sessions_page

EXPORT_PAGE = 5000
"""Recorded rows an export reads per query while it streams: memory stays flat however long the session."""

EXPORT_TYPES = {"jsonl": "application/x-ndjson; charset=utf-8", "csv": "text/csv; charset=utf-8"}


def duration_text(seconds: float) -> str:
    """45 -> "45s", 3723 -> "1h 02m 03s", 90000 -> "1d 01h 00m"."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _page_number(request: HttpRequest) -> int:
    try:
        return int(request.GET.get("page", "1"))
    except ValueError:
        return 1


@require_safe
@staff_outside_sim(api=False)
def session_list(request: HttpRequest) -> HttpResponse:
    listing = sessions_page(page=_page_number(request))
    for row in listing["sessions"]:
        row["duration_text"] = duration_text(row["duration"])
    return render(
        request,
        "console/sessions.html",
        {"environment": str(settings.ENVIRONMENT), "export_formats": list(EXPORT_TYPES), **listing},
    )


@require_safe
@staff_outside_sim(api=False)
def session_detail(request: HttpRequest, session_id: int) -> HttpResponse:
    session = get_object_or_404(TradingSession, pk=session_id)
    market = request.GET.get("market", "")[:MARKET_FILTER_MAX]
    filter_text = request.GET.get("filter", "").strip()[:MARKET_FILTER_MAX]
    view = session_recording_view(session=session, market=market, filter_text=filter_text)
    view["row"]["duration_text"] = duration_text(view["row"]["duration"])
    return render(
        request,
        "console/session.html",
        {
            "environment": str(settings.ENVIRONMENT),
            "session": session,
            "filter": filter_text,
            "export_formats": list(EXPORT_TYPES),
            "charts": {"prices": view["prices"], "rates": view["rates"]},
            **view,
        },
    )


@require_safe
@staff_outside_sim(api=False)
def session_export(request: HttpRequest, session_id: int, fmt: str) -> StreamingHttpResponse:
    """The session's recording as exportsession writes it, streamed page by page."""
    if fmt not in EXPORT_TYPES:
        raise Http404(f"no export format {fmt!r}")
    session = get_object_or_404(TradingSession, pk=session_id)
    response = StreamingHttpResponse(_export_parts(session.pk, fmt), content_type=EXPORT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="session-{session.pk}.{fmt}"'
    return response


async def _export_parts(session_id: int, fmt: str) -> AsyncIterator[str]:
    # Each part is its own short query after the last position sent: no transaction or cursor is held
    # open between parts, so a slow download never holds up the trader's writes.
    after: int | None = 0
    while after is not None:
        text, after = await database_sync_to_async(export_part)(
            session_id=session_id, fmt=fmt, after=after, limit=EXPORT_PAGE
        )
        if text:
            yield text
