"""Integer-microsecond instants and their ISO 8601 text."""

from __future__ import annotations

import random

from apps.kalshi.clock import from_epoch_us, iso_from_epoch_us


def test_the_iso_text_of_an_instant_is_what_isoformat_writes() -> None:
    rng = random.Random(2026)
    instants = [0, 1, 999_999, 1_000_000, 1_764_561_600_000_000, 1_764_561_600_000_001]
    instants += [1_764_561_600_000_000 + rng.randrange(5_000_000) for _ in range(2_000)]  # mostly the same second
    instants += [rng.randrange(4_000_000_000_000_000) for _ in range(2_000)]
    instants += [rng.randrange(4_000_000_000) * 1_000_000 for _ in range(200)]  # whole seconds: no fraction
    for us in instants:
        assert iso_from_epoch_us(us) == from_epoch_us(us).isoformat(), us
