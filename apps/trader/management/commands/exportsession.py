"""``manage.py exportsession <id|latest> [--what recording|orders|fills] --format jsonl|csv``: a recording as
training data, or what the session traded."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from apps.marketdata.export import FIELDS, FORMATS, Progress, TextSink, export_records, write_records
from apps.marketdata.selectors import RecordingError, recording_messages, recording_totals
from apps.trader.export import (
    FILL_FIELDS,
    ORDER_FIELDS,
    fill_records,
    order_records,
    session_fills,
    session_orders,
)
from apps.trader.models import TradingSession
from apps.trader.selectors import session_resolve

WHAT = ("recording", "orders", "fills")


class Command(BaseCommand):
    help = (
        "Export a recorded session: one record per recorded message (snapshot, delta or gap) in receive "
        f"order, with the fields {', '.join(FIELDS)}. Prices and counts are exact strings in Kalshi's formats. "
        "A gap is written once per market it made stale, its seq being the first seq that never arrived. "
        "With --what orders: one record per order as it stands (its latest change's reason), oldest first, with "
        f"the fields {', '.join(ORDER_FIELDS)}; with --what fills: one per fill in trade order, with the fields "
        f"{', '.join(FILL_FIELDS)}. Streams: memory does not grow with the session."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("session", help="a session id, or 'latest'")
        parser.add_argument(
            "--what", choices=WHAT, default="recording", help="recording (default): the market data; orders; fills"
        )
        parser.add_argument("--format", choices=FORMATS, default="jsonl", help="jsonl (default) or csv")
        parser.add_argument("--market", metavar="TICKER", help="only this market")
        parser.add_argument("--output", metavar="FILE", type=Path, help="write here instead of standard output")
        bar = parser.add_mutually_exclusive_group()
        bar.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
        bar.add_argument(
            "--no-progress", action="store_true", help="no progress bar (default: shown when stderr is a terminal)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            session = session_resolve(options["session"])
        except RecordingError as exc:
            raise CommandError(str(exc)) from None
        market: str | None = options["market"]
        what: str = options["what"]
        show = options["progress"] or (not options["no_progress"] and self.stderr.isatty())
        progress = Progress(self._progress_write, self._total(session, what, market)) if show else None
        output: Path | None = options["output"]
        # One transaction: a consistent view, and on PostgreSQL cursors that stream instead of materializing.
        with transaction.atomic(), self._records(session, what, market) as (fields, records):
            if output is None:
                try:
                    self._write(records, self.stdout, options["format"], progress, fields)
                except BrokenPipeError:
                    # The reader stopped early (`| head`): stop quietly, and keep Python from
                    # complaining when it flushes standard output on exit.
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return
            try:
                with output.open("w", encoding="utf-8", newline="") as out:
                    count = self._write(records, out, options["format"], progress, fields)
            except OSError as exc:
                raise CommandError(f"cannot write {output}: {exc.strerror}") from None
        noun = "records" if what == "recording" else what
        self.stderr.write(f"Wrote {count:,} {noun} of session {session.pk} to {output}")

    @staticmethod
    @contextlib.contextmanager
    def _records(
        session: TradingSession, what: str, market: str | None
    ) -> Iterator[tuple[Sequence[str], Iterator[dict[str, Any]]]]:
        """(the fields, the records) of the export; the recording's cursor is closed at the end."""
        if what == "orders":
            yield ORDER_FIELDS, order_records(session_orders(session_id=session.pk, market_ticker=market))
        elif what == "fills":
            yield FILL_FIELDS, fill_records(session_fills(session_id=session.pk, market_ticker=market))
        else:
            with contextlib.closing(recording_messages(session_id=session.pk, market_ticker=market)) as items:
                yield FIELDS, export_records(items, market_ticker=market)

    def _total(self, session: TradingSession, what: str, market: str | None) -> int:
        """How many records the export will write, for the progress bar."""
        if what == "orders":
            return session_orders(session_id=session.pk, market_ticker=market).count()
        if what == "fills":
            return session_fills(session_id=session.pk, market_ticker=market).count()
        totals = recording_totals(session_id=session.pk, market_ticker=market)
        gap_records = totals["gaps"] if market else self._gap_records(session.markets, totals["gaps"])
        return totals["snapshots"] + totals["deltas"] + gap_records

    def _progress_write(self, text: str) -> None:
        self.stderr.write(text, ending="")
        self.stderr.flush()

    @staticmethod
    def _gap_records(markets: list[str], gaps: int) -> int:
        return gaps * max(1, len(markets))

    @staticmethod
    def _write(records: Any, out: TextSink, fmt: str, progress: Progress | None, fields: Sequence[str]) -> int:
        return write_records(records, out, fmt=fmt, progress=progress, fields=fields)
