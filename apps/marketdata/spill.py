"""Spill files: rows a shutdown could not write in time, saved as JSON lines and written at the next start."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from apps.kalshi.clock import epoch_us
from apps.marketdata.dbwriter import DjangoBatchWriter, recount_market_totals
from apps.marketdata.models import RecordedDelta, RecordedGap, RecordedSnapshot
from apps.marketdata.rows import (
    KIND_NAMES,
    ROW_KINDS,
    BatchWriter,
    DeltaRow,
    GapRow,
    HealRow,
    RecordedRow,
    SnapshotRow,
    levels_json,
)


def spill_save(rows: Sequence[RecordedRow], directory: Path) -> Path:
    """Save ``rows`` to a new file in ``directory``: one JSON array per line, the kind's name, then the
    row's fields in order."""
    directory.mkdir(parents=True, exist_ok=True)
    sessions = "-".join(str(s) for s in sorted({row.session_id for row in rows}))
    path = directory / f"recording-{sessions}-{int(time.time())}.jsonl"
    with path.open("wb") as file:
        for row in rows:
            file.write(orjson.dumps([KIND_NAMES[type(row)], *row]) + b"\n")
    return path


def spill_load(path: Path, writer: BatchWriter | None = None, *, batch_size: int = 10_000) -> int:
    """Write the rows of a file ``DatabaseRecorder.spill`` saved, skipping any already in the database,
    then delete the file. Returns how many rows were written. Runs synchronously (a management command)."""
    writer = writer if writer is not None else DjangoBatchWriter()
    with path.open("rb") as file:
        rows = [_spilled_row(orjson.loads(line)) for line in file if line.strip()]
    written = _written_positions(rows)
    rows = [row for row in rows if type(row) is HealRow or (row.session_id, row.position) not in written]
    for start in range(0, len(rows), batch_size):
        writer(rows[start : start + batch_size])
    # The process that saved the file may have committed rows whose per-market totals it could not write.
    for session_id in sorted({row.session_id for row in rows}):
        recount_market_totals(session_id)
    path.unlink()
    return sum(1 for row in rows if type(row) is not HealRow)


_EARLIER_SPILL_KINDS: tuple[type[RecordedRow], ...] = (SnapshotRow, DeltaRow, GapRow, HealRow)
"""Files spilled before rows had kind names: a kind number first and an ISO 8601 time last."""


def _spilled_row(values: list[Any]) -> RecordedRow:
    kind = values[0]
    if isinstance(kind, int):
        fields = [*values[1:-1], epoch_us(datetime.fromisoformat(values[-1]))]
        row_type = _EARLIER_SPILL_KINDS[kind]
    else:
        fields = values[1:]
        row_type = ROW_KINDS[kind]
    row = row_type(*fields)
    if isinstance(row, GapRow):
        return row._replace(markets=tuple(row.markets))
    if isinstance(row, SnapshotRow) and not isinstance(row.yes, str):
        # Spilled before snapshot rows carried their levels as JSON text.
        return row._replace(yes=levels_json(row.yes), no=levels_json(row.no))
    return row


def _written_positions(rows: Sequence[RecordedRow]) -> set[tuple[int, int]]:
    """(session, position) of the given rows that are already in the database."""
    written: set[tuple[int, int]] = set()
    for session_id in {row.session_id for row in rows}:
        positions = [row.position for row in rows if row.session_id == session_id and type(row) is not HealRow]
        if not positions:
            continue
        span = {"session_id": session_id, "position__gte": min(positions), "position__lte": max(positions)}
        for model in (RecordedSnapshot, RecordedDelta, RecordedGap):
            found = model.objects.filter(**span).values_list("position", flat=True)
            written.update((session_id, position) for position in found)
    return written
