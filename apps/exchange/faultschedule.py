"""The simulator's clock-driven faults: periodic connection drops and data stalls, and whether data is stalled.

The switches themselves are ``apps.exchange.faults.Faults``; this is what acts on the periodic ones. A
changed period restarts its schedule from the moment it is seen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from apps.exchange.config import SimulatorConfig
from apps.exchange.counts import FaultCounts

CHECK_INTERVAL = 0.02
"""Seconds between looks at the schedule."""


class FaultScheduler:
    def __init__(self, config: SimulatorConfig, *, drop_connections: Callable[[], int], fault_counts: FaultCounts):
        self._config = config
        self._drop_connections = drop_connections
        self._fault_counts = fault_counts
        self._stall_until = 0.0
        self._stalled_now = False

    def stall_data(self, seconds: float) -> None:
        """Produce no orderbook deltas for ``seconds`` from now (a later end wins over an earlier one)."""
        until = asyncio.get_running_loop().time() + seconds
        self._stall_until = max(self._stall_until, until)

    def stalled(self, now: float) -> bool:
        """Whether data is stalled at loop time ``now``; each stall that starts is counted once."""
        stalled = self._config.faults.stall or now < self._stall_until
        if stalled and not self._stalled_now:
            self._fault_counts.stall += 1
        self._stalled_now = stalled
        return stalled

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        drop_period: float | None = None
        drop_at: float | None = None
        stall_period: float | None = None
        stall_at: float | None = None
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            now = loop.time()
            faults = self._config.faults
            if faults.drop_every != drop_period:
                drop_period = faults.drop_every
                drop_at = now + drop_period if drop_period else None
            if drop_at is not None and drop_period and now >= drop_at:
                self._drop_connections()
                drop_at = now + drop_period
            if faults.stall_every != stall_period:
                stall_period = faults.stall_every
                stall_at = now + stall_period if stall_period else None
            if stall_at is not None and stall_period and now >= stall_at:
                self.stall_data(faults.stall_for)
                stall_at = now + stall_period
