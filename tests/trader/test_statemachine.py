from __future__ import annotations

from datetime import UTC, datetime

import pytest

from apps.trader.core.statemachine import InvalidTransition, StateMachine, Transition
from apps.trader.core.states import ALLOWED_TRANSITIONS, State

S, N, C, R, E, X = (
    State.STARTUP,
    State.INITIALIZING,
    State.CONNECTING,
    State.READY,
    State.ERROR,
    State.SHUTDOWN,
)
TC, DS, TR = State.TRADING_CONNECT, State.DATA_SYNC, State.TRADING_READY
# The product's state diagram, written out here so a change to the table under test cannot move both.
EDGES = [
    (S, N), (S, E), (S, X),
    (N, C), (N, E), (N, X),
    (C, C), (C, R), (C, E), (C, X),
    (R, C), (R, TC), (R, E), (R, X),
    (TC, TC), (TC, DS), (TC, C), (TC, E), (TC, X),
    (DS, TR), (DS, TC), (DS, C), (DS, E), (DS, X),
    (TR, TC), (TR, C), (TR, E), (TR, X),
    (E, S), (E, X),
]  # fmt: skip
NON_EDGES = [(a, b) for a in State for b in State if (a, b) not in EDGES]


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Transition] = []

    async def __call__(self, transition: Transition) -> None:
        self.seen.append(transition)


def machine_in(state: State, recorder: Recorder) -> StateMachine:
    return StateMachine(
        on_transition=recorder,
        metrics=lambda: {"deltas_received": 7},
        initial=state,
        wall_clock=lambda: datetime(2026, 11, 24, 10, 30, 1, tzinfo=UTC),
    )


def test_the_table_is_the_one_the_product_describes() -> None:
    assert ALLOWED_TRANSITIONS[State.STARTUP] == {State.INITIALIZING, State.ERROR, State.SHUTDOWN}
    assert ALLOWED_TRANSITIONS[State.INITIALIZING] == {State.CONNECTING, State.ERROR, State.SHUTDOWN}
    assert ALLOWED_TRANSITIONS[State.CONNECTING] == {
        State.CONNECTING,
        State.READY,
        State.ERROR,
        State.SHUTDOWN,
    }
    assert ALLOWED_TRANSITIONS[State.READY] == {State.CONNECTING, State.TRADING_CONNECT, State.ERROR, State.SHUTDOWN}
    assert ALLOWED_TRANSITIONS[State.TRADING_CONNECT] == {
        State.TRADING_CONNECT,
        State.DATA_SYNC,
        State.CONNECTING,
        State.ERROR,
        State.SHUTDOWN,
    }
    assert ALLOWED_TRANSITIONS[State.DATA_SYNC] == {
        State.TRADING_READY,
        State.TRADING_CONNECT,
        State.CONNECTING,
        State.ERROR,
        State.SHUTDOWN,
    }
    assert ALLOWED_TRANSITIONS[State.TRADING_READY] == {
        State.TRADING_CONNECT,
        State.CONNECTING,
        State.ERROR,
        State.SHUTDOWN,
    }
    assert ALLOWED_TRANSITIONS[State.ERROR] == {State.STARTUP, State.SHUTDOWN}
    assert ALLOWED_TRANSITIONS[State.SHUTDOWN] == set()
    # Every state but shutdown can fail, and every state but shutdown can be shut down.
    for state in State:
        if state is not State.SHUTDOWN:
            assert State.SHUTDOWN in ALLOWED_TRANSITIONS[state]


@pytest.mark.parametrize(("from_state", "to_state"), EDGES, ids=[f"{a}->{b}" for a, b in EDGES])
async def test_every_allowed_edge_moves_and_is_announced(from_state: State, to_state: State) -> None:
    recorder = Recorder()
    machine = machine_in(from_state, recorder)
    transition = await machine.transition(to_state, "because")
    assert machine.state is to_state
    assert recorder.seen == [transition]
    assert transition.as_event() == {
        "from_state": from_state.value,
        "to_state": to_state.value,
        "context": "because",
        "timestamp": "2026-11-24T10:30:01+00:00",
        "metrics": {"deltas_received": 7},
    }


@pytest.mark.parametrize(("from_state", "to_state"), NON_EDGES, ids=[f"{a}->{b}" for a, b in NON_EDGES])
async def test_every_other_edge_raises_and_changes_nothing(from_state: State, to_state: State) -> None:
    recorder = Recorder()
    machine = machine_in(from_state, recorder)
    with pytest.raises(InvalidTransition):
        await machine.transition(to_state, "nope")
    assert machine.state is from_state
    assert recorder.seen == []


async def test_a_repeated_state_keeps_its_clock() -> None:
    now = [100.0]
    machine = StateMachine(on_transition=Recorder(), initial=State.INITIALIZING, monotonic=lambda: now[0])
    await machine.transition(State.CONNECTING, "start")
    now[0] = 130.0
    await machine.transition(State.CONNECTING, "reconnecting, attempt 2 in 1.0 s")
    assert machine.time_in_state() == 30.0
