"""Starting tasks: a batch of tasks begun in one statement (runtime_start), each agent
execution opened fresh or resumed from where it waited."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal
from typing import Any
from uuid import UUID

from agentplane.db.pool import Connection
from agentplane.errors import AgentplaneError
from agentplane.events.emit import event
from agentplane.runtime import prompt
from agentplane.runtime import store as rt
from agentplane.runtime.batches import Starts
from agentplane.runtime.execution import Execution, split_model
from agentplane.runtime.fsm import Machine
from agentplane.runtime.tool_rounds import offered
from agentplane.workflows import store as wf
from agentplane.workflows.models import TERMINAL


class Starting:
    """The Executor's start of a task (a mixin: it shares the Executor's state)."""

    async def _start(
        self, tenant_id: UUID, run_id: UUID, task_id: UUID, dispatch: int
    ) -> Execution | str:
        return await self.starting.submit(tenant_id, (run_id, task_id, dispatch))

    async def _start_many(
        self, tenant_id: UUID, wanted: list[tuple[UUID, UUID, int]]
    ) -> list[Execution | str]:
        """The start of tasks of one tenant, in one transaction: the runs and tasks
        locked and each execution's context read (one round trip), then the runs started, the
        tasks marked running, the agent executions opened and the events written by one
        runtime_start call, sent with the commit."""
        out: list[Execution | str] = []
        try:
            async with self.db.tenant_pipeline(tenant_id) as conn:
                found = await rt.lock_and_contexts(conn, [(run, task) for run, task, _ in wanted])
                batch = Starts()
                for (_, _, dispatch), (run, task, ctx) in zip(wanted, found, strict=True):
                    out.append(await self._begin(conn, tenant_id, dispatch, run, task, ctx, batch))
                if batch.executions or batch.events:
                    await rt.start_batch(conn, batch.dump())
                # Each execution's first call is known: its reservation goes out beside the commit.
                for execution in out:
                    if isinstance(execution, Execution) and not isinstance(
                        execution.resolved, AgentplaneError
                    ):
                        execution.reserved = self.llm.reserve_ahead(
                            self._context(execution),
                            self._request(execution, 0),
                            execution.resolved,
                        )
        except BaseException:
            # Not started after all (each is tried again on its own): their reservations go back,
            # in the background, as nothing waits for them.
            for execution in out:
                if isinstance(execution, Execution) and execution.reserved is not None:
                    task = asyncio.ensure_future(
                        self.llm.release(self._context(execution), execution.reserved)
                    )
                    self._releasing.add(task)
                    task.add_done_callback(self._releasing.discard)
            raise
        return out

    async def _begin(
        self,
        conn: Connection,
        tenant_id: UUID,
        dispatch: int,
        run: dict[str, Any] | None,
        task: dict[str, Any] | None,
        ctx: dict[str, Any],
        batch: Starts,
    ) -> Execution | str:
        """One task of a start batch: the execution on it, or why there is none."""
        if run is None or task is None or task["dispatch"] != dispatch:
            return "skipped"  # a stale job: the task was dispatched again since
        run_id, task_id = UUID(run["id"]), UUID(task["id"])
        if run["status"] in TERMINAL:
            if task["status"] in ("queued", "running"):
                await wf.cancel_open_tasks(
                    conn, run_id, f"run {run['status']}", ("queued", "running")
                )
            return "skipped"
        if run["status"] == "paused" and run["metadata"].get("paused_by") == "user":
            return "skipped"  # stays queued; resume dispatches it again
        if task["status"] not in ("queued", "running"):
            return "skipped"
        agent = ctx["agent"]
        events: list[dict[str, Any]] = []
        if run["status"] == "pending" and run_id not in batch.runs_started:
            batch.runs_started.append(run_id)
            events.append(
                event("run.started", kind=run["kind"], workflow_version=run["workflow_version"])
            )
        events.append(
            event(
                "task.started",
                task_id=task_id,
                agent=agent["slug"],
                message=task["node"],
                attempt=task["retry_count"] + 1,
            )
        )
        open_exec = ctx["open_execution"]
        resumable = (
            open_exec is not None
            and task["status"] == "queued"
            and open_exec["metadata"].get("waiting_call_id")
        )
        if open_exec is not None and not resumable:
            await rt.fail_open_executions(conn, task_id, "abandoned: its worker stopped")
        if resumable:
            execution = self._resume(tenant_id, run, task, agent, open_exec, ctx["answers"])
        else:
            execution = self._fresh(tenant_id, run, task, agent, ctx)
        execution.events[:0] = events
        try:
            execution.resolved = await self.llm.resolve_in(
                conn, split_model(agent["model"])[0], ctx["provider"]
            )
        except AgentplaneError as exc:  # the execution fails on its first call, as it would
            execution.resolved = exc
        execution.offered = offered(agent, ctx)
        if resumable:
            await self._flush(conn, execution, starting=True)
        else:
            batch.add(execution)
        return execution

    def _fresh(self, tenant_id: UUID, run: dict, task: dict, agent: dict, ctx: dict) -> Execution:
        user = prompt.user_prompt(
            task["instruction"],
            run["inputs"],
            ctx["upstream"],
            ctx["run_data"],
            ctx["session_context"],
        )
        messages = [
            {"role": "system", "content": prompt.system_prompt(agent)},
            {"role": "user", "content": user},
        ]
        execution = Execution(tenant_id, run, task, agent, uuid.uuid4(), Machine(), messages)
        execution.retrieved = (
            f"{len(ctx['upstream'])} upstream outputs, {len(ctx['run_data'])} run data keys"
        )
        execution.to("ANALYZING", "prompt built")
        return execution

    def _resume(
        self,
        tenant_id: UUID,
        run: dict,
        task: dict,
        agent: dict,
        execution_row: dict,
        answers: list[dict],
    ) -> Execution:
        """Continue the conversation where the agent asked: its answer is the tool result."""
        meta = execution_row["metadata"]
        execution = Execution(
            tenant_id,
            run,
            task,
            agent,
            UUID(execution_row["id"]),
            Machine("EXECUTING", meta.get("seq", 0)),
            list(execution_row["messages"]),
        )
        execution.prompt_tokens = execution_row["prompt_tokens"]
        execution.completion_tokens = execution_row["completion_tokens"]
        execution.cost = Decimal(str(execution_row["cost_usd"]))
        execution.llm_calls = execution_row["llm_calls"]
        execution.written = len(execution.messages)
        answer = next((a for a in answers if a["call_id"] == meta["waiting_call_id"]), None)
        execution.messages.append(
            {
                "role": "tool",
                "tool_call_id": meta["waiting_call_id"],
                "content": json.dumps({"answer": answer and answer["response"]}),
            }
        )
        return execution

    # -- the state machine ---------------------------------------------------------------
