"""Finishing tasks: completions written in batches (runtime_complete), failures with
their retries, and the trail of executions a batch skipped."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from agentplane.db.pool import Connection
from agentplane.events.emit import emit, event
from agentplane.llm import store as llm_store
from agentplane.llm.calls import LLM
from agentplane.llm.context import CallOutcome, PendingCall
from agentplane.runtime import store as rt
from agentplane.runtime.batches import Completions
from agentplane.runtime.execution import Execution
from agentplane.usage.budgets import Budgets
from agentplane.workflows import store as wf
from agentplane.workflows.jobs import enqueue_tasks
from agentplane.workflows.models import TERMINAL

log = logging.getLogger("agentplane.runtime")

class Finishing:
    """The Executor's end of a task (a mixin: it shares the Executor's state)."""

    async def _flush(
        self,
        conn: Connection,
        execution: Execution,
        output: str | None = None,
        error: str | None = None,
        metadata: dict[str, Any] | None = None,
        starting: bool = False,
    ) -> None:
        """Write the agent execution, its new transitions, tool executions and events;
        with `starting`, the task is marked running by the same statement."""
        values = execution.row(execution.machine, output, error, **(metadata or {}))
        await rt.write_trace(
            conn,
            values,
            execution.machine.take(),
            execution.tools,
            starting=starting,
        )
        execution.tools = []
        execution.written = len(execution.messages)
        await emit(conn, execution.tenant_id, execution.run_id, execution.events)
        execution.events = []

    def _taken_over(self, execution: Execution, task: dict[str, Any] | None) -> bool:
        return (
            task is None
            or task["status"] != "running"
            or task["dispatch"] != execution.task["dispatch"]
        )

    async def _complete(self, execution: Execution, output: dict[str, Any]) -> str:
        return await self.finishing.submit(execution.tenant_id, (execution, output))

    async def _complete_many(
        self, tenant_id: UUID, finished: list[tuple[Execution, dict[str, Any]]]
    ) -> list[str]:
        """The finish of completed tasks of one tenant, in one transaction of two round
        trips: their LLM calls' prices, then runtime_complete (calls, traces, outputs,
        dependants released and queued, run counters, agent totals deltas, events, the
        runs they complete), the calls' reservations settled and COMMIT, sent together so that
        the runs' rows are locked only while the server works. A task no longer running
        under its dispatch (cancelled, taken over) gets its calls, then a FAILED trace of
        its own."""
        calls = [(execution, call) for execution, _ in finished for call in execution.pending]
        # Written again on their own if the batch fails: the executions must be as they came.
        saved = [(t, t.machine.copy(), list(t.events), list(t.tools), t.cost) for t, _ in finished]
        try:
            done = await self._write_completed(tenant_id, finished, calls)
        except BaseException:
            for execution, machine, events, tools_, cost in saved:
                execution.machine, execution.events, execution.tools, execution.cost = (
                    machine,
                    events,
                    tools_,
                    cost,
                )
            raise
        for execution, call in calls:
            call.settled = True
            execution.pending = []
        applied = set(done["applied"])
        skipped = [execution for execution, _ in finished if str(execution.task_id) not in applied]
        if skipped:
            await self._trace_skipped(tenant_id, skipped)
        return [
            "completed" if str(execution.task_id) in applied else "skipped"
            for execution, _ in finished
        ]

    async def _write_completed(
        self,
        tenant_id: UUID,
        finished: list[tuple[Execution, dict[str, Any]]],
        calls: list[tuple[Execution, PendingCall]],
    ) -> dict[str, Any]:
        async with self.db.tenant_pipeline(tenant_id) as conn:
            wanted = [LLM.priced_as(call) for _, call in calls]
            found = iter(await llm_store.prices_at(conn, [w for ws in wanted for w in ws]))
            batch = Completions()
            reservations = []
            for (execution, call), ws in zip(calls, wanted, strict=True):
                row, usage, outcome = self.llm.ledger(call, [next(found) for _ in ws])
                batch.calls.append(row)
                batch.usage.append(usage)
                if call.reservation is not None:
                    used = call.result.prompt_tokens + call.result.completion_tokens
                    reservations.append((call.reservation, used))
                self._place(execution, call, outcome)
            for execution, output in finished:
                batch.add(execution, output)
            done = await rt.send_complete_batch(conn, batch.dump())
            for _, call in calls:
                if call.row["tenant_id"] is not None:
                    await llm_store.record_health(conn, call.row["id"], True, call.latency_ms, None)
            await Budgets.settle_used_in(conn, reservations)
        return await rt.read_complete_batch(done)

    async def _trace_skipped(self, tenant_id: UUID, skipped: list[Execution]) -> None:
        """The FAILED traces of executions whose tasks were cancelled or taken over while they
        ran, after their batch committed (their calls are recorded and settled): a trace
        that cannot be written is logged, as the batch stands."""
        try:
            async with self.db.tenant_pipeline(tenant_id) as conn:
                for execution in skipped:
                    execution.to("FAILED", "the task was cancelled or taken over")
                    await self._flush(conn, execution, error="the task was cancelled while it ran")
        except Exception:  # the batch committed: failing it now would write it twice
            log.exception("could not write the traces of %d taken-over tasks", len(skipped))

    def _place(self, execution: Execution, call: PendingCall, outcome: CallOutcome) -> None:
        """A recorded call's event takes its placeholder's place in the trail."""
        note = self._recorded(execution, outcome)
        execution.events.pop()
        execution.events = [note if e.get("pending") is call else e for e in execution.events]

    async def _fail(self, execution: Execution, error: str) -> str:
        error = error[:2000]
        async with self.db.tenant_pipeline(execution.tenant_id) as conn:
            lock = await rt.send_lock(conn, execution.run_id, execution.task_id)
            await self._record_pending(conn, execution)
            run, task = await rt.read_lock(lock)
            if execution.machine.state != "FAILED":
                execution.to("FAILED", error[:200])
            await self._flush(conn, execution, error=error)
            if self._taken_over(execution, task):
                return "skipped"
            retry = task["retry_count"] < task["max_retries"] and run["status"] not in TERMINAL
            updated = await rt.fail_task(conn, execution.task_id, error, execution.usage(), retry)
            events = []
            if retry:
                delay = float(updated["retry_delay_s"]) * 2 ** (updated["retry_count"] - 1)
                await enqueue_tasks(conn, self.db, execution.tenant_id, [updated], delay=delay)
                await rt.add_to_run(conn, execution.run_id, usage=execution.usage())
                events.append(
                    event(
                        "task.retrying",
                        task_id=execution.task_id,
                        agent=execution.agent["slug"],
                        message=error,
                        attempt=updated["retry_count"] + 1,
                        delay_s=delay,
                    )
                )
            else:
                counts = await rt.add_to_run(
                    conn, execution.run_id, failed=1, usage=execution.usage()
                )
                events.append(
                    event(
                        "task.failed",
                        task_id=execution.task_id,
                        agent=execution.agent["slug"],
                        message=error,
                    )
                )
                if counts["status"] not in TERMINAL:
                    reason = f"task {task['node']} failed"
                    await wf.cancel_open_tasks(
                        conn, execution.run_id, reason, ("pending", "queued")
                    )
                    await rt.fail_run(conn, execution.run_id, f"{reason}: {error}")
                    events.append(event("run.failed", message=f"{reason}: {error}"))
            await rt.add_agent_delta(
                conn,
                execution.agent_id,
                ok=False,
                tokens=execution.prompt_tokens + execution.completion_tokens,
                cost=execution.cost,
                latency_ms=execution.elapsed_ms(),
            )
            if not retry:
                await rt.fold_agent_totals(conn)
            await emit(conn, execution.tenant_id, execution.run_id, events)
        return "retrying" if retry else "failed"
