from __future__ import annotations

import pytest

from apps.kalshi.tokenbucket import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_gives_its_burst_then_refuses_until_it_refills() -> None:
    clock = Clock()
    bucket = TokenBucket(3, 2.0, clock)

    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.seconds_until_next() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take()
    assert not bucket.take()


def test_a_cost_is_taken_whole_or_not_at_all() -> None:
    clock = Clock()
    bucket = TokenBucket(10, 10.0, clock)

    assert bucket.take(7)
    assert not bucket.take(4)  # 3 left: a batch of 4 does not fit, and takes nothing
    assert bucket.take(3)
    clock.now += 60  # refilling stops at the capacity
    assert bucket.take(10)
    assert not bucket.take(1)
