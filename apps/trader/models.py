"""What the trader writes: one TradingSession per run of ``runtrader`` and its StateTransition rows.

A web worker in another process answers /v3/status, /v3/health and the console's history from these
rows alone, so the trader keeps its session's heartbeat, state and metrics up to date here.
"""

from __future__ import annotations

from typing import Any

from django.db import models


def _empty_dict() -> dict[str, Any]:
    return {}


def _empty_list() -> list[str]:
    return []


class TradingSession(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"

    environment = models.CharField(max_length=16, db_index=True)
    markets = models.JSONField(default=_empty_list, help_text="Subscribed market tickers.")
    exchange_url = models.CharField(max_length=300, help_text="The WebSocket URL the trader connected to.")
    control_address = models.CharField(
        max_length=200, blank=True, help_text="The channel-layer channel this trader takes control requests on."
    )
    replay_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="replays",
        help_text="The recorded session this one replayed (replaysession --console); empty for a live session.",
    )
    started_at = models.DateTimeField(db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING, db_index=True)
    current_state = models.CharField(max_length=64, blank=True)
    state_entered_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    latest_metrics = models.JSONField(default=_empty_dict, blank=True)
    latest_status = models.JSONField(
        default=_empty_dict,
        blank=True,
        help_text="The last trader_status event, as sent to consoles, without its metrics (latest_metrics), "
        "its markets (MarketTop rows) and the console (ConsoleLine rows).",
    )
    messages_received = models.BigIntegerField(default=0)
    snapshots_received = models.BigIntegerField(default=0)
    deltas_received = models.BigIntegerField(default=0)
    reconnects = models.IntegerField(default=0)
    gaps = models.IntegerField(default=0, help_text="Seq gaps the feed client detected.")
    resyncs = models.IntegerField(default=0, help_text="Markets healed with a fresh snapshot after a gap.")
    bytes_received = models.BigIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ("-started_at",)
        indexes = (models.Index(fields=("status", "-heartbeat_at"), name="session_status_heartbeat"),)

    def __str__(self) -> str:
        replay = f", replay of {self.replay_of_id}" if self.replay_of_id else ""
        return f"Session {self.pk} ({self.environment}{replay}, {self.status})"


class StateTransition(models.Model):
    session = models.ForeignKey(TradingSession, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=64)
    to_state = models.CharField(max_length=64)
    context = models.TextField(blank=True)
    metrics = models.JSONField(default=_empty_dict, blank=True)
    timestamp = models.DateTimeField()

    class Meta:
        ordering = ("timestamp", "id")
        indexes = (models.Index(fields=("session", "timestamp"), name="transition_session_time"),)

    def __str__(self) -> str:
        return f"{self.from_state} → {self.to_state}"

    def as_event(self) -> dict[str, Any]:
        """The ``state_transition`` payload the console receives."""
        return {
            "from_state": self.from_state,
            "to_state": self.to_state,
            "context": self.context,
            "timestamp": self.timestamp.isoformat(),
            "metrics": self.metrics,
            "session_id": self.session_id,
        }


class ConsoleLine(models.Model):
    """One line of the trader's console, written once when new; a new console replays the last ones."""

    session = models.ForeignKey(TradingSession, on_delete=models.CASCADE, related_name="console_lines")
    level = models.CharField(max_length=16)
    message = models.TextField()
    context = models.TextField(blank=True)
    timestamp = models.DateTimeField()

    class Meta:
        ordering = ("id",)
        indexes = (models.Index(fields=("session", "id"), name="console_line_session_id"),)

    def __str__(self) -> str:
        return self.message

    def as_event(self) -> dict[str, Any]:
        """The ``console`` payload the console receives."""
        return {
            "level": self.level,
            "message": self.message,
            "context": self.context,
            "timestamp": self.timestamp.isoformat(),
            "session_id": self.session_id,
        }


class MarketTop(models.Model):
    """A market's top of book as the trader's status last showed it; rewritten only when it changed."""

    session = models.ForeignKey(TradingSession, on_delete=models.CASCADE, related_name="market_tops")
    market_ticker = models.CharField(max_length=100)
    top = models.JSONField(
        default=_empty_dict, help_text="sid, seq, best yes bid/ask with sizes, spread, stale, updated_at."
    )

    class Meta:
        ordering = ("session", "market_ticker")
        constraints = (models.UniqueConstraint(fields=("session", "market_ticker"), name="market_top_session_ticker"),)

    def __str__(self) -> str:
        return self.market_ticker
