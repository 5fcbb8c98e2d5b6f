"""Reads: what the web side shows, computed only from rows the trader wrote."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from apps.marketdata.export import export_records, write_records
from apps.marketdata.models import RecordedMarket
from apps.marketdata.selectors import RecordingError, message_rates, price_history, recording_page
from apps.trader.core.bookpublisher import DEPTH_KEYS
from apps.trader.core.health import Health, evaluate_health
from apps.trader.models import ConsoleLine, MarketTop, StateTransition, TradingSession

CONSOLE_REPLAY_LINES = 200
"""How many of the session's last console lines a new console replays (the trader keeps as many)."""

SHARD_ENDED_SHOWN_FOR = timedelta(minutes=10)
"""How long a shard that stopped stays in the fleet's status, so every web worker shows that it went away."""


def shards_current() -> list[TradingSession]:
    """The trader shards a web worker shows: every running session (freshest heartbeat first), then those
    that ended in the last ten minutes (latest first); with none of either, the most recent session."""
    since = timezone.now() - SHARD_ENDED_SHOWN_FOR
    rows = TradingSession.objects.filter(Q(status=TradingSession.Status.RUNNING) | Q(ended_at__gte=since))
    running = [s for s in rows if s.status == TradingSession.Status.RUNNING]
    ended = [s for s in rows if s.status != TradingSession.Status.RUNNING]
    running.sort(key=lambda s: s.heartbeat_at or s.started_at, reverse=True)
    ended.sort(key=lambda s: s.ended_at or s.started_at, reverse=True)
    if running or ended:
        return running + ended
    latest = TradingSession.objects.order_by("-started_at").first()
    return [latest] if latest is not None else []


def sessions_live(*, stale_after: float | None = None) -> list[TradingSession]:
    """Running sessions whose heartbeat is fresh (within ``stale_after`` seconds, by default
    TRADER_HEARTBEAT_STALE_SECONDS): the traders alive right now, in any environment, oldest first."""
    stale_after = settings.TRADER_HEARTBEAT_STALE_SECONDS if stale_after is None else stale_after
    fresh_since = timezone.now() - timedelta(seconds=stale_after)
    return list(
        TradingSession.objects.filter(status=TradingSession.Status.RUNNING, heartbeat_at__gte=fresh_since).order_by(
            "started_at", "id"
        )
    )


def session_sharing_markets(*, markets: list[str], stale_after: float) -> tuple[TradingSession, list[str]] | None:
    """A live session that already trades any of ``markets``, with the shared tickers; None if there is none.

    One market belongs to one trader: two would record and control the same book twice.
    """
    wanted = set(markets)
    for session in sessions_live(stale_after=stale_after):
        shared = [ticker for ticker in session.markets if ticker in wanted]
        if shared:
            return session, shared
    return None


def transitions_recent(*, session: TradingSession, limit: int = 200) -> list[StateTransition]:
    rows = list(StateTransition.objects.filter(session=session).order_by("-timestamp", "-id")[:limit])
    rows.reverse()
    return rows


def session_health(*, session: TradingSession | None) -> Health:
    if session is None:
        return Health("unhealthy", "no trader session has run yet")
    if session.status != TradingSession.Status.RUNNING:
        return Health("unhealthy", f"the latest session is {session.status}")
    age = (timezone.now() - session.heartbeat_at).total_seconds() if session.heartbeat_at else None
    return evaluate_health(
        state=session.current_state,
        heartbeat_age=age,
        metrics=session.latest_metrics,
        heartbeat_stale_after=settings.TRADER_HEARTBEAT_STALE_SECONDS,
        feed_idle_timeout=settings.TRADER_FEED_IDLE_TIMEOUT,
    )


MARKET_PAGE_LIMIT = 500
"""The most markets one page holds, whatever a client asks for."""

MARKET_FILTER_MAX = 100
"""The longest filter text a page request may carry (a ticker is at most 100 characters)."""


class MarketQueryError(ValueError):
    """A page or market request a client got wrong; the message says what is expected."""


def market_tops(*, session: TradingSession) -> list[dict[str, Any]]:
    """Every market's top of book as the trader last wrote it, in the session's market order (one session's
    full picture, for tools that watch a few markets; pages use ``market_page``)."""
    order = {ticker: index for index, ticker in enumerate(session.markets or [])}
    tops = [row.top for row in MarketTop.objects.filter(session=session)]
    tops.sort(key=lambda top: (order.get(top.get("market_ticker", ""), len(order)), top.get("market_ticker", "")))
    return tops


def _watching(shards: list[TradingSession]) -> list[TradingSession]:
    """The shards whose markets a page shows: every running one, or the latest shard when none runs."""
    running = [s for s in shards if s.status == TradingSession.Status.RUNNING]
    return running or shards[:1]


def _owners(sessions: list[TradingSession]) -> dict[str, int]:
    """Ticker -> the session that watches it (each market belongs to one shard; a later session wins)."""
    return {ticker: session.pk for session in sessions for ticker in session.markets or []}


def _no_book(ticker: str) -> dict[str, Any]:
    """A watched market whose top of book the trader has not written yet."""
    return {
        "market_ticker": ticker,
        "sid": None,
        "seq": None,
        "yes_bid": None,
        "yes_ask": None,
        "spread": None,
        "stale": None,
        "updated_at": None,
        "ts_ms": None,
    }


def _tops(owners: dict[str, int], tickers: list[str]) -> dict[str, dict[str, Any]]:
    """The MarketTop rows of ``tickers``, each from the session that watches it."""
    rows = MarketTop.objects.filter(session_id__in=set(owners[t] for t in tickers), market_ticker__in=tickers)
    return {row.market_ticker: row.top for row in rows if owners.get(row.market_ticker) == row.session_id}


def without_depth(book: dict[str, Any]) -> dict[str, Any]:
    """A book (as the trader publishes and writes it) without its levels: the top of book only."""
    if not any(key in book for key in DEPTH_KEYS):
        return book
    return {key: value for key, value in book.items() if key not in DEPTH_KEYS}


def page_request(*, filter_text: Any = "", offset: Any = 0, limit: Any = 100) -> tuple[str, int, int]:
    """A page request checked and normalised: (filter, offset, limit); a limit over MARKET_PAGE_LIMIT is
    capped. Raises MarketQueryError for anything else."""
    if filter_text is None:
        filter_text = ""
    if not isinstance(filter_text, str) or len(filter_text) > MARKET_FILTER_MAX:
        raise MarketQueryError(f"'filter' must be text of at most {MARKET_FILTER_MAX} characters")
    for name, value, least in (("offset", offset, 0), ("limit", limit, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise MarketQueryError(f"'{name}' must be an integer of at least {least}")
    return filter_text.strip(), offset, min(limit, MARKET_PAGE_LIMIT)


def market_page(*, filter_text: str = "", offset: int = 0, limit: int = 100) -> dict[str, Any]:
    """One page of the watched markets in ticker order, those whose ticker contains ``filter_text`` (any
    case), each with its top of book from MarketTop (nulls until the trader has written one).

    ``total`` counts the markets that match, ``markets_total`` every watched market. Arguments come
    through ``page_request``.
    """
    owners = _owners(_watching(shards_current()))
    needle = filter_text.upper()
    matching = sorted(t for t in owners if needle in t.upper()) if needle else sorted(owners)
    tickers = matching[offset : offset + limit]
    tops = _tops(owners, tickers) if tickers else {}
    # A page shows tops only: the levels are for the one market a console watches (market_detail).
    tops = {ticker: without_depth(top) for ticker, top in tops.items()}
    return {
        "filter": filter_text,
        "offset": offset,
        "limit": limit,
        "total": len(matching),
        "markets_total": len(owners),
        "markets": [tops.get(ticker) or _no_book(ticker) for ticker in tickers],
    }


def market_detail(*, ticker: str) -> dict[str, Any] | None:
    """One market: the shard that watches it (a running one, else the one that stopped last) and its top of
    book; None if no shard shown in the status has it."""
    owners = _owners(shards_current()[::-1])  # running shards come first in that list: they win
    if ticker not in owners:
        return None
    return {
        "market_ticker": ticker,
        "session_id": owners[ticker],
        "book": _tops(owners, [ticker]).get(ticker),
    }


def console_recent(*, session: TradingSession, limit: int = CONSOLE_REPLAY_LINES) -> list[dict[str, Any]]:
    rows = list(ConsoleLine.objects.filter(session=session).order_by("-id")[:limit])
    rows.reverse()
    return [row.as_event() for row in rows]


def fleet_health(*, shards: list[TradingSession]) -> Health:
    """The health of every shard together: one running shard answers for itself; with several, any unhealthy
    shard makes the fleet unhealthy, and a shard that stopped while its markets are watched by no one else
    makes it degraded."""
    running = [s for s in shards if s.status == TradingSession.Status.RUNNING]
    if not running:
        return session_health(session=shards[0] if shards else None)
    verdicts = [(s, session_health(session=s)) for s in running]
    watched = {ticker for s in running for ticker in s.markets}
    orphaned = [s for s in shards if s not in running and not set(s.markets) <= watched]
    if len(verdicts) == 1 and not orphaned:
        return verdicts[0][1]
    unhealthy = [f"session {s.pk}: {h.reason}" for s, h in verdicts if h.status == "unhealthy"]
    if unhealthy:
        return Health("unhealthy", "; ".join(unhealthy))
    degraded = [f"session {s.pk}: {h.reason}" for s, h in verdicts if h.status == "degraded"]
    degraded += [f"session {s.pk} {s.status}; its markets are not watched" for s in orphaned]
    if degraded:
        return Health("degraded", "; ".join(degraded))
    live = sum(len(s.markets) for s in running)
    return Health("healthy", f"ready; {len(running)} shards, {live} markets live")


def shard_status(session: TradingSession) -> dict[str, Any]:
    """One shard's part of the status: its session, state, health, market counts and metrics, from its rows."""
    now = timezone.now()
    return {
        "session": session_summary(session),
        "state": session.current_state,
        "health": session_health(session=session).as_dict(),
        "time_in_state": round((now - session.state_entered_at).total_seconds(), 1)
        if session.state_entered_at
        else None,
        "heartbeat_age": round((now - session.heartbeat_at).total_seconds(), 1) if session.heartbeat_at else None,
        "market_counts": _market_counts([session]),
        "metrics": session.latest_metrics,
        # Figures only (money as dollar strings, orders, fills): the trading block holds no key and no URL.
        "trading": (session.latest_status or {}).get("trading", {"enabled": False}),
    }


def _market_counts(sessions: list[TradingSession]) -> dict[str, int]:
    """How many markets the sessions watch, how many are connected and how many are stale (counts, never a
    list: the document stays the same size at 10,000 markets)."""

    def metric(session: TradingSession, name: str) -> int:
        value = (session.latest_metrics or {}).get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return {
        "total": sum(len(s.markets or []) for s in sessions),
        "connected": sum(metric(s, "markets_connected") for s in sessions),
        "stale": sum(metric(s, "stale_markets") for s in sessions),
    }


def status_current() -> dict[str, Any]:
    """The /v3/status document. It holds no secrets: no key id, no key, no SECRET_KEY.

    The top level describes the running shard with the freshest heartbeat (the only one in the embedded
    mode) with the fleet's health and the market counts of every running shard; ``shards`` lists each
    shard. Per-market detail is in ``market_detail`` and ``market_page``."""
    shards = shards_current()
    document: dict[str, Any] = {
        "environment": str(settings.ENVIRONMENT),
        "health": fleet_health(shards=shards).as_dict(),
        "state": None,
        "time_in_state": None,
        "session": None,
        "market_counts": _market_counts([]),
        "metrics": {},
        "trading": {"enabled": False},
        "shards": [shard_status(s) for s in shards],
    }
    if not shards:
        return document
    primary = document["shards"][0]
    document.update(
        {key: primary[key] for key in ("state", "time_in_state", "heartbeat_age", "session", "metrics", "trading")}
    )
    document["market_counts"] = _market_counts(_watching(shards))
    return document


def without_userinfo(url: str) -> str:
    """``url`` without a user name or password in it (``wss://user:secret@host/`` -> ``wss://host/``)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def session_summary(session: TradingSession) -> dict[str, Any]:
    end = session.ended_at or session.heartbeat_at or session.started_at
    return {
        "id": session.pk,
        "environment": session.environment,
        "replay_of": session.replay_of_id,
        "markets_total": len(session.markets or []),
        "exchange_url": without_userinfo(session.exchange_url),
        "started_at": session.started_at.isoformat(),
        "ended_at": session.ended_at.isoformat() if session.ended_at else None,
        "duration": round((end - session.started_at).total_seconds(), 1),
        "status": session.status,
        "current_state": session.current_state,
        "error": session.error,
        "counters": {
            "messages_received": session.messages_received,
            "snapshots_received": session.snapshots_received,
            "deltas_received": session.deltas_received,
            "reconnects": session.reconnects,
            "gaps": session.gaps,
            "resyncs": session.resyncs,
            "bytes_received": session.bytes_received,
        },
    }


_PER_MARKET_STATUS_KEYS = ("markets", "market_tickers")
"""Per-market lists an older trader's status document held; a replay leaves them out."""


def console_history() -> dict[str, Any]:
    """The ``history_replay`` payload a new console receives: the story so far of the freshest shard and
    every shard's latest status. No books: the page asks for the markets it shows (``market_page``)."""
    shards = shards_current()
    if not shards:
        return {"session": None, "transitions": [], "status": None, "console": [], "shards": [], "rates": []}
    session = shards[0]
    status = (
        {
            **{k: v for k, v in session.latest_status.items() if k not in _PER_MARKET_STATUS_KEYS},
            "metrics": session.latest_metrics,
        }
        if session.latest_status
        else None
    )
    return {
        "session": session_summary(session),
        "transitions": [row.as_event() for row in transitions_recent(session=session)],
        "status": status,
        "console": console_recent(session=session),
        "shards": [shard_status(s) for s in shards],
        "rates": message_rates(session_id=session.pk),
    }


def market_history(*, ticker: str) -> dict[str, Any]:
    """The ``market_history`` payload for a console that starts watching ``ticker``: its book with levels as
    the trader last wrote it, and its best bid and ask over the session from the recording (bounded)."""
    detail = market_detail(ticker=ticker)
    if detail is None:
        return {
            "market_ticker": ticker,
            "session_id": None,
            "book": None,
            "points": [],
            "from_start": True,
            "to_end": True,
        }
    history = price_history(session_id=detail["session_id"], market_ticker=ticker)
    return {**history, "book": detail["book"]}


def session_resolve(reference: str) -> TradingSession:
    """A session by id, or the most recently started one for "latest"."""
    if reference == "latest":
        session = TradingSession.objects.order_by("-started_at", "-id").first()
        if session is None:
            raise RecordingError("there are no sessions yet")
        return session
    try:
        pk = int(reference)
    except ValueError:
        raise RecordingError(f"a session is an id or 'latest', not {reference!r}") from None
    try:
        return TradingSession.objects.get(pk=pk)
    except TradingSession.DoesNotExist:
        raise RecordingError(f"there is no session {pk}") from None


SESSIONS_PER_PAGE = 50
"""Sessions one page of the history shows."""

SESSION_MARKETS_SHOWN = 100
"""Recorded markets a session's page lists at once (a filter finds the others)."""


def _session_row(session: TradingSession) -> dict[str, Any]:
    """A session as the history lists it: no market list (it can hold 10,000 tickers), the count instead."""
    end = session.ended_at or session.heartbeat_at or session.started_at
    markets = (session.latest_metrics or {}).get("markets_total")
    return {
        "id": session.pk,
        "environment": session.environment,
        "status": session.status,
        "current_state": session.current_state,
        "started_at": session.started_at,
        "ended_at": session.ended_at,
        "duration": (end - session.started_at).total_seconds(),
        "markets_total": markets if isinstance(markets, int) and not isinstance(markets, bool) else None,
        "messages_received": session.messages_received,
        "deltas_received": session.deltas_received,
        "gaps": session.gaps,
        "resyncs": session.resyncs,
        "reconnects": session.reconnects,
        "error": session.error,
    }


def sessions_page(*, page: int, per_page: int = SESSIONS_PER_PAGE) -> dict[str, Any]:
    """One page of every session, newest first; ``page`` (from 1) is clamped to the pages there are."""
    total = TradingSession.objects.count()
    pages = max(1, -(-total // per_page))
    page = min(max(page, 1), pages)
    rows = TradingSession.objects.defer("markets", "latest_status").order_by("-started_at", "-id")
    return {
        "page": page,
        "pages": pages,
        "total": total,
        "sessions": [_session_row(s) for s in rows[(page - 1) * per_page : page * per_page]],
    }


def session_recording_view(*, session: TradingSession, market: str = "", filter_text: str = "") -> dict[str, Any]:
    """What a past (or running) session's page shows, every part bounded: its last transitions, up to
    SESSION_MARKETS_SHOWN recorded markets (those whose ticker contains ``filter_text``), and for ``market``
    (else the first listed) its best bid and ask over the session and the session's message rate."""
    recorded = RecordedMarket.objects.filter(session=session).order_by("market_ticker")
    if filter_text:
        recorded = recorded.filter(market_ticker__icontains=filter_text)
    shown = list(recorded[:SESSION_MARKETS_SHOWN])
    chosen = market if market and RecordedMarket.objects.filter(session=session, market_ticker=market).exists() else ""
    if not chosen and shown:
        chosen = shown[0].market_ticker
    return {
        "row": _session_row(session),
        "transitions": transitions_recent(session=session),
        "transitions_total": StateTransition.objects.filter(session=session).count(),
        "markets": shown,
        "markets_matching": recorded.count(),
        "market": chosen,
        "prices": price_history(session_id=session.pk, market_ticker=chosen) if chosen else None,
        "rates": message_rates(session_id=session.pk),
    }


def export_part(*, session_id: int, fmt: str, after: int, limit: int) -> tuple[str, int | None]:
    """One part of a session's export as ``exportsession`` writes it: the next ``limit`` recorded items after
    position ``after``, as text, and the position of the last (None when none is left). The first part
    (``after`` 0) of a CSV starts with its header, even when the recording is empty."""
    items = recording_page(session_id=session_id, after=after, limit=limit)
    buffer = io.StringIO()
    if items or (after == 0 and fmt == "csv"):
        write_records(export_records(items), buffer, fmt=fmt, header=after == 0)
    return buffer.getvalue(), items[-1].position if items else None
