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


# What the trader traded: its orders, the reason of every change, its fills and its positions. Prices are YES
# prices in 1/10,000 dollar, counts 1/100 contract, money micro-dollars (apps.kalshi.fixedpoint), as in the
# trader's records (apps.trader.core.trading.records); times are exact to the microsecond.


class BookSide(models.TextChoices):
    """``bid`` buys YES at the price; ``ask`` sells YES (buys NO at 1 - price)."""

    BID = "bid", "bid"
    ASK = "ask", "ask"


class Order(models.Model):
    """One of the trader's orders as it stands: written again from each of its OrderRecords."""

    class Status(models.TextChoices):
        SUBMITTED = "submitted", "Submitted"
        RESTING = "resting", "Resting"
        EXECUTED = "executed", "Executed"
        CANCELED = "canceled", "Canceled"
        REJECTED = "rejected", "Rejected"
        REFUSED = "refused", "Refused"
        UNKNOWN = "unknown", "Unknown"

    class TimeInForce(models.TextChoices):
        GOOD_TILL_CANCELED = "good_till_canceled", "Good till canceled"
        IMMEDIATE_OR_CANCEL = "immediate_or_cancel", "Immediate or cancel"
        FILL_OR_KILL = "fill_or_kill", "Fill or kill"

    session = models.ForeignKey(TradingSession, on_delete=models.CASCADE, related_name="orders")
    client_order_id = models.CharField(max_length=64)
    exchange_order_id = models.CharField(
        max_length=64, blank=True, help_text="The exchange's order id; empty until the exchange has answered."
    )
    ticker = models.CharField(max_length=100)
    side = models.CharField(max_length=3, choices=BookSide.choices)
    yes_price = models.IntegerField(help_text="1/10,000 dollar.")
    initial_count = models.BigIntegerField(help_text="1/100 contract.")
    fill_count = models.BigIntegerField(help_text="1/100 contract.")
    remaining_count = models.BigIntegerField(help_text="1/100 contract.")
    time_in_force = models.CharField(max_length=24, choices=TimeInForce.choices)
    status = models.CharField(max_length=16, choices=Status.choices)
    fees = models.BigIntegerField(help_text="Fees paid on this order's fills, micro-dollars.")
    strategy = models.CharField(max_length=200, blank=True)
    error_code = models.CharField(
        max_length=100, blank=True, help_text="The exchange's error code of a rejection, or the risk rule of a refusal."
    )
    created_at = models.DateTimeField(help_text="When the trader first recorded the order.")
    updated_at = models.DateTimeField(help_text="The time of the change that left the order as it stands.")

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = (models.UniqueConstraint(fields=("session", "client_order_id"), name="order_session_client_id"),)
        indexes = (
            models.Index(fields=("session", "-created_at"), name="order_session_created"),
            models.Index(fields=("session", "exchange_order_id"), name="order_session_exchange_id"),
            models.Index(fields=("status", "-created_at"), name="order_status_created"),
        )

    def __str__(self) -> str:
        return f"{self.side} {self.ticker} {self.client_order_id}"


class OrderChange(models.Model):
    """One change of an order (one OrderRecord): what it became, and why."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="changes")
    status = models.CharField(max_length=16, choices=Order.Status.choices)
    yes_price = models.IntegerField(help_text="1/10,000 dollar.")
    initial_count = models.BigIntegerField(help_text="1/100 contract.")
    fill_count = models.BigIntegerField(help_text="1/100 contract.")
    remaining_count = models.BigIntegerField(help_text="1/100 contract.")
    fees = models.BigIntegerField(help_text="Micro-dollars, on the order's fills so far.")
    reason = models.TextField(blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    at = models.DateTimeField()

    class Meta:
        ordering = ("at", "id")
        # The change's natural key: a batch written again (its first outcome unknown) adds no row twice.
        constraints = (
            models.UniqueConstraint(
                fields=("order", "at", "status", "yes_price", "fill_count", "remaining_count"),
                name="order_change_natural_key",
            ),
        )

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}" if self.reason else self.status


class Fill(models.Model):
    """One fill of one of the trader's orders, as the exchange reported it."""

    session = models.ForeignKey(TradingSession, on_delete=models.CASCADE, related_name="fills")
    order = models.ForeignKey(
        Order,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="fills",
        help_text="The order filled, when the trader recorded it.",
    )
    trade_id = models.CharField(max_length=64)
    exchange_order_id = models.CharField(max_length=64, blank=True)
    client_order_id = models.CharField(max_length=64, blank=True)
    ticker = models.CharField(max_length=100)
    side = models.CharField(max_length=3, choices=BookSide.choices)
    yes_price = models.IntegerField(help_text="1/10,000 dollar.")
    count = models.BigIntegerField(help_text="1/100 contract.")
    fee = models.BigIntegerField(help_text="Micro-dollars.")
    is_taker = models.BooleanField()
    post_position = models.BigIntegerField(help_text="The market position after the fill, signed, 1/100 contract.")
    traded_at = models.DateTimeField(help_text="When the exchange made the trade (to the millisecond).")
    received_at = models.DateTimeField()

    class Meta:
        ordering = ("-traded_at", "-id")
        constraints = (models.UniqueConstraint(fields=("session", "trade_id"), name="fill_session_trade_id"),)
        indexes = (models.Index(fields=("session", "-traded_at"), name="fill_session_traded"),)

    def __str__(self) -> str:
        return f"fill {self.trade_id}"


class PositionSnapshot(models.Model):
    """A market position as the trader computed it from its fills, at ``at``."""

    session = models.ForeignKey(TradingSession, on_delete=models.CASCADE, related_name="position_snapshots")
    ticker = models.CharField(max_length=100)
    position = models.BigIntegerField(help_text="Signed: + YES, - NO; 1/100 contract.")
    cost = models.BigIntegerField(help_text="What the open position cost, micro-dollars.")
    realized_pnl = models.BigIntegerField(help_text="Micro-dollars.")
    fees_paid = models.BigIntegerField(help_text="Micro-dollars.")
    mark_price = models.IntegerField(
        null=True, blank=True, help_text="The book's mid the position is marked at; empty without a two-sided book."
    )
    unrealized_pnl = models.BigIntegerField(null=True, blank=True, help_text="Micro-dollars.")
    at = models.DateTimeField()

    class Meta:
        ordering = ("-at", "-id")
        # One position per market and instant: the last written of that instant is the position then.
        constraints = (models.UniqueConstraint(fields=("session", "ticker", "at"), name="position_session_ticker_at"),)
        indexes = (models.Index(fields=("session", "-at"), name="position_session_at"),)

    def __str__(self) -> str:
        return f"{self.ticker} at {self.at:%Y-%m-%d %H:%M:%S}"
