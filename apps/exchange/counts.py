"""What the exchange simulator counts: its traffic and the faults it injected, each counter named once here.

``ExchangeSimulator.stats`` reports them as a dict, so adding a field here is all a new counter needs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class TrafficCounts:
    connections_total: int = 0
    handshakes_rejected: int = 0
    messages_sent: int = 0
    snapshots_sent: int = 0
    deltas_sent: int = 0
    pings_sent: int = 0
    commands: int = 0
    rest_requests: int = 0
    rate_limited: int = 0
    orders_placed: int = 0
    private_sent: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class FaultCounts:
    """How often each fault kind happened."""

    drop: int = 0
    skip_seq: int = 0
    stall: int = 0
    no_ping: int = 0
    subscription_error: int = 0
    buffer_overflow: int = 0
    reject_handshake: int = 0
    malformed: int = 0
    oversized: int = 0
    rest_429: int = 0
    reject_orders: int = 0
    order_delay: int = 0
    drop_private: int = 0
    accept_then_5xx: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
