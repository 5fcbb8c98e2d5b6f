"""Recorded market data: every applied snapshot and delta of a session, and the gaps in between.

Every row carries ``position``, its place in the session's receive order. Snapshots, deltas and gaps
share one numbering, so merging the three tables by position gives the feed exactly as the trader saw it,
and replaying one market's snapshots and deltas in position order rebuilds its book.

Prices are integers in 1/10,000 dollar and sizes in 1/100 contract (``apps.kalshi.fixedpoint``), never
floats. Snapshot levels are stored as received: ``[[price, size], ...]`` integer pairs.

The session foreign keys have no database constraint on purpose: a batch insert then never reads the
session table (no per-row check during COPY, and on SQLite no lock shared with the trader's own writes).
Deleting a session still deletes its recording: Django cascades it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.db import models
from django.db.models import F, Max

DELTA_BLOCK_ROWS = 65_536
"""Positions per block of deltas. The market index leads with the block, so a batch of deltas for 10,000
markets lands in the newest block's part of that index, a few megabytes, rather than in each market's
place across the whole session's index: on SQLite a row then costs about what it costs at 10 markets."""

SESSION_MODEL = "trader.TradingSession"
"""The session a recording belongs to, named lazily: the trader's app sits above this one and imports it."""


def _empty_list() -> list[Any]:
    return []


class RecordedSnapshot(models.Model):
    """One applied ``orderbook_snapshot``: the market's whole book as of (sid, seq)."""

    pk = models.CompositePrimaryKey("session", "position")
    # The composite key starts with session_id, so it already indexes "one session in receive order".
    session = models.ForeignKey(
        SESSION_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    position = models.BigIntegerField(help_text="Place in the session's receive order (shared with deltas, gaps).")
    market_ticker = models.CharField(max_length=100)
    sid = models.IntegerField()
    seq = models.BigIntegerField()
    command_id = models.BigIntegerField(
        null=True, blank=True, help_text="The get_snapshot command this answered (a resync), else empty."
    )
    yes = models.JSONField(default=_empty_list, help_text="YES bids as received: [[price, size], ...].")
    no = models.JSONField(default=_empty_list, help_text="NO bids as received: [[price, size], ...].")
    received_at = models.DateTimeField()

    class Meta:
        ordering = ("session", "position")
        indexes = (models.Index(fields=("session", "market_ticker", "position"), name="snapshot_market_position"),)

    def __str__(self) -> str:
        return f"snapshot {self.market_ticker} sid {self.sid} seq {self.seq}"


class DeltaQuerySet(models.QuerySet["RecordedDelta"]):
    """Reads of one market's deltas through the market index, which leads with the block."""

    def _blocks(self, session_id: int, after: int, through: int | None) -> range:
        """The blocks that hold the session's deltas after position ``after`` (and up to ``through``)."""
        last = self.filter(session_id=session_id).aggregate(last=Max("position"))["last"]
        if last is None:
            return range(0)
        if through is not None:
            last = min(last, through)
        return range(after // DELTA_BLOCK_ROWS, last // DELTA_BLOCK_ROWS + 1)

    def of_market(self, session_id: int, market_ticker: str, *, after: int = 0) -> DeltaQuerySet:
        """``market_ticker``'s deltas in the session after position ``after``, in position order, in one query
        that seeks each block of the index: for a read that stops at its first row. The order names the block
        (same order): SQLite would otherwise walk the session's key in position order instead."""
        blocks = self._blocks(session_id, after, None)
        rows = self.filter(session_id=session_id, block__in=blocks, market_ticker=market_ticker)
        return (rows.filter(position__gt=after) if after else rows).order_by("block", "position")

    def market_blocks(
        self,
        session_id: int,
        market_ticker: str,
        *,
        after: int = 0,
        through: int | None = None,
        newest_first: bool = False,
    ) -> Iterator[DeltaQuerySet]:
        """``market_ticker``'s deltas after position ``after`` (and up to ``through``) one block at a time, each
        ordered by position (newest first when asked): an ordered read every database answers from the index,
        without sorting the market's rows, and that can stop at the first block it needs."""
        blocks = self._blocks(session_id, after, through)
        for block in reversed(blocks) if newest_first else blocks:
            rows = self.filter(session_id=session_id, block=block, market_ticker=market_ticker)
            if after:
                rows = rows.filter(position__gt=after)
            if through is not None:
                rows = rows.filter(position__lte=through)
            yield rows.order_by("-position" if newest_first else "position")


class RecordedDelta(models.Model):
    """One applied ``orderbook_delta``: ``delta`` contracts added at ``price`` on ``side``."""

    class Side(models.TextChoices):
        YES = "yes", "YES"
        NO = "no", "NO"

    pk = models.CompositePrimaryKey("session", "position")
    session = models.ForeignKey(
        SESSION_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    position = models.BigIntegerField(help_text="Place in the session's receive order (shared with snapshots, gaps).")
    market_ticker = models.CharField(max_length=100)
    sid = models.IntegerField()
    seq = models.BigIntegerField()
    side = models.CharField(max_length=3, choices=Side.choices)
    price = models.IntegerField(help_text="1/10,000 dollar.")
    delta = models.BigIntegerField(help_text="Signed, 1/100 contract.")
    ts_ms = models.BigIntegerField(null=True, blank=True, help_text="The exchange's timestamp (Unix ms).")
    received_at = models.DateTimeField()
    block = models.GeneratedField(
        expression=F("position") / DELTA_BLOCK_ROWS,
        output_field=models.BigIntegerField(),
        db_persist=True,
        help_text="position // DELTA_BLOCK_ROWS, kept by the database.",
    )

    objects = DeltaQuerySet.as_manager()

    class Meta:
        ordering = ("session", "position")
        indexes = (
            models.Index(fields=("session", "block", "market_ticker", "position"), name="delta_block_market_position"),
        )

    def __str__(self) -> str:
        return f"delta {self.market_ticker} sid {self.sid} seq {self.seq}"


class RecordedGap(models.Model):
    """A stretch of the feed the trader did not receive, and when fresh snapshots healed it."""

    class Kind(models.TextChoices):
        SEQ = "seq", "Seq gap"
        DISCONNECT = "disconnect", "Connection lost"
        RESUBSCRIBE = "resubscribe", "Subscription replaced"

    session = models.ForeignKey(
        SESSION_MODEL, on_delete=models.CASCADE, related_name="recorded_gaps", db_constraint=False
    )
    position = models.BigIntegerField(help_text="Place in the session's receive order.")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.SEQ)
    sid = models.IntegerField(null=True, blank=True)
    expected_seq = models.BigIntegerField(null=True, blank=True, help_text="The first seq that never arrived.")
    received_seq = models.BigIntegerField(
        null=True, blank=True, help_text="The seq that revealed the gap (empty for a lost connection)."
    )
    markets = models.JSONField(default=_empty_list, help_text="Markets whose books went stale.")
    detected_at = models.DateTimeField()
    healed_at = models.DateTimeField(null=True, blank=True, help_text="When every market had a fresh snapshot.")

    class Meta:
        ordering = ("session", "position")
        constraints = (models.UniqueConstraint(fields=("session", "position"), name="gap_session_position"),)

    def __str__(self) -> str:
        if self.kind != self.Kind.SEQ:
            return f"{self.get_kind_display().lower()} after sid {self.sid} seq {(self.expected_seq or 1) - 1}"
        return f"sid {self.sid}: expected seq {self.expected_seq}, got {self.received_seq}"


class RecordedMarket(models.Model):
    """Per-market totals of a session's recording, kept up to date by the writer (see DjangoBatchWriter)."""

    session = models.ForeignKey(
        SESSION_MODEL, on_delete=models.CASCADE, related_name="recorded_markets", db_constraint=False
    )
    market_ticker = models.CharField(max_length=100)
    snapshots = models.BigIntegerField(default=0)
    deltas = models.BigIntegerField(default=0)
    first_position = models.BigIntegerField(null=True, blank=True)
    last_position = models.BigIntegerField(null=True, blank=True)
    last_sid = models.IntegerField(null=True, blank=True)
    last_seq = models.BigIntegerField(null=True, blank=True)
    first_received_at = models.DateTimeField(null=True, blank=True)
    last_received_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("session", "market_ticker")
        constraints = (models.UniqueConstraint(fields=("session", "market_ticker"), name="recorded_market_unique"),)

    def __str__(self) -> str:
        return self.market_ticker
