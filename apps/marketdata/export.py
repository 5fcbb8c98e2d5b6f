"""Exporting a recording for training: one record per recorded message, in receive order.

Every record has the same fields. Values are exact strings in Kalshi's own formats (prices "0.4200",
counts "12.50"); sid, seq and ts_ms are integers; received_at is ISO 8601 in UTC with microseconds. A gap
is written once per market it made stale, with ``seq`` set to the first seq that never arrived.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from apps.kalshi.fixedpoint import format_price, format_size
from apps.kalshi.messages import OrderbookDelta, OrderbookSnapshot, wire_levels
from apps.marketdata.selectors import Gap, Recorded

FIELDS = (
    "kind",
    "market_ticker",
    "sid",
    "seq",
    "side",
    "price_dollars",
    "delta_fp",
    "yes_dollars_fp",
    "no_dollars_fp",
    "ts_ms",
    "received_at",
)
FORMATS = ("jsonl", "csv")


def export_timestamp(value: datetime) -> str:
    """A time as every export writes it: ISO 8601 in UTC with microseconds."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def export_records(items: Iterable[Recorded], *, market_ticker: str | None = None) -> Iterator[dict[str, Any]]:
    """Turn recorded items into export records (dicts with exactly FIELDS, None where a field is empty)."""
    for item in items:
        message = item.message
        received_at = export_timestamp(item.received_at)
        if isinstance(message, OrderbookDelta):
            yield {
                "kind": "delta",
                "market_ticker": message.market_ticker,
                "sid": message.sid,
                "seq": message.seq,
                "side": message.side,
                "price_dollars": format_price(message.price),
                "delta_fp": format_size(message.delta),
                "yes_dollars_fp": None,
                "no_dollars_fp": None,
                "ts_ms": message.ts_ms,
                "received_at": received_at,
            }
        elif isinstance(message, OrderbookSnapshot):
            yield {
                "kind": "snapshot",
                "market_ticker": message.market_ticker,
                "sid": message.sid,
                "seq": message.seq,
                "side": None,
                "price_dollars": None,
                "delta_fp": None,
                "yes_dollars_fp": wire_levels(message.yes),
                "no_dollars_fp": wire_levels(message.no),
                "ts_ms": None,
                "received_at": received_at,
            }
        elif isinstance(message, Gap):
            markets = (market_ticker,) if market_ticker is not None else message.markets
            for ticker in markets:
                yield {
                    "kind": "gap",
                    "market_ticker": ticker,
                    "sid": message.sid,
                    "seq": message.expected_seq,
                    "side": None,
                    "price_dollars": None,
                    "delta_fp": None,
                    "yes_dollars_fp": None,
                    "no_dollars_fp": None,
                    "ts_ms": None,
                    "received_at": received_at,
                }


class TextSink(Protocol):
    def write(self, text: str, /) -> Any: ...


class Progress:
    """A one-line progress bar on a terminal stream, redrawn at most a few times a second."""

    def __init__(self, write: Callable[[str], object], total: int, *, width: int = 30, interval: float = 0.2) -> None:
        self.write = write
        self.total = max(total, 0)
        self.width = width
        self.interval = interval
        self.done = 0
        self._started = time.monotonic()
        self._drawn = 0.0

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._drawn >= self.interval:
            self._drawn = now
            self._draw(now)

    def finish(self) -> None:
        self._draw(time.monotonic())
        self.write("\n")

    def _draw(self, now: float) -> None:
        fraction = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(fraction * self.width)
        rate = self.done / max(now - self._started, 1e-9)
        bar = "#" * filled + "." * (self.width - filled)
        self.write(f"\r[{bar}] {fraction:4.0%} {self.done:,}/{self.total:,} records {rate:,.0f}/s")


def write_records(
    records: Iterable[dict[str, Any]],
    out: TextSink,
    *,
    fmt: str,
    progress: Progress | None = None,
    header: bool = True,
    fields: Sequence[str] = FIELDS,
) -> int:
    """Write records as JSON lines or CSV (its header row first unless ``header`` is false: a later part of
    a file written in parts); returns how many were written. ``fields``: the records' fields, in order (the
    CSV columns)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    count = 0
    if fmt == "jsonl":
        dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        for record in records:
            out.write(dumps(record) + "\n")
            count += 1
            if progress is not None:
                progress.advance()
    else:
        writer = csv.writer(out, lineterminator="\n")
        if header:
            writer.writerow(fields)
        compact = json.JSONEncoder(separators=(",", ":")).encode
        for record in records:
            writer.writerow([_csv_value(record[name], compact) for name in fields])
            count += 1
            if progress is not None:
                progress.advance()
    if progress is not None:
        progress.finish()
    return count


def _csv_value(value: Any, compact: Callable[[Any], str]) -> Any:
    """A CSV cell: empty for None, JSON for a list (and for a bool, as the JSON lines write it)."""
    if value is None:
        return ""
    return compact(value) if isinstance(value, list | bool) else value
