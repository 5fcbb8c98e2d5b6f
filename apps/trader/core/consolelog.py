"""Console lines: the trader's running story, kept for heartbeats, broadcast live and logged."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from apps.trader.core.eventbus import Event, EventBus

logger = logging.getLogger(__name__)

_LOG_LEVELS = {"warning": logging.WARNING, "error": logging.ERROR}


class ConsoleLog:
    """Keeps the last ``history`` lines (each heartbeat writes the new ones) and emits each as a ``console`` event."""

    def __init__(
        self,
        bus: EventBus,
        *,
        history: int,
        wall_clock: Callable[[], datetime],
        log: logging.Logger = logger,
    ) -> None:
        self._bus = bus
        self._log = log
        self._wall_clock = wall_clock
        self._lines: deque[dict[str, Any]] = deque(maxlen=history)
        self.session_id: int | None = None

    def __call__(self, level: str, message: str, context: str = "") -> None:
        line = {
            "level": level,
            "message": message,
            "context": context,
            "timestamp": self._wall_clock().isoformat(),
            "session_id": self.session_id,
        }
        self._lines.append(line)
        self._bus.emit(Event("console", line))
        self._log.log(_LOG_LEVELS.get(level, logging.INFO), "%s%s", message, f" | {context}" if context else "")

    def recent(self) -> list[dict[str, Any]]:
        """The lines kept, oldest first."""
        return list(self._lines)
