"""Runs one task: the agent's state machine, its LLM calls (through the LLM layer, so
every call is recorded with usage and checked against budgets) and tool calls.

A task's writes are one transaction to start (task running, agent execution opened,
events), one per stateful tool call or LLM call that asks for tools, and one to finish
(the last LLM call's record, output, trace, dependants released and queued, run
counters, agent totals delta, events, the call's hold settled), so that its effects
commit together or not at all. Starts and finishes go through group commit (db/batcher.py):
the tasks of a tenant that start or finish while one such transaction is in flight share
the next one, written by one SQL call (runtime_start, runtime_complete), so a busy worker
pays round trips, commits and the locks of a run's row once per batch rather than per
task. A batch locks runs, then tasks, each in id order. Budget holds are taken before
each call on their own; the finish settles them last, just before it commits, so the
tenant's budget row is held only while it commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any
from uuid import UUID

from agentplane import clock
from agentplane.agents import tools
from agentplane.config import Settings
from agentplane.db.batcher import Batcher
from agentplane.db.pool import Connection, Database
from agentplane.errors import AgentplaneError, BudgetExceeded, DatabaseUnavailable
from agentplane.events.emit import emit, event
from agentplane.llm import store as llm_store
from agentplane.llm.adapters.base import ChatRequest
from agentplane.llm.calls import LLM, CallContext, CallOutcome, PendingCall
from agentplane.runtime import prompt
from agentplane.runtime import store as rt
from agentplane.runtime.batches import Completions, Starts
from agentplane.runtime.fsm import Machine
from agentplane.runtime.turn import RESULT_CHARS, Turn
from agentplane.usage.service import Budgets
from agentplane.workflows import store as wf
from agentplane.workflows.jobs import enqueue_tasks
from agentplane.workflows.models import TERMINAL

log = logging.getLogger("agentplane.runtime")
MAX_TURNS = 6
# A call that takes longer than this has its trail committed while it is out.
LIVE_AFTER_S = 0.2


class Suspended(Exception):
    """The agent asked a person; the task waits for the answer."""


class Stopped(Exception):
    """The job running the task was asked to stop: its run was cancelled."""


def split_model(model: str) -> tuple[str | None, str]:
    provider, _, name = model.partition("/")
    return (provider, name) if name else (None, model)


class Executor:
    def __init__(self, db: Database, settings: Settings, llm: LLM | None = None) -> None:
        self.db = db
        self.settings = settings
        self.llm = llm or LLM(db, settings)
        self._releasing: set[asyncio.Future[None]] = set()
        self.starting: Batcher[tuple[UUID, UUID, int], Turn | str] = Batcher(self._start_many)
        self.finishing: Batcher[tuple[Turn, dict[str, Any]], str] = Batcher(self._complete_many)

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
        turn = await self._start(tenant_id, run_id, task_id, dispatch)
        if isinstance(turn, str):
            return turn
        try:
            return await self._run(turn, stop)
        finally:
            hold, turn.hold = turn.hold, None
            if hold is not None:  # no call used it: given back now
                await self.llm.release(self._context(turn), hold)

    async def _run(self, turn: Turn, stop: Callable[[], Awaitable[Any]] | None = None) -> str:
        task_id = turn.task_id
        deadline = float(turn.task.get("timeout_s") or 300)
        try:
            output = await self._machine_until(turn, deadline, stop)
        except Stopped:
            return "stopped"
        except Suspended:
            return "waiting"
        except TimeoutError:
            return await self._finish(
                turn,
                self._fail(turn, f"timeout: the task exceeded its deadline of {deadline:g}s"),
            )
        except AgentplaneError as exc:
            return await self._finish(turn, self._fail(turn, f"{exc.title}: {exc.detail}"))
        except Exception as exc:  # a bug must fail the task, never leave the run hanging
            log.exception("task %s failed unexpectedly", task_id)
            return await self._finish(
                turn, self._fail(turn, f"internal error: {type(exc).__name__}: {exc}")
            )
        try:
            return await self._finish(turn, self._complete(turn, output))
        except DatabaseUnavailable:
            raise  # the job runs again once the database is back
        except Exception as exc:  # the completion cannot be written: fail, never hang
            log.exception("task %s: its completion could not be written", task_id)
            return await self._finish(
                turn, self._fail(turn, f"internal error: the completion was not written: {exc}")
            )

    async def _finish(self, turn: Turn, writing: Any) -> str:
        """Settle the holds of the calls the finish transaction recorded; if it did not
        commit, record them on their own so that no call's usage is lost."""
        pending = list(turn.pending)
        try:
            outcome = await writing
        except BaseException:
            # Rolled back: record them now (a call already committed is refused by its id),
            # and they are no longer pending for whatever the turn writes next.
            for call in pending:
                with contextlib.suppress(Exception):
                    self._place(turn, call, await asyncio.shield(self.llm.record(call)))
                    turn.pending.remove(call)
            raise
        for call in pending:
            await self.llm.settle(call)
        return outcome

    # -- start ---------------------------------------------------------------------------

    async def _start(
        self, tenant_id: UUID, run_id: UUID, task_id: UUID, dispatch: int
    ) -> Turn | str:
        return await self.starting.submit(tenant_id, (run_id, task_id, dispatch))

    async def _start_many(
        self, tenant_id: UUID, wanted: list[tuple[UUID, UUID, int]]
    ) -> list[Turn | str]:
        """The start of tasks of one tenant, in one transaction: the runs and tasks
        locked and each turn's context read (one round trip), then the runs started, the
        tasks marked running, the agent executions opened and the events written by one
        runtime_start call, sent with the commit."""
        out: list[Turn | str] = []
        try:
            async with self.db.tenant_pipeline(tenant_id) as conn:
                found = await rt.lock_and_contexts(conn, [(run, task) for run, task, _ in wanted])
                batch = Starts()
                for (_, _, dispatch), (run, task, ctx) in zip(wanted, found, strict=True):
                    out.append(await self._begin(conn, tenant_id, dispatch, run, task, ctx, batch))
                if batch.executions or batch.events:
                    await rt.start_batch(conn, batch.dump())
                # Each turn's first call is known: its hold goes out beside the commit.
                for turn in out:
                    if isinstance(turn, Turn) and not isinstance(turn.resolved, AgentplaneError):
                        turn.hold = self.llm.hold_for(
                            self._context(turn), self._request(turn, 0), turn.resolved
                        )
        except BaseException:
            # Not started after all (each is tried again on its own): their holds go back,
            # in the background, as nothing waits for them.
            for turn in out:
                if isinstance(turn, Turn) and turn.hold is not None:
                    task = asyncio.ensure_future(self.llm.release(self._context(turn), turn.hold))
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
    ) -> Turn | str:
        """One task of a start batch: the turn on it, or why there is none."""
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
            turn = self._resume(tenant_id, run, task, agent, open_exec, ctx["answers"])
        else:
            turn = self._fresh(tenant_id, run, task, agent, ctx)
        turn.events[:0] = events
        try:
            turn.resolved = await self.llm.resolve_in(
                conn, split_model(agent["model"])[0], ctx["provider"]
            )
        except AgentplaneError as exc:  # the turn fails on its first call, as it would
            turn.resolved = exc
        turn.offered = _offered(agent, ctx)
        if resumable:
            await self._flush(conn, turn, starting=True)
        else:
            batch.add(turn)
        return turn

    def _fresh(self, tenant_id: UUID, run: dict, task: dict, agent: dict, ctx: dict) -> Turn:
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
        turn = Turn(tenant_id, run, task, agent, uuid.uuid4(), Machine(), messages)
        turn.retrieved = (
            f"{len(ctx['upstream'])} upstream outputs, {len(ctx['run_data'])} run data keys"
        )
        turn.to("ANALYZING", "prompt built")
        return turn

    def _resume(
        self,
        tenant_id: UUID,
        run: dict,
        task: dict,
        agent: dict,
        execution: dict,
        answers: list[dict],
    ) -> Turn:
        """Continue the conversation where the agent asked: its answer is the tool result."""
        meta = execution["metadata"]
        turn = Turn(
            tenant_id,
            run,
            task,
            agent,
            UUID(execution["id"]),
            Machine("EXECUTING", meta.get("seq", 0)),
            list(execution["messages"]),
        )
        turn.prompt_tokens = execution["prompt_tokens"]
        turn.completion_tokens = execution["completion_tokens"]
        turn.cost = Decimal(str(execution["cost_usd"]))
        turn.llm_calls = execution["llm_calls"]
        turn.written = len(turn.messages)
        answer = next((a for a in answers if a["call_id"] == meta["waiting_call_id"]), None)
        turn.messages.append(
            {
                "role": "tool",
                "tool_call_id": meta["waiting_call_id"],
                "content": json.dumps({"answer": answer and answer["response"]}),
            }
        )
        return turn

    # -- the state machine ---------------------------------------------------------------

    async def _machine_until(
        self, turn: Turn, deadline: float, stop: Callable[[], Awaitable[Any]] | None
    ) -> dict[str, Any]:
        """The machine, unless its deadline passes (TimeoutError) or `stop` returns first
        (Stopped). Either cancels it, and with it its provider call, whose hold the LLM
        layer gives back; what the turn had not written is dropped with it."""
        machine = asyncio.ensure_future(self._machine(turn))
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
                    await machine  # its cancelled call is recorded and its hold settled

    async def _machine(self, turn: Turn) -> dict[str, Any]:
        if turn.machine.state == "ANALYZING":
            turn.to("PLANNING", f"{len(turn.agent['tools'])} tools available")
            turn.to("RETRIEVING", turn.retrieved)
            turn.to("EXECUTING")
        text = await self._converse(turn)
        turn.to("VALIDATING")
        if not text.strip():
            raise AgentplaneError("the model gave an empty answer")
        turn.to("SYNTHESIZING")
        return {
            "text": text,
            "agent": turn.agent["slug"],
            "model": turn.model_used,
            "tools": [t["tool_name"] for t in turn.tools],
        }

    @staticmethod
    def _context(turn: Turn) -> CallContext:
        return CallContext(
            tenant_id=turn.tenant_id,
            user_id=_uuid(turn.run.get("user_id")),
            api_key_id=_uuid(turn.run.get("api_key_id")),
            session_id=_uuid(turn.run.get("session_id")),
            run_id=turn.run_id,
            task_id=turn.task_id,
            agent_execution_id=turn.execution_id,
            agent_id=turn.agent_id,
        )

    @staticmethod
    def _request(turn: Turn, number: int) -> ChatRequest:
        last = number == MAX_TURNS - 1
        return ChatRequest(
            messages=turn.messages,
            model=split_model(turn.agent["model"])[1],
            max_tokens=(turn.agent.get("metadata") or {}).get("max_tokens"),
            tools=None if last or not turn.offered else turn.offered,
        )

    async def _converse(self, turn: Turn) -> str:
        ctx = self._context(turn)
        offered = turn.offered
        for number in range(MAX_TURNS):
            request = self._request(turn, number)
            if isinstance(turn.resolved, AgentplaneError):
                raise turn.resolved
            turn.events.append(
                event(
                    "llm.call_started",
                    task_id=turn.task_id,
                    agent=turn.agent["slug"],
                    model=turn.agent["model"],
                    number=number + 1,
                    tools_offered=len(request.tools or ()),
                )
            )
            hold, turn.hold = turn.hold, None
            try:
                call = await self._live(
                    turn, self.llm.call(ctx, request, resolved=turn.resolved, hold=hold)
                )
            except BudgetExceeded as exc:
                turn.events.append(
                    event(
                        "budget.exceeded",
                        task_id=turn.task_id,
                        agent=turn.agent["slug"],
                        message=exc.detail,
                    )
                )
                raise
            if turn.resolved.then is not None and call.row["id"] != turn.resolved.row["id"]:
                turn.resolved = turn.resolved.then  # its trial failed: the turn falls back
            result = call.result
            turn.llm_calls += 1
            turn.prompt_tokens += result.prompt_tokens
            turn.completion_tokens += result.completion_tokens
            turn.model_used = f"{call.row['name']}/{result.model}"
            if not result.tool_calls:
                # The last call: recorded by the finish transaction, which follows at once;
                # its event takes its place in the trail then.
                turn.pending.append(call)
                turn.events.append({"pending": call})
                turn.events.append(
                    event(
                        "agent.output",
                        task_id=turn.task_id,
                        agent=turn.agent["slug"],
                        message=(result.content or "")[:500],
                        chars=len(result.content or ""),
                    )
                )
                return result.content
            if result.content:  # what the model said before acting: its reasoning
                turn.events.append(
                    event(
                        "agent.thinking",
                        task_id=turn.task_id,
                        agent=turn.agent["slug"],
                        message=result.content[:2000],
                    )
                )
            self._recorded(turn, await self.llm.record(call))
            turn.messages.append(
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
                content = await self._tool(turn, call.id, call.name, call.arguments, offered)
                turn.messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
        return turn.messages[-1].get("content") or ""

    async def _live(self, turn: Turn, calling: Awaitable[PendingCall]) -> PendingCall:
        """The call; if it has not come back within LIVE_AFTER_S, the trail so far (the
        agent's states, llm.call_started) is committed meanwhile, so that followers see
        the call go out. A quick call leaves it to the finish's batch, as before."""
        call = asyncio.ensure_future(calling)
        try:
            done, _ = await asyncio.wait({call}, timeout=LIVE_AFTER_S)
            if not done and turn.events:
                async with self.db.tenant_connection(turn.tenant_id) as conn:
                    await self._flush(conn, turn)
            return await call
        finally:
            if not call.done():
                call.cancel()
                with contextlib.suppress(BaseException):
                    await call

    def _recorded(self, turn: Turn, outcome: CallOutcome) -> dict[str, Any]:
        turn.cost += outcome.cost_usd or Decimal(0)
        note = event(
            "llm.call_completed",
            task_id=turn.task_id,
            agent=turn.agent["slug"],
            call_id=outcome.call_id,
            model=f"{outcome.provider}/{outcome.result.model}",
            prompt_tokens=outcome.result.prompt_tokens,
            completion_tokens=outcome.result.completion_tokens,
            cost_usd=outcome.cost_usd,
            latency_ms=outcome.latency_ms,
            finish_reason=outcome.result.finish_reason,
        )
        turn.events.append(note)
        return note

    async def _record_pending(self, conn: Connection, turn: Turn) -> None:
        """The pending LLM calls, on the finish transaction; each one's event replaces
        its placeholder so the trail keeps the order in which things happened."""
        for call in turn.pending:
            self._place(turn, call, await self.llm.record_in(conn, call))
        turn.pending = []

    # -- tools -----------------------------------------------------------------------------

    async def _tool(
        self,
        turn: Turn,
        call_id: str,
        name: str,
        args: dict[str, Any],
        offered: list[dict[str, Any]],
    ) -> str:
        started, t0 = clock.now(), time.perf_counter()
        row = {
            "id": uuid.uuid4(),
            "run_id": turn.run_id,
            "task_id": turn.task_id,
            "agent_execution_id": turn.execution_id,
            "agent_id": turn.agent_id,
            "tool_name": name[:255],
            "call_id": call_id,
            "input_params": args,
            "created_at": started,
            "success": True,
            "error": None,
            "output": None,
        }
        turn.events.append(
            event(
                "tool.called",
                task_id=turn.task_id,
                agent=turn.agent["slug"],
                message=name,
                tool=name,
                arguments=args,
            )
        )
        tool = tools.get(name)
        try:
            if tool is None or name not in {o["function"]["name"] for o in offered}:
                raise tools.ToolFailed(f"tool {name} is not available to this agent")
            tool.check(args)
            if tool.fn is not None:
                result = tool.fn(args)
                if inspect.isawaitable(result):
                    result = await result
            else:
                result = await self._stateful(turn, tool.name, call_id, args, row)
        except tools.ToolFailed as exc:
            row.update(success=False, error=str(exc))
            result = {"error": str(exc)}
        except AgentplaneError as exc:
            row.update(success=False, error=exc.detail)
            result = {"error": exc.detail}
        text = json.dumps(result, default=str)
        row.update(output=text[:RESULT_CHARS], duration_ms=round((time.perf_counter() - t0) * 1000))
        turn.tools.append(row)  # written with the task's next transaction
        turn.events.append(
            event(
                "tool.completed",
                task_id=turn.task_id,
                agent=turn.agent["slug"],
                message=name,
                tool=name,
                success=row["success"],
                error=row["error"],
            )
        )
        return text

    async def _stateful(
        self, turn: Turn, name: str, call_id: str, args: dict[str, Any], row: dict[str, Any]
    ) -> Any:
        """Tools that change the run commit their effect at once (others see it)."""
        async with self.db.tenant_connection(turn.tenant_id) as conn:
            run = await wf.get_run(conn, turn.run_id, lock=True)
            if run["status"] in TERMINAL:
                raise tools.ToolFailed(f"the run is {run['status']}")
            if name == "ask_human":
                await self._ask(conn, turn, call_id, args, row)
                result = None
            else:
                result = await self._effect(conn, turn, name, call_id, args)
        if name == "ask_human":
            raise Suspended  # after the commit: the request and the waiting task are saved
        return result

    async def _effect(
        self, conn: Connection, turn: Turn, name: str, call_id: str, args: dict[str, Any]
    ) -> Any:
        if name == "run_data_get":
            found = await wf.get_run_data(conn, turn.run_id, args["key"])
            return {
                "key": args["key"],
                "value": found[0]["value"] if found else None,
                "found": bool(found),
            }
        if name == "run_data_put":
            saved = await wf.put_run_data(
                conn,
                {
                    "run_id": turn.run_id,
                    "key": args["key"],
                    "value": args["value"],
                    "data_type": "json",
                    "tags": args.get("tags") or [],
                    "task_id": turn.task_id,
                    "agent": turn.agent_id,
                },
            )
            return {"stored": saved["key"]}
        target = await rt.agent_by_slug(conn, args["agent"])
        if target is None or target["status"] != "active":
            raise tools.ToolFailed(f"no active agent {args['agent']}")
        if name == "handoff":
            kind = args["type"]
            instruction = f"{turn.agent['name']} hands you this work ({kind}): {args['message']}"
            await wf.insert_interaction(
                conn,
                {
                    "run_id": turn.run_id,
                    "task_id": turn.task_id,
                    "from_agent": turn.agent_id,
                    "to_agent": target["id"],
                    "type": kind,
                    "message": args["message"],
                    "payload": {"call_id": call_id},
                },
            )
        else:
            kind, instruction = "subtask", args["instruction"]
        sub = await rt.insert_subtask(
            conn,
            {
                "run_id": turn.run_id,
                "node": turn.task["node"],
                "agent_id": target["id"],
                "parent": turn.task_id,
                "instruction": instruction,
                "timeout_s": turn.task.get("timeout_s"),
            },
        )
        await rt.add_to_run(
            conn, turn.run_id, tasks=1, usage={"prompt": 0, "completion": 0, "cost": Decimal(0)}
        )
        await enqueue_tasks(conn, self.db, turn.tenant_id, [sub])
        await emit(
            conn,
            turn.tenant_id,
            turn.run_id,
            [
                event(
                    "message.sent",
                    task_id=turn.task_id,
                    agent=turn.agent["slug"],
                    message=f"{kind} to {args['agent']}",
                    to=args["agent"],
                    kind=kind,
                    subtask=sub["id"],
                )
            ],
        )
        return {"subtask": str(sub["id"]), "node": sub["node"], "agent": args["agent"]}

    async def _ask(
        self, conn: Connection, turn: Turn, call_id: str, args: dict[str, Any], row: dict[str, Any]
    ) -> None:
        schema = args.get("schema") or (turn.agent.get("metadata") or {}).get("input_schema") or {}
        request = await wf.insert_input_request(
            conn,
            {
                "run_id": turn.run_id,
                "task_id": turn.task_id,
                "agent_execution_id": turn.execution_id,
                "request_type": "json" if schema else "text",
                "prompt": args["prompt"],
                "schema": schema,
                "call_id": call_id,
            },
        )
        row.update(output=json.dumps({"input_request": str(request["id"])}), duration_ms=0)
        turn.tools.append(row)
        await rt.suspend_task(conn, turn.task_id)
        await rt.add_to_run(
            conn,
            turn.run_id,
            tools=len(turn.tools),
            usage={"prompt": 0, "completion": 0, "cost": Decimal(0)},
        )
        turn.events.append(
            event(
                "input.requested",
                task_id=turn.task_id,
                agent=turn.agent["slug"],
                message=args["prompt"],
                request_id=request["id"],
            )
        )
        if turn.run["status"] in ("pending", "running"):
            await wf.set_run_status(conn, turn.run_id, "paused", paused_by="input")
            turn.events.append(event("run.paused", message="waiting for input"))
        turn.run["status"] = "paused"
        await self._flush(conn, turn, metadata={"waiting_call_id": call_id})

    # -- finish ------------------------------------------------------------------------------

    async def _flush(
        self,
        conn: Connection,
        turn: Turn,
        output: str | None = None,
        error: str | None = None,
        metadata: dict[str, Any] | None = None,
        starting: bool = False,
    ) -> None:
        """Write the agent execution, its new transitions, tool executions and events;
        with `starting`, the task is marked running by the same statement."""
        values = turn.execution(turn.machine, output, error, **(metadata or {}))
        await rt.write_trace(
            conn,
            values,
            turn.machine.take(),
            turn.tools,
            starting=starting,
        )
        turn.tools = []
        turn.written = len(turn.messages)
        await emit(conn, turn.tenant_id, turn.run_id, turn.events)
        turn.events = []

    def _taken_over(self, turn: Turn, task: dict[str, Any] | None) -> bool:
        return (
            task is None or task["status"] != "running" or task["dispatch"] != turn.task["dispatch"]
        )

    async def _complete(self, turn: Turn, output: dict[str, Any]) -> str:
        return await self.finishing.submit(turn.tenant_id, (turn, output))

    async def _complete_many(
        self, tenant_id: UUID, finished: list[tuple[Turn, dict[str, Any]]]
    ) -> list[str]:
        """The finish of completed tasks of one tenant, in one transaction of two round
        trips: their LLM calls' prices, then runtime_complete (calls, traces, outputs,
        dependants released and queued, run counters, agent totals deltas, events, the
        runs they complete), the calls' holds settled and COMMIT, sent together so that
        the runs' rows are locked only while the server works. A task no longer running
        under its dispatch (cancelled, taken over) gets its calls, then a FAILED trace of
        its own."""
        calls = [(turn, call) for turn, _ in finished for call in turn.pending]
        # Written again on their own if the batch fails: the turns must be as they came.
        saved = [(t, t.machine.copy(), list(t.events), list(t.tools), t.cost) for t, _ in finished]
        try:
            done = await self._write_completed(tenant_id, finished, calls)
        except BaseException:
            for turn, machine, events, tools_, cost in saved:
                turn.machine, turn.events, turn.tools, turn.cost = machine, events, tools_, cost
            raise
        for turn, call in calls:
            call.settled = True
            turn.pending = []
        applied = set(done["applied"])
        skipped = [turn for turn, _ in finished if str(turn.task_id) not in applied]
        if skipped:
            await self._trace_skipped(tenant_id, skipped)
        return ["completed" if str(turn.task_id) in applied else "skipped" for turn, _ in finished]

    async def _write_completed(
        self,
        tenant_id: UUID,
        finished: list[tuple[Turn, dict[str, Any]]],
        calls: list[tuple[Turn, PendingCall]],
    ) -> dict[str, Any]:
        async with self.db.tenant_pipeline(tenant_id) as conn:
            wanted = [LLM.priced_as(call) for _, call in calls]
            found = iter(await llm_store.prices_at(conn, [w for ws in wanted for w in ws]))
            batch = Completions()
            holds = []
            for (turn, call), ws in zip(calls, wanted, strict=True):
                row, usage, outcome = self.llm.ledger(call, [next(found) for _ in ws])
                batch.calls.append(row)
                batch.usage.append(usage)
                if call.reservation is not None:
                    used = call.result.prompt_tokens + call.result.completion_tokens
                    holds.append((call.reservation, used))
                self._place(turn, call, outcome)
            for turn, output in finished:
                batch.add(turn, output)
            done = await rt.send_complete_batch(conn, batch.dump())
            for _, call in calls:
                if call.row["tenant_id"] is not None:
                    await llm_store.record_health(conn, call.row["id"], True, call.latency_ms, None)
            await Budgets.settle_used_in(conn, holds)
        return await rt.read_complete_batch(done)

    async def _trace_skipped(self, tenant_id: UUID, skipped: list[Turn]) -> None:
        """The FAILED traces of turns whose tasks were cancelled or taken over while they
        ran, after their batch committed (their calls are recorded and settled): a trace
        that cannot be written is logged, as the batch stands."""
        try:
            async with self.db.tenant_pipeline(tenant_id) as conn:
                for turn in skipped:
                    turn.to("FAILED", "the task was cancelled or taken over")
                    await self._flush(conn, turn, error="the task was cancelled while it ran")
        except Exception:  # the batch committed: failing it now would write it twice
            log.exception("could not write the traces of %d taken-over tasks", len(skipped))

    def _place(self, turn: Turn, call: PendingCall, outcome: CallOutcome) -> None:
        """A recorded call's event takes its placeholder's place in the trail."""
        note = self._recorded(turn, outcome)
        turn.events.pop()
        turn.events = [note if e.get("pending") is call else e for e in turn.events]

    async def _fail(self, turn: Turn, error: str) -> str:
        error = error[:2000]
        async with self.db.tenant_pipeline(turn.tenant_id) as conn:
            lock = await rt.send_lock(conn, turn.run_id, turn.task_id)
            await self._record_pending(conn, turn)
            run, task = await rt.read_lock(lock)
            if turn.machine.state != "FAILED":
                turn.to("FAILED", error[:200])
            await self._flush(conn, turn, error=error)
            if self._taken_over(turn, task):
                return "skipped"
            retry = task["retry_count"] < task["max_retries"] and run["status"] not in TERMINAL
            updated = await rt.fail_task(conn, turn.task_id, error, turn.usage(), retry)
            events = []
            if retry:
                delay = float(updated["retry_delay_s"]) * 2 ** (updated["retry_count"] - 1)
                await enqueue_tasks(conn, self.db, turn.tenant_id, [updated], delay=delay)
                await rt.add_to_run(conn, turn.run_id, usage=turn.usage())
                events.append(
                    event(
                        "task.retrying",
                        task_id=turn.task_id,
                        agent=turn.agent["slug"],
                        message=error,
                        attempt=updated["retry_count"] + 1,
                        delay_s=delay,
                    )
                )
            else:
                counts = await rt.add_to_run(conn, turn.run_id, failed=1, usage=turn.usage())
                events.append(
                    event(
                        "task.failed", task_id=turn.task_id, agent=turn.agent["slug"], message=error
                    )
                )
                if counts["status"] not in TERMINAL:
                    reason = f"task {task['node']} failed"
                    await wf.cancel_open_tasks(conn, turn.run_id, reason, ("pending", "queued"))
                    await rt.fail_run(conn, turn.run_id, f"{reason}: {error}")
                    events.append(event("run.failed", message=f"{reason}: {error}"))
            await rt.add_agent_delta(
                conn,
                turn.agent_id,
                ok=False,
                tokens=turn.prompt_tokens + turn.completion_tokens,
                cost=turn.cost,
                latency_ms=turn.elapsed_ms(),
            )
            if not retry:
                await rt.fold_agent_totals(conn)
            await emit(conn, turn.tenant_id, turn.run_id, events)
        return "retrying" if retry else "failed"


def _uuid(value: Any) -> UUID | None:
    return None if value is None else UUID(str(value))


def _offered(agent: dict[str, Any], ctx: dict[str, Any]) -> list[dict[str, Any]]:
    """The specs of the agent's tools that the tenant allows; delegating tools list the
    team."""
    denied = ctx["denied"] if isinstance(ctx["denied"], list) else []
    denied = {str(t) for t in denied}
    missing = tools.unknown(agent["tools"])
    if missing:
        log.warning(
            "agent %s has tools this process does not know (%s): import their module with "
            "--import or AGENTPLANE_WORKER_IMPORTS", agent.get("slug"), ", ".join(missing)
        )
    return [
        tools.REGISTRY[n].spec(ctx["team"])
        for n in agent["tools"]
        if n in tools.REGISTRY and n not in denied
    ]
