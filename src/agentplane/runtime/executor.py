"""Runs one task: the agent's state machine, its LLM calls (through the LLM layer, so
every call is recorded with usage and checked against budgets) and tool calls.

A task's writes are one transaction to start (task running, agent execution opened,
events), one per stateful tool call or LLM call that asks for tools, and one to finish
(the last LLM call's record, output, trace, dependants released and queued, run
counters, agent totals delta, events, the call's reservation settled), so that its effects
commit together or not at all. Starts and finishes go through group commit (db/batcher.py):
the tasks of a tenant that start or finish while one such transaction is in flight share
the next one, written by one SQL call (runtime_start, runtime_complete), so a busy worker
pays round trips, commits and the locks of a run's row once per batch rather than per
task. A batch locks runs, then tasks, each in id order. Budget reservations are taken before
each call on their own; the finish settles them last, just before it commits, so the
tenant's budget row is held only while it commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any
from uuid import UUID

from agentplane.config import Settings
from agentplane.db.batcher import Batcher
from agentplane.db.pool import Connection, Database
from agentplane.errors import AgentplaneError, BudgetExceeded, DatabaseUnavailable
from agentplane.events.emit import event
from agentplane.llm.adapters.base import ChatRequest
from agentplane.llm.calls import LLM
from agentplane.llm.context import CallContext, CallOutcome, PendingCall
from agentplane.runtime.execution import Execution, Stopped, Suspended, split_model
from agentplane.runtime.finishing import Finishing
from agentplane.runtime.starting import Starting
from agentplane.runtime.tool_rounds import ToolRounds

log = logging.getLogger("agentplane.runtime")
MAX_ROUNDS = 6
# A call that takes longer than this has its trail committed while it is out.
LIVE_AFTER_S = 0.2


class Executor(Starting, ToolRounds, Finishing):
    """Runs tasks: the loop of LLM and tool rounds here; starting, tool calls and
    finishing in their modules."""

    def __init__(self, db: Database, settings: Settings, llm: LLM | None = None) -> None:
        self.db = db
        self.settings = settings
        self.llm = llm or LLM(db, settings)
        self._releasing: set[asyncio.Future[None]] = set()
        self.starting: Batcher[tuple[UUID, UUID, int], Execution | str] = Batcher(self._start_many)
        self.finishing: Batcher[tuple[Execution, dict[str, Any]], str] = Batcher(
            self._complete_many
        )

    async def run_task(
        self,
        tenant_id: UUID,
        run_id: UUID,
        task_id: UUID,
        dispatch: int,
        stop: Callable[[], Awaitable[Any]] | None = None,
    ) -> str:
        """Returns what happened: completed, failed, retrying, waiting, skipped (stale job,
        cancelled or paused run) or stopped (`stop` returned first: the run was cancelled
        while the task worked, and its provider call is cancelled with it)."""
        execution = await self._start(tenant_id, run_id, task_id, dispatch)
        if isinstance(execution, str):
            return execution
        try:
            return await self._run(execution, stop)
        finally:
            reserved, execution.reserved = execution.reserved, None
            if reserved is not None:  # no call used it: given back now
                await self.llm.release(self._context(execution), reserved)

    async def _run(
        self, execution: Execution, stop: Callable[[], Awaitable[Any]] | None = None
    ) -> str:
        task_id = execution.task_id
        deadline = float(execution.task.get("timeout_s") or 300)
        try:
            output = await self._machine_until(execution, deadline, stop)
        except Stopped:
            return "stopped"
        except Suspended:
            return "waiting"
        except TimeoutError:
            return await self._finish(
                execution,
                self._fail(execution, f"timeout: the task exceeded its deadline of {deadline:g}s"),
            )
        except AgentplaneError as exc:
            return await self._finish(
                execution, self._fail(execution, f"{exc.title}: {exc.detail}")
            )
        except Exception as exc:  # a bug must fail the task, never leave the run hanging
            log.exception("task %s failed unexpectedly", task_id)
            return await self._finish(
                execution, self._fail(execution, f"internal error: {type(exc).__name__}: {exc}")
            )
        try:
            return await self._finish(execution, self._complete(execution, output))
        except DatabaseUnavailable:
            raise  # the job runs again once the database is back
        except Exception as exc:  # the completion cannot be written: fail, never hang
            log.exception("task %s: its completion could not be written", task_id)
            return await self._finish(
                execution,
                self._fail(execution, f"internal error: the completion was not written: {exc}"),
            )

    async def _finish(self, execution: Execution, writing: Any) -> str:
        """Settle the reservations of the calls the finish transaction recorded; if it did not
        commit, record them on their own so that no call's usage is lost."""
        pending = list(execution.pending)
        try:
            outcome = await writing
        except BaseException:
            # Rolled back: record them now (a call already committed is refused by its id),
            # and they are no longer pending for whatever the execution writes next.
            for call in pending:
                with contextlib.suppress(Exception):
                    self._place(execution, call, await asyncio.shield(self.llm.record(call)))
                    execution.pending.remove(call)
            raise
        for call in pending:
            await self.llm.settle(call)
        return outcome

    # -- start ---------------------------------------------------------------------------

    async def _machine_until(
        self, execution: Execution, deadline: float, stop: Callable[[], Awaitable[Any]] | None
    ) -> dict[str, Any]:
        """The machine, unless its deadline passes (TimeoutError) or `stop` returns first
        (Stopped). Either cancels it, and with it its provider call, whose reservation the LLM
        layer gives back; what the execution had not written is dropped with it."""
        machine = asyncio.ensure_future(self._machine(execution))
        stopped = asyncio.ensure_future(stop()) if stop is not None else None
        try:
            waiting = {machine} if stopped is None else {machine, stopped}
            done, _ = await asyncio.wait(
                waiting, timeout=deadline, return_when=asyncio.FIRST_COMPLETED
            )
            if machine in done:
                return machine.result()
            raise Stopped if stopped in done else TimeoutError
        finally:
            if stopped is not None:
                stopped.cancel()
            if not machine.done():
                machine.cancel()
                with contextlib.suppress(BaseException):
                    await machine  # its cancelled call is recorded and its reservation settled

    async def _machine(self, execution: Execution) -> dict[str, Any]:
        if execution.machine.state == "ANALYZING":
            execution.to("PLANNING", f"{len(execution.agent['tools'])} tools available")
            execution.to("RETRIEVING", execution.retrieved)
            execution.to("EXECUTING")
        text = await self._converse(execution)
        execution.to("VALIDATING")
        if not text.strip():
            raise AgentplaneError("the model gave an empty answer")
        execution.to("SYNTHESIZING")
        return {
            "text": text,
            "agent": execution.agent["slug"],
            "model": execution.model_used,
            "tools": [t["tool_name"] for t in execution.tools],
        }

    @staticmethod
    def _context(execution: Execution) -> CallContext:
        return CallContext(
            tenant_id=execution.tenant_id,
            user_id=_uuid(execution.run.get("user_id")),
            api_key_id=_uuid(execution.run.get("api_key_id")),
            session_id=_uuid(execution.run.get("session_id")),
            run_id=execution.run_id,
            task_id=execution.task_id,
            agent_execution_id=execution.execution_id,
            agent_id=execution.agent_id,
        )

    @staticmethod
    def _request(execution: Execution, number: int) -> ChatRequest:
        last = number == MAX_ROUNDS - 1
        return ChatRequest(
            messages=execution.messages,
            model=split_model(execution.agent["model"])[1],
            max_tokens=(execution.agent.get("metadata") or {}).get("max_tokens"),
            tools=None if last or not execution.offered else execution.offered,
        )

    async def _converse(self, execution: Execution) -> str:
        ctx = self._context(execution)
        offered = execution.offered
        for number in range(MAX_ROUNDS):
            request = self._request(execution, number)
            if isinstance(execution.resolved, AgentplaneError):
                raise execution.resolved
            execution.events.append(
                event(
                    "llm.call_started",
                    task_id=execution.task_id,
                    agent=execution.agent["slug"],
                    model=execution.agent["model"],
                    number=number + 1,
                    tools_offered=len(request.tools or ()),
                )
            )
            reserved, execution.reserved = execution.reserved, None
            try:
                call = await self._live(
                    execution,
                    self.llm.call(ctx, request, resolved=execution.resolved, reserved=reserved),
                )
            except BudgetExceeded as exc:
                execution.events.append(
                    event(
                        "budget.exceeded",
                        task_id=execution.task_id,
                        agent=execution.agent["slug"],
                        message=exc.detail,
                    )
                )
                raise
            if (
                execution.resolved.then is not None
                and call.row["id"] != execution.resolved.row["id"]
            ):
                execution.resolved = (
                    execution.resolved.then
                )  # its trial failed: the execution falls back
            result = call.result
            execution.llm_calls += 1
            execution.prompt_tokens += result.prompt_tokens
            execution.completion_tokens += result.completion_tokens
            execution.model_used = f"{call.row['name']}/{result.model}"
            if not result.tool_calls:
                # The last call: recorded by the finish transaction, which follows at once;
                # its event takes its place in the trail then.
                execution.pending.append(call)
                execution.events.append({"pending": call})
                execution.events.append(
                    event(
                        "agent.output",
                        task_id=execution.task_id,
                        agent=execution.agent["slug"],
                        message=(result.content or "")[:500],
                        chars=len(result.content or ""),
                    )
                )
                return result.content
            if result.content:  # what the model said before acting: its reasoning
                execution.events.append(
                    event(
                        "agent.thinking",
                        task_id=execution.task_id,
                        agent=execution.agent["slug"],
                        message=result.content[:2000],
                    )
                )
            self._recorded(execution, await self.llm.record(call))
            execution.messages.append(
                {
                    "role": "assistant",
                    "content": result.content or "",
                    "tool_calls": [
                        {
                            "id": c.id,
                            "type": "function",
                            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                        }
                        for c in result.tool_calls
                    ],
                }
            )
            for call in result.tool_calls:
                content = await self._tool(execution, call.id, call.name, call.arguments, offered)
                execution.messages.append(
                    {"role": "tool", "tool_call_id": call.id, "content": content}
                )
        return execution.messages[-1].get("content") or ""

    async def _live(self, execution: Execution, calling: Awaitable[PendingCall]) -> PendingCall:
        """The call; if it has not come back within LIVE_AFTER_S, the trail so far (the
        agent's states, llm.call_started) is committed meanwhile, so that followers see
        the call go out. A quick call leaves it to the finish's batch, as before."""
        call = asyncio.ensure_future(calling)
        try:
            done, _ = await asyncio.wait({call}, timeout=LIVE_AFTER_S)
            if not done and execution.events:
                async with self.db.tenant_connection(execution.tenant_id) as conn:
                    await self._flush(conn, execution)
            return await call
        finally:
            if not call.done():
                call.cancel()
                with contextlib.suppress(BaseException):
                    await call

    def _recorded(self, execution: Execution, outcome: CallOutcome) -> dict[str, Any]:
        execution.cost += outcome.cost_usd or Decimal(0)
        note = event(
            "llm.call_completed",
            task_id=execution.task_id,
            agent=execution.agent["slug"],
            call_id=outcome.call_id,
            model=f"{outcome.provider}/{outcome.result.model}",
            prompt_tokens=outcome.result.prompt_tokens,
            completion_tokens=outcome.result.completion_tokens,
            cost_usd=outcome.cost_usd,
            latency_ms=outcome.latency_ms,
            finish_reason=outcome.result.finish_reason,
        )
        execution.events.append(note)
        return note

    async def _record_pending(self, conn: Connection, execution: Execution) -> None:
        """The pending LLM calls, on the finish transaction; each one's event replaces
        its placeholder so the trail keeps the order in which things happened."""
        for call in execution.pending:
            self._place(execution, call, await self.llm.record_in(conn, call))
        execution.pending = []

    # -- tools -----------------------------------------------------------------------------


def _uuid(value: Any) -> UUID | None:
    return None if value is None else UUID(str(value))
