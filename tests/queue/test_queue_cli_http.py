"""The CLI (real subprocesses) and the HTTP routes over the queue."""

from __future__ import annotations

import json

import httpx

from agentplane.db.pool import Database
from agentplane.queue import JobQueue
from agentplane.queue.service import make_spec
from tests.conftest import cli_env, make_tenant
from tests.queue.test_queue_reliability import new_tenant
from tests.queue.workers import install_effects, start_worker, stop


async def test_cli_jobs_and_dead_letters(db: Database, cli) -> None:
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    job = await queue.enqueue("cli.x", {"a": 1}, tenant_id=tenant, allow_unknown=True)
    listed = cli("jobs", "list", "--tenant", str(tenant), "--json")
    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)["items"]] == [str(job)]
    shown = cli("jobs", "show", str(job), "--json")
    assert json.loads(shown.stdout)["payload"] == {"a": 1}
    assert cli("jobs", "cancel", str(job)).returncode == 0
    again = cli("jobs", "cancel", str(job))
    assert again.returncode == 2 and "already cancelled" in again.stderr
    assert cli("jobs", "show", "not-a-uuid").returncode == 2
    retried = cli("jobs", "retry", str(job))
    assert retried.returncode == 0 and "queued again" in retried.stdout
    assert (await queue.get(job)).status == "queued"
    await queue.cancel(job)
    empty = cli("dlq", "list", "--tenant", str(tenant), "--json")
    assert json.loads(empty.stdout)["items"] == []
    assert cli("dlq", "requeue", "00000000-0000-0000-0000-000000000000").returncode == 2


async def test_cli_worker_runs_jobs_and_stops_gracefully_on_sigterm(
    db: Database, settings, endpoints
) -> None:
    install_effects(endpoints.owner)
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    ids = await queue.enqueue_many(
        [make_spec("test.effect", {"n": i, "fail": i == 0}, max_attempts=1) for i in range(20)],
        tenant_id=tenant, allow_unknown=True)
    worker = start_worker(cli_env(settings, TEST_EFFECTS_URL=endpoints.owner), "--concurrency", "4")
    try:
        for job in ids:
            await queue.wait_for_result(job, tenant_id=tenant, timeout=30)
    finally:
        err = stop(worker)
    assert worker.returncode == 0, err
    statuses = [(await queue.get(j)).status for j in ids]
    assert statuses == ["dead_letter"] + ["completed"] * 19
    dead = (await queue.dead_letters(tenant_id=tenant)).items
    assert len(dead) == 1 and dead[0].job_id == ids[0]
    requeue = await queue.requeue(dead[0].id, tenant_id=tenant)
    assert (await queue.get(requeue)).status == "pending"


async def test_http_jobs_for_admins_with_pagination(db: Database, client: httpx.AsyncClient):
    owner = await make_tenant(db)
    created = []
    for i in range(3):
        r = await client.post("/v1/jobs", headers=owner.headers,
                              json={"type": "h.x", "payload": {"i": i}, "allow_unknown": True})
        assert r.status_code == 201, r.text
        created.append(r.json()["id"])
    page1 = await client.get("/v1/jobs?limit=2", headers=owner.headers)
    assert page1.status_code == 200
    body = page1.json()
    assert len(body["items"]) == 2 and body["next_cursor"]
    page2 = await client.get(f"/v1/jobs?limit=2&cursor={body['next_cursor']}",
                             headers=owner.headers)
    ids = [j["id"] for j in body["items"] + page2.json()["items"]]
    assert sorted(ids) == sorted(created)
    r = await client.post(f"/v1/jobs/{created[0]}/cancel", headers=owner.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = await client.post(f"/v1/jobs/{created[0]}/cancel", headers=owner.headers)
    assert r.status_code == 409
    r = await client.post("/v1/jobs", headers=owner.headers, json={"type": "nobody.knows"})
    assert r.status_code == 422 and "unknown job type" in r.json()["detail"]
    r = await client.get("/v1/jobs?cursor=garbage", headers=owner.headers)
    assert r.status_code == 422
    other = await make_tenant(db)
    r = await client.get(f"/v1/jobs/{created[1]}", headers=other.headers)
    assert r.status_code == 404
    dev = await make_tenant(db, role="developer")
    r = await client.get("/v1/jobs", headers=dev.headers)
    assert r.status_code == 403
    r = await client.get("/v1/jobs")
    assert r.status_code == 401
