"""One rule for the trader's health, used by the trader itself and by web workers reading its rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from apps.trader.core.states import BOOKS_LIVE, State

HealthStatus = Literal["healthy", "degraded", "unhealthy"]


@dataclass(frozen=True)
class Health:
    status: HealthStatus
    reason: str

    @property
    def ok(self) -> bool:
        """Whether a probe should pass: a degraded trader is up and healing itself."""
        return self.status != "unhealthy"

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "reason": self.reason}


def state_label(state: str) -> str:
    """The human label of a state name as rows and documents carry it (the name itself if unknown)."""
    try:
        return State(state).label
    except ValueError:
        return state


def evaluate_health(
    *,
    state: str,
    heartbeat_age: float | None,
    metrics: dict[str, Any],
    heartbeat_stale_after: float,
    feed_idle_timeout: float,
    database_error: str = "",
) -> Health:
    """Judge health from the trader's state, heartbeat age (s) and status metrics.

    Connected and quiet is healthy: a quiet market sends nothing but pings. Books stale after a gap are
    degraded (they heal with a fresh snapshot). A silent or closed socket, a stale heartbeat or any state
    but ``ready`` is unhealthy, and so is a trader whose database does not answer (``database_error``):
    it keeps its books live, but nothing it does is being written.
    """
    if heartbeat_age is None:
        return Health("unhealthy", "no trader heartbeat recorded")
    if heartbeat_age > heartbeat_stale_after:
        return Health("unhealthy", f"trader heartbeat is {heartbeat_age:.1f} s old")
    if database_error:
        return Health("unhealthy", database_error)
    if state not in BOOKS_LIVE:
        return Health("unhealthy", f"trader is {state_label(state)}")
    if metrics.get("ws_connection_status") != "connected":
        return Health("unhealthy", f"exchange socket is {metrics.get('ws_connection_status', 'unknown')}")
    silent_for = metrics.get("socket_silent_seconds")
    if isinstance(silent_for, int | float) and silent_for > feed_idle_timeout:
        return Health("unhealthy", f"exchange socket silent for {silent_for:.1f} s")
    stale = metrics.get("stale_markets") or 0
    if stale:
        return Health("degraded", f"{stale} book(s) stale after a gap, resyncing")
    return Health("healthy", f"{state_label(state)}; {metrics.get('markets_connected', 0)} markets live")
