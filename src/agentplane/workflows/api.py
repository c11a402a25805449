"""HTTP: workflows with versions, runs (create, list, get, tree, control), run data and
input requests."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response

from agentplane.auth.deps import DB, IdPrefix, Principal, conn_for, requires
from agentplane.workflows import control, definitions, runs
from agentplane.workflows.models import (
    Answer,
    CallPage,
    InputRequest,
    Run,
    RunDataIn,
    RunIn,
    RunPage,
    RunStatus,
    RunTree,
    ToolExecution,
    Workflow,
    WorkflowIn,
    WorkflowVersion,
)

router = APIRouter(prefix="/v1", tags=["workflows", "runs"])
WorkflowReadConn = conn_for("workflows:read")
WorkflowWriteConn = conn_for("workflows:write")
RunReadConn = conn_for("runs:read")
RunWriteConn = conn_for("runs:write")


@router.post("/workflows", status_code=201)
async def save_workflow(
    body: WorkflowIn,
    conn: WorkflowWriteConn,
    principal: Annotated[Principal, Depends(requires("workflows:write"))],
) -> Workflow:
    """Create a workflow, or a new version of it when the name exists."""
    return await definitions.save_workflow(conn, body, principal.user_id)


@router.get("/workflows")
async def list_workflows(conn: WorkflowReadConn) -> list[Workflow]:
    return await definitions.list_workflows(conn)


@router.get("/workflows/{ref}")
async def get_workflow(ref: str, conn: WorkflowReadConn, version: int | None = None) -> Workflow:
    return await definitions.get_workflow(conn, ref, version)


@router.get("/workflows/{ref}/versions")
async def list_versions(ref: str, conn: WorkflowReadConn) -> list[WorkflowVersion]:
    return await definitions.list_versions(conn, ref)


@router.delete("/workflows/{ref}", status_code=204)
async def delete_workflow(ref: str, conn: WorkflowWriteConn) -> Response:
    await definitions.delete_workflow(conn, ref)
    return Response(status_code=204)


@router.post("/runs", status_code=201)
async def create_run(
    body: RunIn,
    db: DB,
    conn: RunWriteConn,
    principal: Annotated[Principal, Depends(requires("runs:write", "agents:execute"))],
) -> Run:
    return await runs.create_run(conn, db, principal, body)


@router.get("/runs")
async def list_runs(
    conn: RunReadConn,
    status: RunStatus | None = None,
    workflow: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    id_prefix: IdPrefix = None,
    agent: Annotated[str | None, Query(max_length=100,
                                       description="runs with a task of this agent")] = None,
    since: Annotated[datetime | None, Query(description="created at or after")] = None,
    until: Annotated[datetime | None, Query(description="created before")] = None,
) -> RunPage:
    return await runs.list_runs(
        conn, status=status, workflow=workflow, cursor=cursor, limit=limit, id_prefix=id_prefix,
        agent=agent, since=since, until=until,
    )


@router.get("/runs/{run_id}")
async def get_run(run_id: UUID, conn: RunReadConn) -> Run:
    return await runs.get_run(conn, run_id)


@router.get("/runs/{run_id}/tree")
async def run_tree(run_id: UUID, conn: RunReadConn, calls: bool = True) -> RunTree:
    """The run with its tasks, agent executions (with transitions), tool executions and
    LLM calls, input requests, agent interactions and run data. `calls=false` leaves the
    LLM and tool calls out (page them with /calls)."""
    return await runs.run_tree(conn, run_id, calls=calls)


@router.get("/runs/{run_id}/calls")
async def run_calls(
    run_id: UUID,
    conn: RunReadConn,
    task_id: UUID | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> CallPage:
    """The run's LLM and tool calls in the order they started, without their bodies
    (`/v1/llm-calls/{id}`, `/tool-executions/{id}`); page with `cursor=next_cursor`."""
    return await runs.run_calls(conn, run_id, task_id=task_id, cursor=cursor, limit=limit)


@router.get("/runs/{run_id}/tool-executions/{tool_execution_id}")
async def tool_execution(run_id: UUID, tool_execution_id: UUID, conn: RunReadConn) -> ToolExecution:
    """One tool call with its arguments and output."""
    return await runs.get_tool_execution(conn, run_id, tool_execution_id)


@router.post("/runs/{run_id}/cancel")
async def cancel_run(run_id: UUID, conn: RunWriteConn) -> Run:
    return await control.cancel_run(conn, run_id)


@router.post("/runs/{run_id}/pause")
async def pause_run(run_id: UUID, conn: RunWriteConn) -> Run:
    return await control.pause_run(conn, run_id)


@router.post("/runs/{run_id}/resume")
async def resume_run(run_id: UUID, db: DB, conn: RunWriteConn) -> Run:
    return await control.resume_run(conn, db, run_id)


@router.post("/runs/{run_id}/tasks/{task_id}/retry")
async def retry_task(run_id: UUID, task_id: UUID, db: DB, conn: RunWriteConn) -> Run:
    return await control.retry_task(conn, db, run_id, task_id)


@router.get("/runs/{run_id}/data")
async def get_run_data(run_id: UUID, conn: RunReadConn) -> list[dict[str, Any]]:
    return await control.get_run_data(conn, run_id)


@router.post("/runs/{run_id}/data", status_code=201)
async def put_run_data(run_id: UUID, body: RunDataIn, conn: RunWriteConn) -> dict[str, Any]:
    """Run data is immutable: writing an existing key is a 409."""
    return await control.put_run_data(conn, run_id, body)


@router.get("/input-requests")
async def list_input_requests(
    conn: RunReadConn, run_id: UUID | None = None, status: str | None = None,
    id_prefix: IdPrefix = None,
) -> list[InputRequest]:
    return await control.list_input_requests(conn, run_id, status, id_prefix)


@router.post("/input-requests/{request_id}/answer")
async def answer_input_request(
    request_id: UUID,
    body: Answer,
    db: DB,
    conn: RunWriteConn,
    principal: Annotated[Principal, Depends(requires("runs:write"))],
) -> InputRequest:
    """The answer is checked against the request's JSON schema; then the task resumes."""
    return await control.answer_input_request(
        conn, db, request_id, body.response, principal.user_id
    )
