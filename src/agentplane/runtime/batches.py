"""What a batch of tasks writes at their start (runtime_start) and at their completion
(runtime_complete): one JSON document of arrays, one per table (runtime/sql/batches.sql)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from agentplane.runtime.execution import RESULT_CHARS, Execution
from agentplane.workflows.jobs import task_job


class Starts:
    """What runtime_start takes: started tasks of one tenant."""

    def __init__(self) -> None:
        self.runs_started: list[UUID] = []
        self.tasks: list[UUID] = []
        self.executions: list[dict[str, Any]] = []
        self.transitions: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def add(self, execution: Execution) -> None:
        """A fresh execution: its agent execution opened, its task running, its events."""
        self.tasks.append(execution.task_id)
        self.executions.append(
            execution.row(execution.machine, None)
            | {
                "run_id": execution.run_id,
                "agent_id": execution.agent_id,
                "attempt": execution.task["retry_count"] + 1,
                "strategy": "react" if execution.agent["tools"] else "direct",
                "model_used": execution.agent["model"],
                "input": execution.messages[-1]["content"],
            }
        )
        self.transitions.extend(transitions(execution, execution.machine.take()))
        self.events.extend({"run_id": execution.run_id, **e} for e in execution.events)
        execution.events = []
        execution.written = len(execution.messages)

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

    def add(self, execution: Execution, output: dict[str, Any]) -> None:
        """The execution as completed, leaving it as it is (the batch may not apply to it)."""
        machine = execution.machine.copy()
        old = machine.state
        machine.to("COMPLETED")
        task_id, run_id = execution.task_id, execution.run_id
        self.tasks.append(
            {"task_id": task_id, "run_id": run_id, "dispatch": execution.task["dispatch"]}
        )
        self.finishes.append(
            {
                "task_id": task_id,
                "run_id": run_id,
                "agent_id": execution.agent_id,
                "output": output,
                "prompt": execution.prompt_tokens,
                "completion": execution.completion_tokens,
                "cost": execution.cost,
                "tools": len(execution.tools),
                "latency": execution.elapsed_ms(),
            }
        )
        execution_row = execution.row(machine, output["text"][:RESULT_CHARS])
        if len(execution.messages) == execution.written:
            execution_row["messages"] = None  # the row has them all: a conversation can be long
        self.executions.append(execution_row)
        self.transitions.extend(transitions(execution, machine.take()))
        self.tools.extend(execution.tools)
        events = [*execution.moved(execution.events, old, machine.state), execution.completed()]
        self.events.extend({"owner": task_id, "run_id": run_id, **e} for e in events)

    def dump(self) -> Jsonb:
        return dump(self)


def transitions(execution: Execution, taken: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [
        {
            "task_id": execution.task_id,
            "agent_execution_id": execution.execution_id,
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
