"""Tool rounds: the tools an agent calls between LLM calls; those that change the run
(subtasks, handoffs, questions to a person) commit their effect at once."""

from __future__ import annotations

import inspect
import json
import logging
import time
import uuid
from decimal import Decimal
from typing import Any

from agentplane import clock
from agentplane.agents import tools
from agentplane.db.pool import Connection
from agentplane.errors import AgentplaneError
from agentplane.events.emit import emit, event
from agentplane.runtime import store as rt
from agentplane.runtime.execution import RESULT_CHARS, Execution, Suspended
from agentplane.workflows import store as wf
from agentplane.workflows.jobs import enqueue_tasks
from agentplane.workflows.models import TERMINAL

log = logging.getLogger("agentplane.runtime")

class ToolRounds:
    """The Executor's tool calls (a mixin: it shares the Executor's state)."""

    async def _tool(
        self,
        execution: Execution,
        call_id: str,
        name: str,
        args: dict[str, Any],
        offered: list[dict[str, Any]],
    ) -> str:
        started, t0 = clock.now(), time.perf_counter()
        row = {
            "id": uuid.uuid4(),
            "run_id": execution.run_id,
            "task_id": execution.task_id,
            "agent_execution_id": execution.execution_id,
            "agent_id": execution.agent_id,
            "tool_name": name[:255],
            "call_id": call_id,
            "input_params": args,
            "created_at": started,
            "success": True,
            "error": None,
            "output": None,
        }
        execution.events.append(
            event(
                "tool.called",
                task_id=execution.task_id,
                agent=execution.agent["slug"],
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
                result = await self._stateful(execution, tool.name, call_id, args, row)
        except tools.ToolFailed as exc:
            row.update(success=False, error=str(exc))
            result = {"error": str(exc)}
        except AgentplaneError as exc:
            row.update(success=False, error=exc.detail)
            result = {"error": exc.detail}
        text = json.dumps(result, default=str)
        row.update(output=text[:RESULT_CHARS], duration_ms=round((time.perf_counter() - t0) * 1000))
        execution.tools.append(row)  # written with the task's next transaction
        execution.events.append(
            event(
                "tool.completed",
                task_id=execution.task_id,
                agent=execution.agent["slug"],
                message=name,
                tool=name,
                success=row["success"],
                error=row["error"],
            )
        )
        return text

    async def _stateful(
        self,
        execution: Execution,
        name: str,
        call_id: str,
        args: dict[str, Any],
        row: dict[str, Any],
    ) -> Any:
        """Tools that change the run commit their effect at once (others see it)."""
        async with self.db.tenant_connection(execution.tenant_id) as conn:
            run = await wf.get_run(conn, execution.run_id, lock=True)
            if run["status"] in TERMINAL:
                raise tools.ToolFailed(f"the run is {run['status']}")
            if name == "ask_human":
                await self._ask(conn, execution, call_id, args, row)
                result = None
            else:
                result = await self._effect(conn, execution, name, call_id, args)
        if name == "ask_human":
            raise Suspended  # after the commit: the request and the waiting task are saved
        return result

    async def _effect(
        self, conn: Connection, execution: Execution, name: str, call_id: str, args: dict[str, Any]
    ) -> Any:
        if name == "run_data_get":
            found = await wf.get_run_data(conn, execution.run_id, args["key"])
            return {
                "key": args["key"],
                "value": found[0]["value"] if found else None,
                "found": bool(found),
            }
        if name == "run_data_put":
            saved = await wf.put_run_data(
                conn,
                {
                    "run_id": execution.run_id,
                    "key": args["key"],
                    "value": args["value"],
                    "data_type": "json",
                    "tags": args.get("tags") or [],
                    "task_id": execution.task_id,
                    "agent": execution.agent_id,
                },
            )
            return {"stored": saved["key"]}
        target = await rt.agent_by_slug(conn, args["agent"])
        if target is None or target["status"] != "active":
            raise tools.ToolFailed(f"no active agent {args['agent']}")
        if name == "handoff":
            kind = args["type"]
            instruction = (
                f"{execution.agent['name']} hands you this work ({kind}): {args['message']}"
            )
            await wf.insert_interaction(
                conn,
                {
                    "run_id": execution.run_id,
                    "task_id": execution.task_id,
                    "from_agent": execution.agent_id,
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
                "run_id": execution.run_id,
                "node": execution.task["node"],
                "agent_id": target["id"],
                "parent": execution.task_id,
                "instruction": instruction,
                "timeout_s": execution.task.get("timeout_s"),
            },
        )
        await rt.add_to_run(
            conn,
            execution.run_id,
            tasks=1,
            usage={"prompt": 0, "completion": 0, "cost": Decimal(0)},
        )
        await enqueue_tasks(conn, self.db, execution.tenant_id, [sub])
        await emit(
            conn,
            execution.tenant_id,
            execution.run_id,
            [
                event(
                    "message.sent",
                    task_id=execution.task_id,
                    agent=execution.agent["slug"],
                    message=f"{kind} to {args['agent']}",
                    to=args["agent"],
                    kind=kind,
                    subtask=sub["id"],
                )
            ],
        )
        return {"subtask": str(sub["id"]), "node": sub["node"], "agent": args["agent"]}

    async def _ask(
        self,
        conn: Connection,
        execution: Execution,
        call_id: str,
        args: dict[str, Any],
        row: dict[str, Any],
    ) -> None:
        schema = (
            args.get("schema") or (execution.agent.get("metadata") or {}).get("input_schema") or {}
        )
        request = await wf.insert_input_request(
            conn,
            {
                "run_id": execution.run_id,
                "task_id": execution.task_id,
                "agent_execution_id": execution.execution_id,
                "request_type": "json" if schema else "text",
                "prompt": args["prompt"],
                "schema": schema,
                "call_id": call_id,
            },
        )
        row.update(output=json.dumps({"input_request": str(request["id"])}), duration_ms=0)
        execution.tools.append(row)
        await rt.suspend_task(conn, execution.task_id)
        await rt.add_to_run(
            conn,
            execution.run_id,
            tools=len(execution.tools),
            usage={"prompt": 0, "completion": 0, "cost": Decimal(0)},
        )
        execution.events.append(
            event(
                "input.requested",
                task_id=execution.task_id,
                agent=execution.agent["slug"],
                message=args["prompt"],
                request_id=request["id"],
            )
        )
        if execution.run["status"] in ("pending", "running"):
            await wf.set_run_status(conn, execution.run_id, "paused", paused_by="input")
            execution.events.append(event("run.paused", message="waiting for input"))
        execution.run["status"] = "paused"
        await self._flush(conn, execution, metadata={"waiting_call_id": call_id})

    # -- finish ------------------------------------------------------------------------------


def offered(agent: dict[str, Any], ctx: dict[str, Any]) -> list[dict[str, Any]]:
    """The specs of the agent's tools that the tenant allows; delegating tools list the
    team."""
    denied = ctx["denied"] if isinstance(ctx["denied"], list) else []
    denied = {str(t) for t in denied}
    missing = tools.unknown(agent["tools"])
    if missing:
        log.warning(
            "agent %s has tools this process does not know (%s): import their module with "
            "--import or AGENTPLANE_WORKER_IMPORTS",
            agent.get("slug"),
            ", ".join(missing),
        )
    return [
        tools.REGISTRY[n].spec(ctx["team"])
        for n in agent["tools"]
        if n in tools.REGISTRY and n not in denied
    ]
