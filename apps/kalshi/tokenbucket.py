"""A token bucket, refilled continuously: Kalshi's rate limits (in the simulator) and the console socket's limits."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """At most ``capacity`` tokens, refilled at ``per_second``; a request takes its cost or is refused."""

    def __init__(self, capacity: float, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self._clock = clock
        self._tokens = capacity
        self._at = clock()

    def take(self, cost: int = 1) -> bool:
        """Take ``cost`` tokens if they are all there (a batch must fit at once); False leaves the bucket as is."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if cost > self._tokens:
            return False
        self._tokens -= cost
        return True

    def seconds_until_next(self) -> float:
        """How long until one token is there again."""
        return max(0.0, (1 - self._tokens) / self.per_second)
