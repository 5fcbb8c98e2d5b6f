"""Exponential back-off with full jitter and a cap, used for reconnects and error recovery."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float = 0.5
    cap: float = 30.0
    jitter: float = 0.2
    """Fraction of the delay added or removed at random, so many clients don't retry in step."""
    rng: random.Random = field(default_factory=random.Random, repr=False)
    attempt: int = 0

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; each call counts one attempt."""
        self.attempt += 1
        base: float = min(self.cap, self.initial * 2.0 ** (self.attempt - 1))
        spread = base * self.jitter
        return max(0.0, min(self.cap, base + self.rng.uniform(-spread, spread)))

    def reset(self) -> None:
        self.attempt = 0
