"""Reads of recorded market data: sessions by reference, the feed in receive order, books rebuilt at a seq.

A market's book is rebuilt exactly as the trader held it: its latest snapshot, then its deltas in receive
order. ``seq`` counts per subscription (``sid``) and every market on a sid shares it, so "the book of T at
seq N" is T's book once every message of that sid up to N was applied; T's own last message at or before
N decides it. A gap (or a lost connection) makes the affected books unknown until their next snapshot.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Max, Min, Sum

from apps.kalshi.fixedpoint import format_price
from apps.kalshi.messages import Level, OrderbookDelta, OrderbookSnapshot
from apps.kalshi.orderbook import BookInconsistent, OrderBook
from apps.marketdata.models import RecordedDelta, RecordedGap, RecordedMarket, RecordedSnapshot


class RecordingError(ValueError):
    """A request the recording cannot answer; the text says why."""


@dataclass(frozen=True, slots=True)
class Gap:
    kind: str
    """"seq", "disconnect" or "resubscribe"."""
    sid: int | None
    expected_seq: int | None
    received_seq: int | None
    markets: tuple[str, ...]
    detected_at: datetime
    healed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Recorded:
    """One recorded item in the session's receive order."""

    position: int
    received_at: datetime
    """When the trader received it (for a gap: when it was detected)."""
    message: OrderbookSnapshot | OrderbookDelta | Gap


def recording_totals(*, session_id: int, market_ticker: str | None = None) -> dict[str, int]:
    """snapshots, deltas and gaps recorded (from the per-market totals, so it is cheap on long sessions)."""
    markets = RecordedMarket.objects.filter(session_id=session_id)
    if market_ticker is not None:
        markets = markets.filter(market_ticker=market_ticker)
    sums = markets.aggregate(snapshots=Sum("snapshots"), deltas=Sum("deltas"))
    gaps = [g for g in RecordedGap.objects.filter(session_id=session_id).values_list("markets", flat=True)]
    if market_ticker is not None:
        gaps = [m for m in gaps if market_ticker in m]
    return {"snapshots": sums["snapshots"] or 0, "deltas": sums["deltas"] or 0, "gaps": len(gaps)}


def recorded_markets(*, session_id: int) -> list[str]:
    return list(
        RecordedMarket.objects.filter(session_id=session_id)
        .order_by("market_ticker")
        .values_list("market_ticker", flat=True)
    )


def _levels(raw: list[list[int]]) -> list[Level]:
    return [(price, size) for price, size in raw]


def _after(rows: Any, market_ticker: str | None, after: int) -> Any:
    if market_ticker is not None:
        rows = rows.filter(market_ticker=market_ticker)
    if after:
        rows = rows.filter(position__gt=after)
    return rows.order_by("position")


def _snapshots(
    session_id: int, market_ticker: str | None, chunk_size: int, after: int = 0, limit: int | None = None
) -> Iterator[Recorded]:
    rows = _after(RecordedSnapshot.objects.filter(session_id=session_id), market_ticker, after)
    fields = ("position", "received_at", "market_ticker", "sid", "seq", "command_id", "yes", "no")
    rows = rows.values_list(*fields)
    for position, received_at, ticker, sid, seq, command_id, yes, no in (
        rows[:limit] if limit is not None else rows.iterator(chunk_size=chunk_size)
    ):
        snapshot = OrderbookSnapshot(
            sid=sid, seq=seq, market_ticker=ticker, market_id="", yes=_levels(yes), no=_levels(no), id=command_id
        )
        yield Recorded(position, received_at, snapshot)


def _deltas(
    session_id: int, market_ticker: str | None, chunk_size: int, after: int = 0, limit: int | None = None
) -> Iterator[Recorded]:
    fields = ("position", "received_at", "market_ticker", "sid", "seq", "side", "price", "delta", "ts_ms")
    if market_ticker is None:
        rows = _after(RecordedDelta.objects.filter(session_id=session_id), None, after).values_list(*fields)
        found = rows[:limit] if limit is not None else rows.iterator(chunk_size=chunk_size)
    else:
        blocks = RecordedDelta.objects.market_blocks(session_id, market_ticker, after=after)
        found = itertools.chain.from_iterable(
            block.values_list(*fields)[:limit] if limit is not None else block.values_list(*fields).iterator(chunk_size)
            for block in blocks
        )
        if limit is not None:
            found = itertools.islice(found, limit)
    for position, received_at, ticker, sid, seq, side, price, delta, ts_ms in found:
        message = OrderbookDelta(
            sid=sid, seq=seq, market_ticker=ticker, market_id="", price=price, delta=delta, side=side, ts_ms=ts_ms
        )
        yield Recorded(position, received_at, message)


def _gaps(session_id: int, market_ticker: str | None, after: int = 0) -> list[Recorded]:
    found = []
    for gap in _after(RecordedGap.objects.filter(session_id=session_id), None, after):
        markets = tuple(gap.markets)
        if market_ticker is not None and market_ticker not in markets:
            continue
        item = Gap(
            kind=gap.kind,
            sid=gap.sid,
            expected_seq=gap.expected_seq,
            received_seq=gap.received_seq,
            markets=markets,
            detected_at=gap.detected_at,
            healed_at=gap.healed_at,
        )
        found.append(Recorded(gap.position, gap.detected_at, item))
    return found


def recording_messages(
    *, session_id: int, market_ticker: str | None = None, chunk_size: int = 2000
) -> Generator[Recorded, None, None]:
    """Every recorded snapshot, delta and gap of a session (or of one market), in receive order.

    Streams: each table is read in chunks through its own cursor and the three are merged by position.
    On PostgreSQL call it inside ``transaction.atomic()`` so the cursors stream instead of materializing.
    """
    yield from heapq.merge(
        _gaps(session_id, market_ticker),
        _snapshots(session_id, market_ticker, chunk_size),
        _deltas(session_id, market_ticker, chunk_size),
        key=lambda item: item.position,
    )


def recording_page(*, session_id: int, after: int, limit: int) -> list[Recorded]:
    """The next ``limit`` recorded items after ``position`` ``after``, in receive order (for paging)."""
    merged = heapq.merge(
        _gaps(session_id, None, after),
        _snapshots(session_id, None, limit, after, limit),
        _deltas(session_id, None, limit, after, limit),
        key=lambda item: item.position,
    )
    return list(itertools.islice(merged, limit))


def first_snapshots(*, session_id: int) -> dict[str, OrderbookSnapshot]:
    """Each recorded market's first snapshot: the books a replay starts from."""
    found: dict[str, OrderbookSnapshot] = {}
    for ticker in recorded_markets(session_id=session_id):
        item = next(_snapshots(session_id, ticker, 1, 0, 1), None)
        if item is not None and isinstance(item.message, OrderbookSnapshot):
            found[ticker] = item.message
    return found


class BookReplayer:
    """Applies recorded items in receive order and keeps every market's book, as the trader's client did."""

    def __init__(self) -> None:
        self.books: dict[str, OrderBook] = {}
        self.stale: set[str] = set()
        """Markets whose book is unknown: a gap touched them and no snapshot has come since."""

    def apply(self, item: Recorded) -> None:
        message = item.message
        if isinstance(message, Gap):
            self.stale.update(message.markets)
            return
        book = self.books.get(message.market_ticker)
        if book is None:
            book = self.books[message.market_ticker] = OrderBook(message.market_ticker)
        if isinstance(message, OrderbookSnapshot):
            book.apply_snapshot(message)
            self.stale.discard(message.market_ticker)
        else:
            book.apply_delta(message)

    def is_current(self, market_ticker: str, sid: int) -> bool:
        """Whether the market's book is the exchange's book as of the latest message of ``sid``.

        It is when the market's snapshot came on that same subscription and no gap has touched it since.
        """
        book = self.books.get(market_ticker)
        return book is not None and book.sid == sid and market_ticker not in self.stale


@dataclass
class BookAt:
    book: OrderBook
    sid: int | None
    seq: int | None
    """The seq asked for (None: the end of the recording)."""
    position: int
    """The market's last recorded message at or before that seq."""
    current: bool
    """False when a gap made the market's book unknown there (the book shown is the last one known)."""
    reason: str = ""


def market_sids(*, session_id: int, market_ticker: str) -> list[int]:
    """The subscriptions a market was recorded on, in the order they began (each begins with a snapshot)."""
    rows = (
        RecordedSnapshot.objects.filter(session_id=session_id, market_ticker=market_ticker)
        .order_by("position")
        .values_list("sid", flat=True)
    )
    return list(dict.fromkeys(rows))


def _last_delta(session_id: int, market_ticker: str, *, sid: int | None = None, seq: int | None = None) -> int | None:
    """The position of the market's last delta (on ``sid`` at or before ``seq``, when given), or None."""
    for block in RecordedDelta.objects.market_blocks(session_id, market_ticker, newest_first=True):
        if sid is not None:
            block = block.filter(sid=sid, seq__lte=seq)
        position: int | None = block.values_list("position", flat=True).first()
        if position is not None:
            return position
    return None


def book_at(*, session_id: int, market_ticker: str, seq: int | None = None, sid: int | None = None) -> BookAt:
    """The market's book rebuilt from the recording: at ``seq`` of subscription ``sid``, or at the end.

    ``sid`` may be left out when the market was recorded on one subscription only. Raises RecordingError
    when the recording has nothing to rebuild from.
    """
    snapshots = RecordedSnapshot.objects.filter(session_id=session_id, market_ticker=market_ticker)
    if seq is None:
        last = max(snapshots.aggregate(p=Max("position"))["p"] or 0, _last_delta(session_id, market_ticker) or 0)
        if not last:
            raise RecordingError(f"nothing was recorded for {market_ticker} in session {session_id}")
        target = last
    else:
        if sid is None:
            sids = market_sids(session_id=session_id, market_ticker=market_ticker)
            if not sids:
                raise RecordingError(f"nothing was recorded for {market_ticker} in session {session_id}")
            if len(sids) > 1:
                listed = ", ".join(str(s) for s in sids)
                raise RecordingError(
                    f"{market_ticker} was recorded on subscriptions {listed}; say which with --sid (seq counts per sid)"
                )
            sid = sids[0]
        last_snapshot = (
            snapshots.filter(sid=sid, seq__lte=seq).order_by("-position").values_list("position", flat=True).first()
        )
        last_delta = _last_delta(session_id, market_ticker, sid=sid, seq=seq)
        target = max(last_snapshot or 0, last_delta or 0)
        if not target:
            raise RecordingError(f"{market_ticker} has no recorded message on sid {sid} at or before seq {seq}")
    base = snapshots.filter(position__lte=target).order_by("-position").first()
    if base is None:
        raise RecordingError(f"{market_ticker} has no snapshot before position {target}")
    book = OrderBook(market_ticker)
    book.apply_snapshot(
        OrderbookSnapshot(
            sid=base.sid,
            seq=base.seq,
            market_ticker=market_ticker,
            market_id="",
            yes=_levels(base.yes),
            no=_levels(base.no),
            id=base.command_id,
        )
    )
    fields = ("sid", "seq", "side", "price", "delta", "ts_ms")
    blocks = RecordedDelta.objects.market_blocks(session_id, market_ticker, after=base.position, through=target)
    for d_sid, d_seq, side, price, delta, ts_ms in itertools.chain.from_iterable(
        block.values_list(*fields).iterator(chunk_size=5000) for block in blocks
    ):
        book.apply_delta(
            OrderbookDelta(
                sid=d_sid,
                seq=d_seq,
                market_ticker=market_ticker,
                market_id="",
                price=price,
                delta=delta,
                side=side,
                ts_ms=ts_ms,
            )
        )
    result = BookAt(book=book, sid=sid if seq is not None else base.sid, seq=seq, position=target, current=True)
    # Gaps after the book's snapshot that touched this market and lie at or before the seq asked for.
    for gap in RecordedGap.objects.filter(session_id=session_id, position__gt=base.position).order_by("position"):
        if market_ticker not in gap.markets:
            continue
        # A gap after the market's last message still counts when it lies on the same subscription at or
        # before the seq asked for.
        later = seq is not None and gap.position > target
        if later and (gap.sid != sid or gap.expected_seq is None or gap.expected_seq > (seq or 0)):
            continue
        result.current = False
        if gap.kind == RecordedGap.Kind.DISCONNECT:
            result.reason = f"the connection was lost after sid {gap.sid} seq {(gap.expected_seq or 1) - 1}"
        elif gap.kind == RecordedGap.Kind.RESUBSCRIBE:
            result.reason = f"the subscription was replaced after sid {gap.sid} seq {(gap.expected_seq or 1) - 1}"
        else:
            result.reason = f"seq gap on sid {gap.sid}: expected {gap.expected_seq}, received {gap.received_seq}"
        break
    return result


PRICE_HISTORY_DELTAS = 20_000
"""The most deltas a price history reads: the charts of a long session stay a bounded query."""

PRICE_HISTORY_POINTS = 600
"""The most points a price history returns (a chart is a few hundred pixels wide)."""

RATE_SAMPLES = 120
"""Positions a message-rate history samples (each an index lookup)."""

RATE_WINDOW = 1.0
"""The shortest stretch, in seconds, one message rate is measured over."""


def _epoch_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _thinned(points: list[Any], most: int) -> list[Any]:
    """At most ``most`` of ``points``, evenly spread, always keeping the last."""
    if len(points) <= most:
        return points
    step = len(points) / most
    return [points[int(i * step)] for i in range(most - 1)] + [points[-1]]


def price_history(
    *, session_id: int, market_ticker: str, deltas: int = PRICE_HISTORY_DELTAS, points: int = PRICE_HISTORY_POINTS
) -> dict[str, Any]:
    """A market's best YES bid and ask over the session, rebuilt from its recording and bounded.

    Reads at most ``deltas`` deltas: the newest ones, replayed from the first snapshot among them; when none of
    them is a snapshot (a long stretch on one subscription), the book can only be rebuilt forwards, so it
    reads the first ``deltas`` after the market's latest snapshot instead. ``from_start`` / ``to_end`` say
    whether the points reach the market's first recorded message / its last one. Each point is
    ``[epoch ms, bid, ask]`` with Kalshi's price strings (None for an empty side), one per change of the top.
    """
    snapshot_rows = RecordedSnapshot.objects.filter(session_id=session_id, market_ticker=market_ticker)
    newest = RecordedDelta.objects.market_blocks(session_id, market_ticker, newest_first=True)
    positions_newest_first = (p for block in newest for p in block.values_list("position", flat=True)[:deltas])
    window = list(itertools.islice(positions_newest_first, deltas - 1, deltas))
    positions = snapshot_rows.order_by("position").values_list("position", flat=True)
    to_end = True
    if not window:
        base = positions.first()
    else:
        base = positions.filter(position__gte=window[0]).first()
        if base is None:
            base = positions.order_by("-position").first()
            to_end = False
    history: dict[str, Any] = {
        "market_ticker": market_ticker,
        "session_id": session_id,
        "points": [],
        "from_start": True,
        "to_end": to_end,
    }
    if base is None:
        return history
    history["from_start"] = not snapshot_rows.filter(position__lt=base).exists() and not (
        RecordedDelta.objects.of_market(session_id, market_ticker).filter(position__lt=base).first() is not None
    )
    replayed = list(_deltas(session_id, market_ticker, deltas, base, deltas))
    last = replayed[-1].position if replayed and not to_end else None
    if last is not None and RecordedDelta.objects.of_market(session_id, market_ticker, after=last).first() is None:
        history["to_end"], last = True, None  # the forward read happened to reach the end after all
    resyncs = list(_snapshots(session_id, market_ticker, deltas, base - 1, deltas))
    book = OrderBook(market_ticker)
    found: list[list[Any]] = []
    shown: tuple[str | None, str | None] | None = None
    for item in heapq.merge(resyncs, replayed, key=lambda item: item.position):
        if last is not None and item.position > last:
            break
        message = item.message
        try:
            if isinstance(message, OrderbookSnapshot):
                book.apply_snapshot(message)
            elif isinstance(message, OrderbookDelta):
                book.apply_delta(message)
        except BookInconsistent:
            history["to_end"] = False  # a recording the trader could not have made: show what came before
            break
        top = book.top()
        now = (
            format_price(top.yes_bid[0]) if top.yes_bid else None,
            format_price(top.yes_ask[0]) if top.yes_ask else None,
        )
        if now != shown:
            shown = now
            found.append([_epoch_ms(item.received_at), *now])
    history["points"] = _thinned(found, points)
    return history


def message_rates(*, session_id: int, samples: int = RATE_SAMPLES, window: float | None = None) -> list[list[float]]:
    """Messages recorded per second over the session, as ``[epoch ms, per second]`` points, from at most
    ``samples`` rows: snapshots, deltas and gaps share one position numbering in receive order, so the
    messages between two rows are the difference of their positions. Each rate spans at least ``window``
    seconds: messages read in one burst carry nearly the same receive time, and would show as spikes."""
    bounds = RecordedMarket.objects.filter(session_id=session_id).aggregate(
        first=Min("first_position"), last=Max("last_position")
    )
    first, last = bounds["first"], bounds["last"]
    if first is None or last is None or last <= first:
        return []
    window = RATE_WINDOW if window is None else window
    span = last - first
    wanted = sorted({first + span * i // (samples - 1) for i in range(samples)})
    found: dict[int, datetime] = {}
    for rows in (RecordedDelta.objects, RecordedSnapshot.objects):
        found.update(rows.filter(session_id=session_id, position__in=wanted).values_list("position", "received_at"))
    sampled = sorted(found.items())
    rates: list[list[float]] = []
    if not sampled:
        return rates
    p0, t0 = sampled[0]
    for p1, t1 in sampled[1:]:
        seconds = (t1 - t0).total_seconds()
        if seconds > 0 and seconds >= window:
            rates.append([_epoch_ms(t1), round((p1 - p0) / seconds, 1)])
            p0, t0 = p1, t1
    return rates
