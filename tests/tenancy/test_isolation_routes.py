"""Every id route of the whole API, tried by tenant A on tenant B's resources: 404.

test_isolation.py (beside this one) does this for the identity routers; this module
covers every other router, with B holding one of each resource (a run paused on an input
request, its task and LLM call, an agent instance, a job, a dead letter, a provider, a
model, a session). A route added later fails `test_every_id_route_is_covered` until it is
listed here, with the resource it is tried on.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx

from agentplane.config import Settings
from agentplane.db.pool import Database
from agentplane.gateway import api as gateway_api
from tests.api.test_route_guards import all_routes
from tests.runtime.helpers import add_agents, agent, settle, tenant, worker
from tests.tenancy.test_isolation import _id_routes as identity_routes

# Routes whose parameter names a tenant's own namespace rather than a resource: A's
# pause of queue "default" pauses A's jobs only (tested in tests/queue).
NAMESPACES = {("POST", "/v1/queues/{queue}/pause"), ("POST", "/v1/queues/{queue}/resume")}

BODIES: dict[tuple[str, str], Any] = {
    ("PATCH", "/v1/llm/providers/{ref}"): {"enabled": False},
    ("PATCH", "/v1/llm/models/{model_id}"): {"context_window": 1},
    ("POST", "/v1/llm/models/{model_id}/prices"): {"input_per_mtok": 1, "output_per_mtok": 2},
    ("PATCH", "/v1/sessions/{ref}"): {"token_budget": 1},
    ("PUT", "/v1/api-keys/{key_id}/budget"): {"token_budget": 1},
    ("PATCH", "/v1/agents/{slug}"): {"name": "stolen"},
    ("POST", "/v1/agents/{slug}/instances"): {"instance_key": "stolen"},
    ("POST", "/v1/agents/{slug}/instances/{instance_id}/status"): {"status": "stopped"},
    ("POST", "/v1/runs/{run_id}/data"): {"key": "stolen", "value": 1},
    ("POST", "/v1/input-requests/{request_id}/answer"): {"response": {"approved": True}},
    ("PATCH", "/v1/usage/alerts/{alert_id}"): {"threshold": 1},
    ("POST", "/v1/agents/{slug}/instances/{instance_id}/subscriptions"): {"topic": "stolen"},
}

# The gateway's routes answer in their vendor's shape, not problem+json.
VENDOR_SHAPED = {
    (m, r.path)
    for router in gateway_api.VENDOR_ROUTERS
    for r in router.routes
    for m in r.methods
}

# Rows of B that no request of A may change (a snapshot before and after).
TABLES = (
    "agents",
    "agent_instances",
    "workflows",
    "runs",
    "tasks",
    "input_requests",
    "run_data",
    "jobs",
    "dead_letters",
    "schedules",
    "llm_providers",
    "llm_models",
    "llm_prices",
    "llm_calls",
    "sessions",
    "api_keys",
    "api_key_budgets",
    "usage_alerts",
    "events",
    "gateway_aliases",
    "tool_executions",
    "messages",
    "message_deliveries",
    "message_subscriptions",
)


def all_id_routes() -> list[tuple[str, str]]:
    """The API's routes with a parameter (the dashboard's: tests/web/test_web_isolation.py)."""
    return [(m, path) for m, path in all_routes() if "{" in path]


def fill(path: str, ids: dict) -> str:
    """The path with its parameters (converters such as {model_id:path} too) filled."""
    return path.replace(":path}", "}").format(**ids)


async def b_holdings(client: httpx.AsyncClient, db: Database, settings: Settings, b) -> dict:
    """One of each resource in tenant B; their ids by path parameter name."""
    schema = {"type": "object", "properties": {"approved": {"type": "boolean"}}}
    await add_agents(
        client, b, agent("iso-asker", tools=["ask_human"], metadata={"input_schema": schema})
    )
    definition = {"name": "iso-wf", "tasks": {"only": {"agent": "iso-asker", "instruction": "Ask"}}}
    r = await client.post("/v1/workflows", json={"definition": definition}, headers=b.headers)
    assert r.status_code == 201, r.text
    r = await client.post("/v1/runs", json={"workflow": "iso-wf"}, headers=b.headers)
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    async with worker(db, settings):
        run = await settle(client, b, run_id, statuses={"paused", "failed"})
    assert run["status"] == "paused", run
    tree = (await client.get(f"/v1/runs/{run_id}/tree", headers=b.headers)).json()
    r = await client.post(
        "/v1/agents/iso-asker/instances", json={"instance_key": "b-1"}, headers=b.headers
    )
    assert r.status_code == 201, r.text
    instance_id = r.json()["id"]
    r = await client.post(
        "/v1/jobs",
        json={"type": "iso.job", "allow_unknown": True, "delay": 3600},
        headers=b.headers,
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    r = await client.post(
        "/v1/llm/providers", json={"name": "iso-prov", "type": "offline"}, headers=b.headers
    )
    assert r.status_code == 201, r.text
    r = await client.post(
        "/v1/llm/models", json={"provider": "iso-prov", "name": "iso-model"}, headers=b.headers
    )
    assert r.status_code == 201, r.text
    model_id = r.json()["id"]
    r = await client.post("/v1/sessions", json={"external_id": "iso-chat"}, headers=b.headers)
    assert r.status_code == 201, r.text
    alert = {"name": "iso-alert", "threshold": 1000}
    r = await client.post("/v1/usage/alerts", json=alert, headers=b.headers)
    assert r.status_code == 201, r.text
    alert_id = r.json()["id"]
    schedule = {"name": "iso-sched", "cron": "0 3 * * *", "type": "iso.job",
                "allow_unknown": True}
    r = await client.post("/v1/schedules", json=schedule, headers=b.headers)
    assert r.status_code == 201, r.text
    schedule_id = r.json()["id"]
    r = await client.put(
        f"/v1/api-keys/{b.api_key_id}/budget", json={"token_budget": 10**6}, headers=b.headers
    )
    assert r.status_code == 200, r.text
    r = await client.post("/v1/gateway/aliases", headers=b.headers, json={
        "name": "iso-alias", "deployments": [{"name": "iso-prov/iso-model"}]})
    assert r.status_code == 201, r.text
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT id FROM llm_calls WHERE tenant_id = %s", [b.tenant_id])
        call_id = (await cur.fetchone())["id"]
        cur = await conn.execute(
            "SELECT id FROM tool_executions WHERE tenant_id = %s", [b.tenant_id])
        tool_execution_id = (await cur.fetchone())["id"]
        cur = await conn.execute(
            "INSERT INTO dead_letters (tenant_id, job_id, queue, type, payload, priority,"
            " attempts, error) VALUES (%s, %s, 'default', 'iso.job', '{}', 'normal', 3, 'boom')"
            " RETURNING id",
            [b.tenant_id, uuid.uuid4()],
        )
        dead_letter_id = (await cur.fetchone())["id"]
    r = await client.post(f"/v1/agents/iso-asker/instances/{instance_id}/subscriptions",
                          json={"topic": "iso-topic"}, headers=b.headers)
    assert r.status_code == 201, r.text
    r = await client.post("/v1/messages", json={"to": {"agent": "iso-asker"}, "type": "iso"},
                          headers=b.headers)
    assert r.status_code == 201, r.text
    message_id = r.json()["id"]
    async with db.admin_connection() as conn:  # a dead copy, as after its last attempt
        cur = await conn.execute(
            "UPDATE message_deliveries SET status = 'dead' WHERE message_id = %s RETURNING id",
            [message_id])
        delivery_id = (await cur.fetchone())["id"]
    r = await client.post("/v1/messages", json={"to": {"agent": "iso-asker"}, "type": "iso"},
                          headers=b.headers)
    live_message_id = r.json()["id"]
    return {
        "run_id": run_id,
        "task_id": tree["tasks"][0]["id"],
        "request_id": tree["input_requests"][0]["id"],
        "slug": "iso-asker",
        "alert_id": alert_id,
        "instance_id": instance_id,
        "ref": "iso-wf",
        "job_id": job_id,
        "dead_letter_id": dead_letter_id,
        "model_id": model_id,
        "call_id": call_id,
        "tool_execution_id": tool_execution_id,
        "key_id": b.api_key_id,
        "schedule_id": schedule_id,
        "name": "iso-alias",
        "message_id": live_message_id,
        "delivery_id": delivery_id,
        "topic": "iso-topic",
    }


def refs(holdings: dict, path: str) -> list[dict]:
    """`ref` names a workflow, a provider or a session, depending on the route."""
    if path.startswith("/v1/llm/providers/"):
        return [{**holdings, "ref": "iso-prov"}]
    if path.startswith("/v1/sessions/"):
        return [{**holdings, "ref": holdings["session_id"]}, {**holdings, "ref": "iso-chat"}]
    if path.startswith("/v1/models/"):  # B's model and alias, by the names the gateway takes
        return [{**holdings, "model_id": "iso-prov/iso-model"},
                {**holdings, "model_id": "iso-alias"}]
    return [holdings]


async def snapshot(
    db: Database, tenant_id: uuid.UUID, tables: tuple[str, ...] = TABLES
) -> dict[str, list[str]]:
    out = {}
    async with db.admin_connection() as conn:
        for table in tables:
            cur = await conn.execute(
                f"SELECT row_to_json(t)::text AS j FROM {table} t WHERE tenant_id = %s ORDER BY 1",
                [tenant_id],
            )
            out[table] = [r["j"] for r in await cur.fetchall()]
    return out


def test_every_id_route_is_covered() -> None:
    skip = set(identity_routes()) | NAMESPACES
    tried = {route for route in all_id_routes() if route not in skip}
    # Every other route is tried by the test below; here: B holds what it names.
    params = {"run_id", "task_id", "request_id", "slug", "instance_id", "ref", "job_id"}
    params |= {"dead_letter_id", "model_id", "call_id", "key_id"}
    params |= {"alert_id", "schedule_id", "name", "tool_execution_id"}
    params |= {"message_id", "delivery_id", "topic"}
    for method, path in tried:
        names = {p.split("}")[0].removesuffix(":path") for p in path.split("{")[1:]}
        assert names <= params, f"{method} {path}: add its resource to this module"
    assert len(all_id_routes()) >= 50


async def test_a_key_on_b_resources_gets_404_on_every_route(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    a, b = await tenant(db), await tenant(db)
    holdings = await b_holdings(client, db, settings, b)
    r = await client.get("/v1/sessions", headers=b.headers)
    holdings["session_id"] = next(s["id"] for s in r.json() if s["external_id"] == "iso-chat")
    # A has an agent of its own: A's slug with B's instance is still "not found".
    await add_agents(client, a, agent("a-own"))
    before = await snapshot(db, b.tenant_id)
    skip = set(identity_routes()) | NAMESPACES
    tried = 0
    for method, path in all_id_routes():
        if (method, path) in skip:
            continue
        variants = refs(holdings, path)
        if "{instance_id}" in path:
            variants.append({**holdings, "slug": "a-own"})
        for ids in variants:
            url = fill(path, ids)
            body = BODIES.get((method, path))
            if path.startswith("/v1/messages/{message_id}/"):  # ack, nack: by B's instance
                body = {"instance": ids["instance_id"]}
            r = await client.request(method, url, headers=a.headers, json=body)
            assert r.status_code == 404, (method, url, r.status_code, r.text)
            expected = "application/json" if (method, path) in VENDOR_SHAPED else (
                "application/problem+json")
            assert r.headers["content-type"] == expected, (method, url)
            assert json.dumps(str(b.tenant_id)) not in r.text
            tried += 1
    assert tried >= 40
    assert await snapshot(db, b.tenant_id) == before
    # And B still reaches its own resources: the ids above were real.
    for url in (f"/v1/runs/{holdings['run_id']}", f"/v1/jobs/{holdings['job_id']}"):
        assert (await client.get(url, headers=b.headers)).status_code == 200
