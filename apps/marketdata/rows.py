"""The recorded rows: one typed record per kind, the one definition of each table's layout.

Each row's fields are its table's columns, in order (a ``*_us`` field is the ``*_at`` column, Unix
microseconds). ``BatchWriter`` is what writes a batch of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, cast

import orjson

from apps.kalshi.messages import Level


class DeltaRow(NamedTuple):
    session_id: int
    position: int
    market_ticker: str
    sid: int
    seq: int
    side: str
    price: int
    delta: int
    ts_ms: int | None
    received_us: int


class SnapshotRow(NamedTuple):
    session_id: int
    position: int
    market_ticker: str
    sid: int
    seq: int
    command_id: int | None
    yes: str
    """The levels as the column holds them: JSON text ``[[price, size], ...]`` in units. Text rather than
    tuples: a 10,000-market start buffers 10,000 snapshots, at a third of the memory, and the writer
    passes it on as it is."""
    no: str
    received_us: int


class GapRow(NamedTuple):
    session_id: int
    position: int
    kind: str
    sid: int | None
    expected_seq: int | None
    received_seq: int | None
    markets: tuple[str, ...]
    detected_us: int


class HealRow(NamedTuple):
    """The gaps of the session recorded before ``position`` are healed (a heal takes no position itself)."""

    session_id: int
    position: int
    healed_us: int


RecordedRow = DeltaRow | SnapshotRow | GapRow | HealRow
ROW_KINDS: dict[str, type[RecordedRow]] = {"snapshot": SnapshotRow, "delta": DeltaRow, "gap": GapRow, "heal": HealRow}
"""Kind names, as spill files and metrics write them."""
KIND_NAMES = {cls: name for name, cls in ROW_KINDS.items()}


def column_names(row_type: type[tuple[Any, ...]]) -> str:
    fields: tuple[str, ...] = row_type._fields  # type: ignore[attr-defined]
    return ", ".join(f"{name[:-3]}_at" if name.endswith("_us") else name for name in fields)


new_row = cast(Callable[[type[DeltaRow], tuple[Any, ...]], DeltaRow], tuple.__new__)


def levels_json(levels: Sequence[Level] | Sequence[list[int]]) -> str:
    """Levels as a snapshot row carries them: JSON text ``[[price, size], ...]`` (orjson writes tuples as
    arrays)."""
    return orjson.dumps(levels).decode()


class BatchWriter(Protocol):
    """Writes one batch of rows, in order, in one transaction; raises when it could not. Runs on a thread."""

    def __call__(self, rows: Sequence[RecordedRow], *, more_waiting: bool = False) -> None:
        """``more_waiting``: more rows are queued behind this batch (the writer may defer bookkeeping)."""

    def close(self) -> None:
        """Finish deferred work and release the thread's database connection."""
