"""Fault injection switches for the exchange simulator.

``Faults`` is a plain mutable dataclass. The simulator reads ``sim.faults`` every time a fault could
apply, so assigning a field on a running simulator (``sim.faults.skip_seq_every = 50``) or replacing the
whole object (``sim.faults = Faults(no_ping=True)``) takes effect at once. Everything is off by default.
Counter-based faults count per subscription (deltas) or per connection (frames) and are deterministic;
clock-based ones (drops, periodic stalls) are scheduled from when they are switched on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from apps.kalshi.messages import ERROR_CHANNEL

OVERSIZED_DEFAULT_BYTES = 1_100_000
"""Just over websockets' default 1 MiB max_size, so a default client refuses the frame."""


@dataclass
class Faults:
    """Fault switches, all off by default. See the module docstring for runtime use."""

    drop_every: float | None = None
    """Seconds: abort every open connection (no close frame) this often."""

    skip_seq_every: int | None = None
    """Every Nth orderbook_delta of a subscription is not sent, though its seq is consumed (a gap)."""

    stall: bool = False
    """While True no orderbook deltas are produced; pings and command replies continue."""

    stall_every: float | None = None
    """Seconds: start a stall of ``stall_for`` seconds this often."""

    stall_for: float = 5.0

    no_ping: bool = False
    """While True the server sends no heartbeat pings."""

    error_every: int | None = None
    """After every Nth orderbook_delta of a subscription, send ``error_code`` and end that subscription."""

    error_code: int = ERROR_CHANNEL
    """10 (channel error) or 25 (buffer overflow): both end the subscription; the client must resubscribe."""

    reject_handshake: bool = False
    """While True every WebSocket handshake is answered with HTTP 401."""

    malformed_every: int | None = None
    """After every Nth frame sent on a connection, also send a malformed one (kinds rotate: not JSON,
    JSON that is not an object, an orderbook_delta missing its fields). Malformed frames consume no seq."""

    oversized_every: int | None = None
    """After every Nth frame sent on a connection, also send a text frame of ``oversized_bytes``."""

    oversized_bytes: int = OVERSIZED_DEFAULT_BYTES

    rest_429: int = 0
    """The next K REST requests are answered 429 (no Retry-After header, as Kalshi); counts down."""

    reject_orders: int = 0
    """The next N order creates (single or batch requests) are refused with 400 ``invalid_order``; counts down."""

    order_delay: float = 0.0
    """Seconds every order request (create, cancel, amend, decrease, batch) waits before it is answered."""

    drop_private: int = 0
    """The next N private-channel messages (fill, user_order, market_position) are not sent; counts down."""

    accept_then_5xx: int = 0
    """The next N order requests that succeed (create, cancel, amend, decrease, batch) are carried out, but
    answered 500 as if they had failed; counts down."""


def parse_faults(spec: str) -> Faults:
    """Faults from a comma-separated spec such as ``"drop_every=30,skip_seq_every=100,no_ping"``.

    A bare name switches a flag on. Raises ValueError naming the bad part; used for the SIM_FAULTS setting.
    """
    known = {f.name: str(f.type) for f in fields(Faults)}
    values: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, raw = part.partition("=")
        name = name.strip()
        if name not in known:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(known))}")
        kind = known[name]
        if kind == "bool":
            values[name] = raw.strip().lower() in ("", "1", "true", "yes", "on")
            continue
        try:
            number: float = int(raw) if kind.startswith("int") else float(raw)
        except ValueError:
            raise ValueError(f"{name} needs a number, e.g. {name}=30; got {raw!r}") from None
        # nan, inf or a negative period would never fire, or fire without pause.
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"{name} needs a finite number of at least 0; got {raw.strip()!r}")
        values[name] = number
    return Faults(**values)  # type: ignore[arg-type]
