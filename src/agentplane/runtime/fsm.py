"""The agent state machine (Shannon's FSM). Every transition is kept with its time and
written with the transaction that follows it, so the trace is complete yet costs no
extra round trips."""

from __future__ import annotations

from datetime import datetime

from agentplane import clock
from agentplane.errors import Conflict

STATES = (
    "IDLE",
    "ANALYZING",
    "PLANNING",
    "RETRIEVING",
    "EXECUTING",
    "VALIDATING",
    "SYNTHESIZING",
    "COMPLETED",
    "FAILED",
)
FINAL = frozenset({"COMPLETED", "FAILED"})
NEXT: dict[str, frozenset[str]] = {
    "IDLE": frozenset({"ANALYZING"}),
    "ANALYZING": frozenset({"PLANNING"}),
    "PLANNING": frozenset({"RETRIEVING", "EXECUTING"}),
    "RETRIEVING": frozenset({"EXECUTING"}),
    "EXECUTING": frozenset({"VALIDATING"}),
    "VALIDATING": frozenset({"SYNTHESIZING", "EXECUTING"}),
    "SYNTHESIZING": frozenset({"COMPLETED"}),
}


class Machine:
    def __init__(self, state: str = "IDLE", seq: int = 0) -> None:
        self.state = state
        self.seq = seq
        self.pending: list[tuple[int, str | None, str, str | None, datetime]] = []
        if seq == 0:
            self._record(None, state, None)

    def _record(self, old: str | None, new: str, note: str | None) -> None:
        self.seq += 1
        self.pending.append((self.seq, old, new, note, clock.now()))

    def to(self, new: str, note: str | None = None) -> None:
        """Move on; any state may fail, others only along NEXT."""
        if self.state in FINAL:
            raise Conflict(f"agent execution already {self.state}")
        if new != "FAILED" and new not in NEXT.get(self.state, ()):
            raise Conflict(f"no transition {self.state} -> {new}")
        old, self.state = self.state, new
        self._record(old, new, note)

    def copy(self) -> Machine:
        """A machine to move ahead on, leaving this one where it is."""
        other = Machine.__new__(Machine)
        other.state, other.seq, other.pending = self.state, self.seq, list(self.pending)
        return other

    def take(self) -> list[tuple[int, str | None, str, str | None, datetime]]:
        """The transitions not yet written; the caller writes them in its transaction."""
        out, self.pending = self.pending, []
        return out
