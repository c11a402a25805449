"""What a batch of tasks writes at their start (runtime_start) and at their completion
(runtime_complete): one JSON document of arrays, one per table (runtime/sql/batches.sql)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from agentplane.runtime.turn import RESULT_CHARS, Turn
from agentplane.workflows.jobs import task_job


class Starts:
    """What runtime_start takes: started tasks of one tenant."""

    def __init__(self) -> None:
        self.runs_started: list[UUID] = []
        self.tasks: list[UUID] = []
        self.executions: list[dict[str, Any]] = []
        self.transitions: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def add(self, turn: Turn) -> None:
        """A fresh turn: its agent execution opened, its task running, its events."""
        self.tasks.append(turn.task_id)
        self.executions.append(
            turn.execution(turn.machine, None)
            | {
                "run_id": turn.run_id,
                "agent_id": turn.agent_id,
                "attempt": turn.task["retry_count"] + 1,
                "strategy": "react" if turn.agent["tools"] else "direct",
                "model_used": turn.agent["model"],
                "input": turn.messages[-1]["content"],
            }
        )
        self.transitions.extend(transitions(turn, turn.machine.take()))
        self.events.extend({"run_id": turn.run_id, **e} for e in turn.events)
        turn.events = []
        turn.written = len(turn.messages)

    def dump(self) -> Jsonb:
        return dump(self)


class Completions:
    """What runtime_complete takes: completed tasks of one tenant, the columns of the jobs
    of the tasks they release, and how long a run's result may be."""

    def __init__(self) -> None:
        self.job = task_job()
        self.result_chars = RESULT_CHARS
        self.tasks: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.usage: list[dict[str, Any]] = []
        self.finishes: list[dict[str, Any]] = []
        self.executions: list[dict[str, Any]] = []
        self.transitions: list[dict[str, Any]] = []
        self.tools: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def add(self, turn: Turn, output: dict[str, Any]) -> None:
        """The turn as completed, leaving it as it is (the batch may not apply to it)."""
        machine = turn.machine.copy()
        old = machine.state
        machine.to("COMPLETED")
        task_id, run_id = turn.task_id, turn.run_id
        self.tasks.append({"task_id": task_id, "run_id": run_id, "dispatch": turn.task["dispatch"]})
        self.finishes.append(
            {
                "task_id": task_id,
                "run_id": run_id,
                "agent_id": turn.agent_id,
                "output": output,
                "prompt": turn.prompt_tokens,
                "completion": turn.completion_tokens,
                "cost": turn.cost,
                "tools": len(turn.tools),
                "latency": turn.elapsed_ms(),
            }
        )
        execution = turn.execution(machine, output["text"][:RESULT_CHARS])
        if len(turn.messages) == turn.written:
            execution["messages"] = None  # the row has them all: a conversation can be long
        self.executions.append(execution)
        self.transitions.extend(transitions(turn, machine.take()))
        self.tools.extend(turn.tools)
        events = [*turn.moved(turn.events, old, machine.state), turn.completed()]
        self.events.extend({"owner": task_id, "run_id": run_id, **e} for e in events)

    def dump(self) -> Jsonb:
        return dump(self)


def transitions(turn: Turn, taken: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [
        {
            "task_id": turn.task_id,
            "agent_execution_id": turn.execution_id,
            "seq": seq,
            "from_state": from_,
            "to_state": to,
            "note": note,
            "at": at,
        }
        for seq, from_, to, note, at in taken
    ]


def dump(batch: Starts | Completions) -> Jsonb:
    """UUIDs, Decimals and times go as strings (db/jsonb.py): the server casts them to
    their columns."""
    return Jsonb(vars(batch))
