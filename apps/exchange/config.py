"""What the exchange simulator is told: its settings and the markets it simulates unless told otherwise.

A plain dataclass so settings and the commands can build it; the simulator's parts read it at every use,
so a field changed on a running simulator (``sim.config.message_rate = 0``) takes effect at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from apps.exchange.faults import Faults
from apps.exchange.market import DECI_CENT, TAPERED_DECI_CENT

DEFAULT_MARKETS: list[str] = [
    "KXFED-26DEC-T4.25",
    "KXCPI-26DEC-T0.3",
    "KXBTCD-26DEC31-T100000",
    "KXNBA-26-LAL",
    "KXETHD-26DEC31-T4000",
    "KXHIGHNY-26DEC31-T45",
]
"""Plausible tickers; KXBTCD trades in deci-cents and KXETHD in tapered deci-cents, the rest in cents."""

DEFAULT_STRUCTURES = {
    "KXBTCD-26DEC31-T100000": DECI_CENT,
    "KXETHD-26DEC31-T4000": TAPERED_DECI_CENT,
}
DEFAULT_CLOSE_TIMES = {
    "KXFED-26DEC-T4.25": "2026-12-09T19:00:00Z",
    "KXCPI-26DEC-T0.3": "2026-12-10T13:30:00Z",
    "KXBTCD-26DEC31-T100000": "2026-12-31T22:00:00Z",
    "KXNBA-26-LAL": "2027-06-30T23:59:00Z",
    "KXETHD-26DEC31-T4000": "2026-12-31T22:00:00Z",
    "KXHIGHNY-26DEC31-T45": "2027-01-01T04:59:00Z",
}
FALLBACK_CLOSE_TIME = "2027-12-31T23:59:00Z"


@dataclass
class SimulatorConfig:
    """Everything the simulator needs."""

    host: str = "127.0.0.1"
    port: int = 0
    """The WebSocket API's port; 0 picks a free one (read it back from ``sim.port`` after ``start()``)."""
    rest_port: int = 0
    """The REST API's port; 0 picks a free one (``sim.rest_port``, and ``sim.api_url``, after ``start()``)."""
    public_key_pem: bytes = b""
    """Handshake and REST signatures are verified against this key (required)."""
    key_id: str | None = None
    """When set, KALSHI-ACCESS-KEY must equal it (for ``public_key_pem``; ``api_keys`` add others)."""
    api_keys: dict[str, bytes] = field(default_factory=dict)
    """More API keys: key id -> public key PEM. Each key id is an account of its own (``register_key``)."""
    starting_balance: int = 10_000 * 1_000_000
    """Cash of a new account, micro-dollars ($10,000)."""
    maker_fee_markets: list[str] = field(default_factory=list)
    """Markets whose series charge makers a fee (0.0175 x C x P x (1 - P)); makers pay nothing elsewhere."""
    read_rate: float = 200.0
    """Tokens per second of each key's read bucket for /portfolio GETs (Kalshi's Basic tier); capacity 3 s."""
    write_rate: float = 100.0
    """Tokens per second of each key's write bucket (Basic); capacity 1 s. A create costs 10, a cancel 2."""
    markets: list[str] | None = None
    """Tickers to simulate; None means DEFAULT_MARKETS."""
    message_rate: float = 50.0
    """orderbook_delta changes per second across all subscribed markets (read live; 0 pauses)."""
    ping_interval: float = 10.0
    """Seconds between heartbeat Pings (body b"heartbeat"), as Kalshi; <= 0 disables them."""
    seed: int | None = None
    """Makes books and deltas repeatable (each market has its own stream, so the k-th change of a market
    is the same whatever else is subscribed)."""
    faults: Faults = field(default_factory=Faults)
    history_size: int = 5000
    """How many past changes per market and past seqs per sid ``book_at`` can reach back."""
    outbound_limit: int = 10_000
    """Frames queued for one slow connection before its subscription gets error 25 and ends."""
    max_clock_skew: float = 60.0
    """Seconds a KALSHI-ACCESS-TIMESTAMP may differ from the exchange clock."""
    price_structures: dict[str, str] = field(default_factory=dict)
    """Ticker -> linear_cent | deci_cent | tapered_deci_cent; others use the built-in table or cents."""
    socket_send_buffer: int | None = None
    """SO_SNDBUF for accepted sockets; a small value makes slow-reader overflow show up sooner."""
