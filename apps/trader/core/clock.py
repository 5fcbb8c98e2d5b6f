"""Wall-clock instants as integer microseconds since the Unix epoch: cheap to take on the hot path, exact."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_us() -> int:
    return time.time_ns() // 1_000


def epoch_us(moment: datetime) -> int:
    """An aware datetime as integer microseconds since the Unix epoch (exact)."""
    return (moment - _UNIX_EPOCH) // timedelta(microseconds=1)


def from_epoch_us(us: int) -> datetime:
    return _UNIX_EPOCH + timedelta(microseconds=us)
