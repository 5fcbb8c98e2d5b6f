"""Kalshi's rate limits: a token bucket per API key for reads and one for writes, refilled continuously."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """``rate`` tokens per second, holding at most ``capacity``; a request takes its cost or is refused."""

    rate: float
    capacity: float
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    _last: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.capacity
        self._last = self.clock()

    def take(self, cost: int) -> bool:
        """Take ``cost`` tokens if they are all there (a batch must fit at once); False leaves the bucket as is."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
        self._last = now
        if cost > self.tokens:
            return False
        self.tokens -= cost
        return True
