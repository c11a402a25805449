"""One agent execution on a task, in memory, with what is written when the task
finishes."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any
from uuid import UUID

from agentplane.errors import AgentplaneError
from agentplane.events.emit import event
from agentplane.llm.context import PendingCall, Resolved
from agentplane.runtime.fsm import Machine
from agentplane.usage.budgets import Reservation

RESULT_CHARS = 20_000


class Suspended(Exception):
    """The agent asked a person; the task waits for the answer."""


class Stopped(Exception):
    """The job running the task was asked to stop: its run was cancelled."""


def split_model(model: str) -> tuple[str | None, str]:
    provider, _, name = model.partition("/")
    return (provider, name) if name else (None, model)


@dataclass
class Execution:
    """One agent execution in memory: what is written when the task finishes."""

    tenant_id: UUID
    run: dict[str, Any]
    task: dict[str, Any]
    agent: dict[str, Any]
    execution_id: UUID
    machine: Machine
    messages: list[dict[str, Any]]
    started: float = field(default_factory=time.perf_counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)
    llm_calls: int = 0
    tools: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    model_used: str | None = None
    retrieved: str = ""
    resolved: Resolved | AgentplaneError | None = None
    """The provider, resolved when the task starts (or why it could not be)."""
    pending: list[PendingCall] = field(default_factory=list)
    """LLM calls recorded with the finish transaction; their reservations settle after it."""
    offered: list[dict[str, Any]] = field(default_factory=list)
    reserved: asyncio.Future[Reservation] | None = None
    """The budget reservation of the execution's first LLM call, taken while the task starts."""
    written: int = 0
    """How many of the messages the agent execution's row has (they are only appended)."""
    """The tool specs offered to the model."""

    # Cached: read a score of times per task, and a UUID from text costs.
    @cached_property
    def run_id(self) -> UUID:
        return UUID(self.run["id"])

    @cached_property
    def task_id(self) -> UUID:
        return UUID(self.task["id"])

    @cached_property
    def agent_id(self) -> UUID:
        return UUID(self.agent["id"])

    def usage(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt_tokens,
            "completion": self.completion_tokens,
            "cost": self.cost,
        }

    def to(self, state: str, note: str | None = None) -> None:
        old = self.machine.state
        self.machine.to(state, note)
        self.events = self.moved(self.events, old, state)

    def elapsed_ms(self) -> int:
        return round((time.perf_counter() - self.started) * 1000)

    def row(
        self, machine: Machine, output: str | None, error: str | None = None, **metadata: Any
    ) -> dict[str, Any]:
        """The agent execution's row as the execution has it, at `machine`'s state."""
        return {
            "id": self.execution_id,
            "task_id": self.task_id,
            "state": machine.state,
            "output": output,
            "messages": self.messages,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
            "llm_calls": self.llm_calls,
            "error": error,
            "duration_ms": self.elapsed_ms(),
            "metadata": {
                "seq": machine.seq,
                "waiting_call_id": None,
                "model_used": self.model_used,
                **metadata,
            },
        }

    def moved(self, events: list[dict[str, Any]], old: str, new: str) -> list[dict[str, Any]]:
        """`events` with the move from `old` to `new`: moves in a row, written together,
        are one agent.state_changed event naming the states passed through (each is a
        transition of its own)."""
        last = events[-1] if events else None
        if last is not None and last.get("type") == "agent.state_changed":
            states = [*last["payload"]["states"], new]
        else:
            states, last = [old, new], None
        changed = event(
            "agent.state_changed",
            task_id=self.task_id,
            agent=self.agent["slug"],
            message=" -> ".join(states),
            **{"from": states[0], "to": new, "states": states},
        )
        return [*events[:-1], changed] if last is not None else [*events, changed]

    def completed(self) -> dict[str, Any]:
        return event(
            "task.completed",
            task_id=self.task_id,
            agent=self.agent["slug"],
            message=self.task["node"],
            tokens=self.prompt_tokens + self.completion_tokens,
            cost_usd=self.cost,
        )
