"""The trader's state machine: validated transitions, each recorded and announced."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apps.trader.core.states import ALLOWED_TRANSITIONS, State


class InvalidTransition(RuntimeError):
    """A transition the table does not allow: a programming error, never swallowed."""


@dataclass(frozen=True)
class Transition:
    from_state: State
    to_state: State
    context: str
    timestamp: datetime
    metrics: dict[str, Any]

    def as_event(self) -> dict[str, Any]:
        return {
            "from_state": self.from_state.value,
            "to_state": self.to_state.value,
            "context": self.context,
            "timestamp": self.timestamp.isoformat(),
            "metrics": self.metrics,
        }


TransitionHook = Callable[[Transition], Awaitable[None]]


class StateMachine:
    """Holds the current state; ``transition`` validates, stamps and hands each move to ``on_transition``."""

    def __init__(
        self,
        *,
        on_transition: TransitionHook,
        metrics: Callable[[], dict[str, Any]] = dict,
        initial: State = State.STARTUP,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = initial
        self._on_transition = on_transition
        self._metrics = metrics
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self.entered_at = monotonic()
        self.entered_at_wall = wall_clock()
        self.entries: Counter[str] = Counter()
        """Transitions made, by the state they entered (a repeated state counts each time)."""

    def can_transition(self, to_state: State) -> bool:
        return to_state in ALLOWED_TRANSITIONS[self.state]

    async def transition(self, to_state: State, context: str) -> Transition:
        if not self.can_transition(to_state):
            raise InvalidTransition(f"{self.state.value} → {to_state.value} is not an allowed transition")
        transition = Transition(
            from_state=self.state,
            to_state=to_state,
            context=context,
            timestamp=self._wall_clock(),
            metrics=self._metrics(),
        )
        if to_state is not self.state:
            # A repeated state (another reconnect attempt) keeps its clock, so its timeout still counts.
            self.entered_at = self._monotonic()
            self.entered_at_wall = transition.timestamp
        self.state = to_state
        self.entries[to_state.value] += 1
        await self._on_transition(transition)
        return transition

    def time_in_state(self) -> float:
        return self._monotonic() - self.entered_at
