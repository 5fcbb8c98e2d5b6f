"""The trader's settings, as the runtime (or a test) hands them to the coordinator and its components."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from apps.kalshi.backoff import Backoff
from apps.trader.core.states import STATE_TIMEOUTS, State


@dataclass
class CoordinatorOptions:
    environment: str
    markets: list[str]
    exchange_url: str
    status_interval: float = 1.0
    orderbook_interval: float = 0.05
    """Changed books go to consoles as one ``orderbooks`` event per tick of this many seconds."""
    orderbooks_per_tick: int = 100
    """At most this many books per tick; the rest wait for the next ones, oldest change first."""
    heartbeat_tops: int = 2000
    """At most this many changed tops go into one heartbeat's MarketTop rows; the rest wait, oldest first, so the
    heartbeat's cost stays bounded however many markets move (at 10,000 busy markets a top lags up to ~5 s)."""
    summary_interval: float = 60.0
    """While ready, an ORDERBOOK STATUS line goes to the console when the number of live markets changes and
    otherwise once per this many seconds."""
    timeouts: dict[State, float | None] = field(default_factory=lambda: dict(STATE_TIMEOUTS))
    error_backoff: Backoff = field(default_factory=lambda: Backoff(initial=1.0, cap=60.0))
    heartbeat_stale_after: float = 10.0
    feed_idle_timeout: float = 30.0
    console_history: int = 200
    discover: int = 0
    """Pick this many markets by 24 h volume through REST in ``initializing`` (0: use ``markets``)."""
    crosscheck_interval: float | None = None
    """Seconds between comparisons of every live book with the exchange's REST book; None: off."""
    database_slow_after: float = 2.0
    """A session write still unanswered after this many seconds marks the database unreachable."""
    spill_dir: Path | None = None
    """Where rows that could not be written before the shutdown deadline are saved (None: only logged)."""
    control_wait: float = 5.0
    """How long adding or removing markets waits for the exchange's answer."""
    control_address: str = ""
    """The channel this trader takes control requests on, recorded on its session row."""
    replay_of: int | None = None
    """The recorded session the exchange replays (the session row says so); None for a live exchange."""
    task_restart_backoff: Callable[[], Backoff] = lambda: Backoff(initial=1.0, cap=30.0)
    """Back-off between restarts of a crashed background task."""
