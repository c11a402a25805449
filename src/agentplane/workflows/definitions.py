"""Workflows: saving one validates its DAG and adds a version when the name exists;
reading, listing, deleting (not while runs keep its history)."""

from __future__ import annotations

import json
from uuid import UUID

from agentplane.agents import store as agents_store
from agentplane.db.pool import Connection
from agentplane.errors import Conflict, NotFound, ValidationFailed
from agentplane.workflows import dag, store
from agentplane.workflows.models import (
    Workflow,
    WorkflowIn,
    WorkflowVersion,
)


async def save_workflow(conn: Connection, body: WorkflowIn, user_id: UUID | None) -> Workflow:
    """Create the workflow, or add a version when the name exists."""
    if body.definition is not None:
        if not isinstance(body.definition, dict):
            raise ValidationFailed.listing(
                [dag.problem("definition", body.definition, "must be an object with `tasks`")]
            )
        data, fmt, source = body.definition, "json", json.dumps(body.definition, indent=2)
    else:
        data, fmt = dag.parse(body.source or "", body.format)
        source = body.source or ""
    name = body.name or data.get("name")
    if not name:
        raise ValidationFailed.listing(
            [dag.problem("name", None, "the workflow needs a name (in the body or the definition)")]
        )
    data = {**data, "name": name}
    dag.validate(data, await agents_store.slugs(conn))
    description = body.description or data.get("description")
    existing = await store.lock_workflow(conn, name)
    if existing is None:
        workflow_id, version = (
            (await store.insert_workflow(conn, name, description, user_id))["id"],
            1,
        )
    else:
        workflow_id = existing["id"]
        version = await store.bump_workflow(conn, workflow_id, description)
    await store.insert_version(conn, workflow_id, version, data, source, fmt, user_id)
    return await get_workflow(conn, str(workflow_id), version)


async def get_workflow(conn: Connection, ref: str, version: int | None = None) -> Workflow:
    row = await store.get_workflow(conn, ref, version)
    if row is None:
        what = f"workflow {ref}" + (f" version {version}" if version else "")
        raise NotFound(f"{what} not found")
    return Workflow.model_validate(row)


async def list_workflows(conn: Connection) -> list[Workflow]:
    return [Workflow.model_validate(r) for r in await store.list_workflows(conn)]


async def list_versions(conn: Connection, ref: str) -> list[WorkflowVersion]:
    workflow = await get_workflow(conn, ref)
    return [WorkflowVersion.model_validate(r) for r in await store.list_versions(conn, workflow.id)]


def workflow_graph(workflow: Workflow) -> dict[str, list[str]]:
    """A saved workflow's tasks, each with its upstream tasks (declared, and implied by
    its templates), in a topological order: what a picture of it draws."""
    agents = {t["agent"] for t in workflow.definition.get("tasks", {}).values()}
    graph = dag.validate(workflow.definition, agents)
    return {name: graph.deps[name] for name in graph.order}


async def delete_workflow(conn: Connection, ref: str) -> None:
    workflow = await get_workflow(conn, ref)
    if await store.workflow_has_runs(conn, workflow.id):
        raise Conflict(f"workflow {workflow.name} has runs; it is kept for their history")
    await store.delete_workflow(conn, workflow.id)
