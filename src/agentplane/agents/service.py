"""Rules of agents: tools must exist and be allowed for the tenant; an agent that has
run tasks is kept (set it inactive) so its history stays whole."""

from __future__ import annotations

from uuid import UUID

from agentplane.agents import store, tools
from agentplane.agents.models import (
    Agent,
    AgentIn,
    AgentPatch,
    Instance,
    InstanceIn,
    InstanceStatusIn,
    StatusChange,
)
from agentplane.db.pool import Connection
from agentplane.errors import Conflict, NotFound, ValidationFailed
from agentplane.llm.service import check_model


async def check_tools(conn: Connection, names: list[str]) -> None:
    unknown = tools.unknown(names)
    if unknown:
        raise ValidationFailed(
            f"unknown tool{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}"
        )
    denied = sorted(set(names) & set(await store.denied_tools(conn)))
    if denied:
        raise ValidationFailed(f"tool not allowed for this tenant: {', '.join(denied)}")


async def create(conn: Connection, body: AgentIn) -> Agent:
    await check_tools(conn, body.tools)
    await check_model(conn, body.model)
    values = body.model_dump(exclude={"max_tokens"})
    if body.max_tokens:
        values["metadata"] = {**body.metadata, "max_tokens": body.max_tokens}
    try:
        row = await store.insert(conn, values)
    except Conflict:
        raise Conflict(
            f"an agent with id {body.id!r} already exists",
            errors=[{"field": "id", "value": body.id, "message": "taken"}],
        ) from None
    return Agent.model_validate(row)


async def get(conn: Connection, slug: str) -> Agent:
    row = await store.get(conn, slug)
    if row is None:
        raise NotFound(f"agent {slug} not found")
    return Agent.model_validate(row)


async def list_(conn: Connection, status: str | None = None) -> list[Agent]:
    return [Agent.model_validate(r) for r in await store.list_(conn, status)]


async def update(conn: Connection, slug: str, body: AgentPatch) -> Agent:
    row = await store.get(conn, slug, lock=True)
    if row is None:
        raise NotFound(f"agent {slug} not found")
    values = body.model_dump(exclude_unset=True, exclude={"max_tokens"})
    if body.tools is not None:
        await check_tools(conn, body.tools)
    if body.model is not None:
        await check_model(conn, body.model)
    if "max_tokens" in body.model_fields_set:
        values["metadata"] = {
            **(values.get("metadata") or row["metadata"]),
            "max_tokens": body.max_tokens,
        }
    if not values:
        return Agent.model_validate(row)
    return Agent.model_validate(await store.update(conn, row["uid"], values))


async def delete(conn: Connection, slug: str) -> None:
    agent = await get(conn, slug)
    if await store.is_used(conn, agent.uid):
        raise Conflict(f"agent {slug} has run tasks; set its status to inactive instead")
    await store.delete(conn, agent.uid)


# -- instances ---------------------------------------------------------------------------


async def _instance(conn: Connection, row: dict) -> Instance:
    history = [
        StatusChange.model_validate(h) for h in await store.instance_history(conn, row["id"])
    ]
    return Instance.model_validate({**row, "history": history})


async def start_instance(conn: Connection, slug: str, body: InstanceIn) -> Instance:
    agent = await get(conn, slug)
    return await _instance(conn, await store.insert_instance(conn, agent.uid, body.model_dump()))


async def list_instances(conn: Connection, slug: str) -> list[Instance]:
    agent = await get(conn, slug)
    return [await _instance(conn, r) for r in await store.list_instances(conn, agent.uid)]


async def set_instance_status(
    conn: Connection, slug: str, instance_id: UUID, body: InstanceStatusIn
) -> Instance:
    agent = await get(conn, slug)
    current = await store.get_instance(conn, agent.uid, instance_id)
    if current is None:
        raise NotFound(f"agent instance {instance_id} not found")
    if current["status"] in ("stopped", "failed"):
        raise Conflict(f"agent instance {instance_id} is {current['status']}")
    row = await store.set_instance_status(conn, instance_id, body.status, body.reason)
    return await _instance(conn, row)


async def heartbeat(conn: Connection, slug: str, instance_id: UUID) -> Instance:
    agent = await get(conn, slug)
    if await store.get_instance(conn, agent.uid, instance_id) is None:
        raise NotFound(f"agent instance {instance_id} not found")
    row = await store.heartbeat(conn, instance_id)
    if row is None:
        raise Conflict(f"agent instance {instance_id} has stopped")
    return await _instance(conn, row)
