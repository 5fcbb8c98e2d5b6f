"""The simulator's sequencing: sids, each sid's seq counter, and the exchange event each seq was issued at.

Every book change is one exchange event. Recording the event behind each seq is what lets ``book_at`` say
exactly which book a client holds after a given (sid, seq).
"""

from __future__ import annotations

from collections import OrderedDict, deque

MAX_ENDED_LOGS = 1024
"""Ended subscriptions whose seq record is still kept for ``book_at``."""


class SeqLog:
    """Per-sid seq counter, remembering the exchange event number each recent seq was issued at."""

    __slots__ = ("events", "next_seq")

    def __init__(self, size: int) -> None:
        self.events: deque[int] = deque(maxlen=max(1, size))
        self.next_seq = 1

    def issue(self, event: int) -> int:
        seq = self.next_seq
        self.events.append(event)
        self.next_seq += 1
        return seq

    def event_at(self, seq: int) -> int | None:
        first = self.next_seq - len(self.events)
        if first <= seq < self.next_seq:
            return self.events[seq - first]
        return None


class Sequencer:
    """Hands out sids (global across connections, from 1) and counts exchange events."""

    def __init__(self, history_size: int) -> None:
        self.history_size = history_size
        """How many past seqs per sid are remembered."""
        self.event = 0
        """The number of the latest book change."""
        self._next_sid = 1
        self._logs: OrderedDict[int, SeqLog] = OrderedDict()

    def next_event(self) -> int:
        self.event += 1
        return self.event

    def new_sid(self) -> tuple[int, SeqLog]:
        """A fresh sid and its seq log; the oldest logs beyond MAX_ENDED_LOGS are forgotten."""
        sid = self._next_sid
        self._next_sid += 1
        log = SeqLog(self.history_size)
        self._logs[sid] = log
        while len(self._logs) > MAX_ENDED_LOGS:
            self._logs.popitem(last=False)
        return sid, log

    def issue(self, log: SeqLog) -> int:
        """The next seq of ``log``, stamped with the current event."""
        return log.issue(self.event)

    def event_at(self, sid: int, seq: int) -> int | None:
        """The event ``seq`` of ``sid`` was issued at; None for an unknown sid or a seq out of the window."""
        log = self._logs.get(sid)
        return log.event_at(seq) if log is not None else None
