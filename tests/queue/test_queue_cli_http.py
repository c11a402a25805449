"""The CLI (real subprocesses), the HTTP routes over the queue, and the worker inside
`agentplane up`."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid

import httpx

from agentplane.db.pool import Database
from agentplane.queue import JobQueue
from agentplane.queue.service import make_spec
from tests.conftest import cli_env, free_port, make_tenant
from tests.queue.test_queue_reliability import new_tenant, scalar
from tests.queue.workers import ROOT, dead_letter, install_effects, start_worker, stop
from tests.support.processes import start_up, wait_ready


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


async def test_cli_pages_and_requeues_dead_letters(db: Database, cli) -> None:
    tenant = await new_tenant(db)
    q = f"c{uuid.uuid4().hex[:6]}"
    made = [await dead_letter(db, tenant, "cli.dead", {"i": i}, q) for i in range(2)]
    first = cli("dlq", "list", "--tenant", str(tenant), "--limit", "1", "--json")
    assert first.returncode == 0, first.stderr
    page = json.loads(first.stdout)
    assert [d["id"] for d in page["items"]] == [str(made[1][1])] and page["next_cursor"]
    second = json.loads(cli("dlq", "list", "--tenant", str(tenant), "--limit", "1",
                            "--cursor", page["next_cursor"], "--json").stdout)
    assert [d["id"] for d in second["items"]] == [str(made[0][1])]
    assert second["items"][0]["error"] == "bad payload" and second["next_cursor"] is None
    requeued = cli("dlq", "requeue", str(made[0][1]))
    assert requeued.returncode == 0, requeued.stderr
    fresh = uuid.UUID(requeued.stdout.split()[-1])
    job = await JobQueue(db).get(fresh)
    assert fresh != made[0][0] and job.status == "pending" and job.payload == {"i": 0}
    again = cli("dlq", "requeue", str(made[0][1]))
    assert again.returncode == 2 and "already requeued" in again.stderr
    jobs = json.loads(cli("jobs", "list", "--tenant", str(tenant), "--limit", "2",
                          "--json").stdout)
    rest = json.loads(cli("jobs", "list", "--tenant", str(tenant), "--limit", "2",
                          "--cursor", jobs["next_cursor"], "--json").stdout)
    assert [j["id"] for j in jobs["items"] + rest["items"]] == \
        [str(fresh), str(made[1][0]), str(made[0][0])]
    for args in (("jobs", "list", "--status", "bogus"), ("dlq", "list", "--cursor", "garbage")):
        bad = cli(*args)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, (args, bad.stderr)
    count = await scalar(db, "SELECT count(*) FROM jobs WHERE tenant_id = %s", tenant)
    assert count == 3


async def test_cli_pause_and_resume_a_queue_or_type(db: Database, cli) -> None:
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    q = f"c{uuid.uuid4().hex[:6]}"
    a = await queue.enqueue("cli.a", {}, tenant_id=tenant, queue=q, allow_unknown=True)
    b = await queue.enqueue("cli.b", {}, tenant_id=tenant, queue=q, allow_unknown=True)

    async def statuses() -> list[str]:
        return [(await queue.get(j)).status for j in (a, b)]

    paused = cli("jobs", "pause", "--queue", q, "--type", "cli.a")
    assert paused.returncode == 0 and "1 waiting jobs held" in paused.stdout, paused.stderr
    assert await statuses() == ["paused", "pending"]
    assert cli("jobs", "pause", "--queue", q).returncode == 0
    assert await statuses() == ["paused", "paused"]
    resumed = cli("jobs", "resume", "--queue", q)
    assert resumed.returncode == 0 and "1 jobs released" in resumed.stdout
    assert await statuses() == ["paused", "pending"], "the type's own pause still holds"
    assert cli("jobs", "resume", "--queue", q, "--type", "cli.a").returncode == 0
    assert await statuses() == ["pending", "pending"]
    bad = cli("jobs", "pause", "--queue", "no spaces")
    assert bad.returncode == 2 and "queue" in bad.stderr and "Traceback" not in bad.stderr
    assert await statuses() == ["pending", "pending"]


async def test_cli_worker_runs_jobs_and_stops_gracefully_on_sigterm(
    db: Database, settings, endpoints
) -> None:
    install_effects(endpoints.owner)
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    ids = await queue.enqueue_many(
        [make_spec("test.effect", {"n": i, "fail": i == 0}, max_attempts=1) for i in range(20)],
        tenant_id=tenant, allow_unknown=True)
    q, unserved = f"c{uuid.uuid4().hex[:6]}", f"u{uuid.uuid4().hex[:6]}"
    ids += [await queue.enqueue("test.effect", {"n": 20}, tenant_id=tenant, queue=q,
                                allow_unknown=True)]
    left = await queue.enqueue("test.effect", {}, tenant_id=tenant, queue=unserved,
                               allow_unknown=True)
    worker = start_worker(cli_env(settings, TEST_EFFECTS_URL=endpoints.owner),
                          "--concurrency", "4", "--queue", "default", "--queue", q)
    try:
        for job in ids:
            await queue.wait_for_result(job, tenant_id=tenant, timeout=30)
    finally:
        err = stop(worker)
    assert worker.returncode == 0, err
    statuses = [(await queue.get(j)).status for j in ids]
    assert statuses == ["dead_letter"] + ["completed"] * 20
    assert (await queue.get(left)).status == "pending", "not one of the worker's queues"
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
    assert (await client.get("/v1/jobs", headers=dev.headers)).status_code == 200
    r = await client.post("/v1/jobs", headers=dev.headers,
                          json={"type": "nobody.knows", "allow_unknown": True})
    assert r.status_code == 403, "new work of any type is for owners and admins"
    r = await client.get("/v1/jobs")
    assert r.status_code == 401


async def test_http_dead_letters_paged_requeue_and_retry(
    db: Database, client: httpx.AsyncClient
) -> None:
    owner, other = await make_tenant(db), await make_tenant(db)
    q = f"d{uuid.uuid4().hex[:6]}"
    made = [await dead_letter(db, owner.tenant_id, "h.dead", {"i": i}, q) for i in range(3)]
    await dead_letter(db, other.tenant_id, "h.dead", {}, q)
    page1 = await client.get("/v1/dead-letters?limit=2", headers=owner.headers)
    assert page1.status_code == 200, page1.text
    body = page1.json()
    assert len(body["items"]) == 2 and body["next_cursor"]
    page2 = (await client.get(f"/v1/dead-letters?limit=2&cursor={body['next_cursor']}",
                              headers=owner.headers)).json()
    assert page2["next_cursor"] is None
    items = body["items"] + page2["items"]
    assert [d["id"] for d in items] == [str(d) for _, d in reversed(made)], "newest first"
    assert items[0]["payload"] == {"i": 2} and items[0]["error"] == "bad payload"
    assert items[0]["error_stack"] == "stack" and len(items[0]["retry_history"]) == 1

    job, letter = made[0]
    r = await client.post(f"/v1/dead-letters/{letter}/requeue", headers=other.headers)
    assert r.status_code == 404  # another tenant's dead letter is not there
    r = await client.post(f"/v1/dead-letters/{letter}/requeue", headers=owner.headers)
    assert r.status_code == 201, r.text
    fresh = r.json()["id"]
    assert fresh != str(job)
    r = await client.get(f"/v1/jobs/{fresh}", headers=owner.headers)
    assert r.json()["status"] == "pending" and r.json()["payload"] == {"i": 0}
    r = await client.post(f"/v1/dead-letters/{letter}/requeue", headers=owner.headers)
    assert r.status_code == 409 and "already requeued" in r.json()["detail"]

    r = await client.post(f"/v1/jobs/{fresh}/retry", headers=owner.headers)
    assert r.status_code == 409, "a pending job has nothing to retry"
    retried, _ = made[1]
    r = await client.post(f"/v1/jobs/{retried}/retry", headers=owner.headers)
    assert r.status_code == 200 and r.json()["status"] == "queued"
    assert r.json()["max_attempts"] > r.json()["attempts"]
    # One or the other runs, never both: a retried job's dead letter is spent, and a
    # job whose dead letter was requeued is not retried.
    r = await client.post(f"/v1/dead-letters/{made[1][1]}/requeue", headers=owner.headers)
    assert r.status_code == 409 and str(retried) in r.json()["detail"]
    r = await client.post(f"/v1/jobs/{job}/retry", headers=owner.headers)
    assert r.status_code == 409 and f"requeued as job {fresh}" in r.json()["detail"]
    assert await scalar(db, "SELECT count(*) FROM jobs WHERE tenant_id = %s",
                        owner.tenant_id) == 4
    viewer, dev = await make_tenant(db, role="viewer"), await make_tenant(db, role="developer")
    assert (await client.get("/v1/dead-letters", headers=viewer.headers)).status_code == 200
    r = await client.post(f"/v1/dead-letters/{made[2][1]}/requeue", headers=viewer.headers)
    assert r.status_code == 403
    r = await client.post(f"/v1/dead-letters/{made[2][1]}/requeue", headers=dev.headers)
    assert r.status_code == 404, "a developer may requeue, but only its own tenant's"


async def test_http_bad_input_writes_nothing(db: Database, client: httpx.AsyncClient) -> None:
    owner = await make_tenant(db)

    async def jobs() -> int:
        return await scalar(db, "SELECT count(*) FROM jobs WHERE tenant_id = %s",
                            owner.tenant_id)

    bad = [
        {"type": "nobody.knows"},
        {"type": "h.x", "allow_unknown": True, "priority": "urgent"},
        {"type": "h.x", "allow_unknown": True, "priority": -1},
        {"type": "h.x", "allow_unknown": True, "delay": -5},
        {"type": "h.x", "allow_unknown": True, "delay": 10**12},
        {"type": "h.x", "allow_unknown": True, "max_attempts": 0},
        {"type": "h.x", "allow_unknown": True, "queue": "no spaces"},
        {"type": "h.x", "allow_unknown": True, "surprise": 1},
    ]
    for body in bad:
        r = await client.post("/v1/jobs", headers=owner.headers, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    for query in ("status=bogus", "limit=0", "limit=5000", "cursor=garbage"):
        r = await client.get(f"/v1/jobs?{query}", headers=owner.headers)
        assert r.status_code == 422, (query, r.text)
    r = await client.get("/v1/dead-letters?cursor=garbage", headers=owner.headers)
    assert r.status_code == 422
    r = await client.post("/v1/jobs/not-a-uuid/cancel", headers=owner.headers)
    assert r.status_code == 422
    assert await jobs() == 0


async def test_http_pause_and_resume_a_tenants_own_queue(db: Database, client: httpx.AsyncClient):
    owner, other = await make_tenant(db), await make_tenant(db)
    queue = JobQueue(db)
    q = f"h{uuid.uuid4().hex[:6]}"

    async def enqueue(tenant, type_: str) -> uuid.UUID:
        return await queue.enqueue(type_, {}, tenant_id=tenant, queue=q, allow_unknown=True)

    async def status(job: uuid.UUID) -> str:
        return (await queue.get(job)).status

    mine, typed = await enqueue(owner.tenant_id, "h.x"), await enqueue(owner.tenant_id, "h.y")
    theirs = await enqueue(other.tenant_id, "h.x")
    r = await client.post(f"/v1/queues/{q}/pause?type=h.x", headers=owner.headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"queue": q, "type": "h.x", "jobs": 1}
    late = await enqueue(owner.tenant_id, "h.x")  # enqueued into a paused queue: held
    assert [await status(j) for j in (mine, late, typed, theirs)] == \
        ["paused", "paused", "pending", "pending"]
    async with db.app_connection() as conn:  # the claim skips the tenant's paused type only
        cur = await conn.execute(
            "SELECT id FROM queue_claim('w', %s, 10, 30, %s, 1, 16)", [[q], uuid.uuid4()])
        assert {r["id"] for r in await cur.fetchall()} == {typed, theirs}
    r = await client.post(f"/v1/queues/{q}/resume?type=h.x", headers=owner.headers)
    assert r.json()["jobs"] == 2
    assert [await status(j) for j in (mine, late)] == ["pending", "pending"]
    r = await client.post(f"/v1/queues/{q}/pause", headers=owner.headers)  # the whole queue
    assert r.json() == {"queue": q, "type": None, "jobs": 2}
    assert await queue.pause(q) == 0  # an operator's pause for all: nothing left to hold here
    r = await client.post(f"/v1/queues/{q}/resume", headers=owner.headers)
    assert r.json()["jobs"] == 0, "the operator's pause still holds the tenant's jobs"
    assert await queue.resume(q) == 2
    viewer, dev = await make_tenant(db, role="viewer"), await make_tenant(db, role="developer")
    assert (await client.post(f"/v1/queues/{q}/pause", headers=viewer.headers)).status_code == 403
    assert (await client.post(f"/v1/queues/{q}/pause", headers=dev.headers)).status_code == 200
    assert (await client.post(f"/v1/queues/{q}/resume", headers=dev.headers)).status_code == 200
    r = await client.post("/v1/queues/no%20spaces/pause", headers=owner.headers)
    assert r.status_code == 422 and "queue" in r.json()["detail"]


async def test_up_runs_a_worker_in_process(db: Database, settings, endpoints, tmp_path) -> None:
    """Only `agentplane up` is running: jobs enqueued through the API and through
    Python complete."""
    install_effects(endpoints.owner)
    port = free_port()
    proc = start_up(tmp_path / "home", port, AGENTPLANE_DATABASE_URL=endpoints.owner,
                    AGENTPLANE_APP_DATABASE_URL=endpoints.app,
                    AGENTPLANE_WORKER_IMPORTS="tests.queue.handlers",
                    TEST_EFFECTS_URL=endpoints.owner, PYTHONPATH=str(ROOT))
    try:
        await asyncio.to_thread(wait_ready, port, proc)
        owner = await make_tenant(db)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            r = await http.post("/v1/jobs", headers=owner.headers,
                                json={"type": "test.effect", "payload": {"n": 1}})
            assert r.status_code == 201, r.text
        queue = JobQueue(db)
        ids = [r.json()["id"], await queue.enqueue("test.effect", {"n": 2},
                                                   tenant_id=owner.tenant_id)]
        for job in ids:
            done = await queue.wait_for_result(job, tenant_id=owner.tenant_id, timeout=30)
            assert done.status == "completed" and done.worker_id.split(":")[1] == str(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 0, err


async def test_http_schedules_of_a_tenant(db: Database, client: httpx.AsyncClient) -> None:
    """Owners and admins create, list and delete their tenant's schedules; bad input is a
    422 that writes nothing; another tenant sees none of them."""
    owner = await make_tenant(db)

    async def count() -> int:
        return await scalar(db, "SELECT count(*) FROM schedules WHERE tenant_id = %s",
                            owner.tenant_id)

    good = {"name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Paris",
            "type": "report.build", "payload": {"kind": "daily"}, "allow_unknown": True}
    bad = [
        {**good, "cron": "every night"},
        {**good, "timezone": "Mars/Base"},
        {**good, "allow_unknown": False},  # no worker knows report.build
        {**good, "priority": "urgent"},
        {**good, "max_attempts": 0},
        {**good, "queue": "no spaces"},
        {**good, "surprise": 1},
        {key: value for key, value in good.items() if key != "cron"},
    ]
    for body in bad:
        r = await client.post("/v1/schedules", headers=owner.headers, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert await count() == 0
    r = await client.post("/v1/schedules", headers=owner.headers, json=good)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["cron"] == "0 3 * * *" and made["payload"] == {"kind": "daily"}
    # 03:00 in Paris is 01:00 or 02:00 UTC, depending on the season.
    assert made["next_run_at"][11:16] in ("01:00", "02:00")
    listed = (await client.get("/v1/schedules", headers=owner.headers)).json()
    assert [s["id"] for s in listed] == [made["id"]]

    other = await make_tenant(db)
    assert (await client.get("/v1/schedules", headers=other.headers)).json() == []
    r = await client.delete(f"/v1/schedules/{made['id']}", headers=other.headers)
    assert r.status_code == 404
    dev = await make_tenant(db, role="developer")
    assert (await client.get("/v1/schedules", headers=dev.headers)).status_code == 200
    r = await client.delete(f"/v1/schedules/{made['id']}", headers=dev.headers)
    assert r.status_code == 403, "schedules are for owners and admins"
    r = await client.delete(f"/v1/schedules/{made['id']}", headers=owner.headers)
    assert r.status_code == 204
    r = await client.delete(f"/v1/schedules/{made['id']}", headers=owner.headers)
    assert r.status_code == 404
    assert await count() == 0


async def test_cli_schedules(db: Database, cli) -> None:
    tenant = await new_tenant(db)

    async def count() -> int:
        return await scalar(db, "SELECT count(*) FROM schedules WHERE tenant_id = %s", tenant)

    base = ["schedules", "add", "--tenant", str(tenant), "--name", "hourly", "--type", "cli.s"]
    for extra, says in [
        (["--cron", "hourly", "--allow-unknown"], "invalid cron"),
        (["--cron", "0 * * * *", "--timezone", "Mars/Base", "--allow-unknown"], "time zone"),
        (["--cron", "0 * * * *", "--payload", "{not json"], "not JSON"),
        (["--cron", "0 * * * *"], "unknown job type"),
        (["--cron", "0 * * * *", "--tenant", "acme"], "no tenant 'acme'"),
    ]:
        result = cli(*base, *extra)
        assert result.returncode == 2, (extra, result.stdout, result.stderr)
        assert says in result.stderr and "Traceback" not in result.stderr
    assert await count() == 0
    added = cli(*base, "--cron", "0 * * * *", "--payload", '{"n": 1}', "--allow-unknown")
    assert added.returncode == 0, added.stderr
    schedule_id = added.stdout.split()[1].rstrip(":")
    listed = json.loads(cli("schedules", "list", "--tenant", str(tenant), "--json").stdout)
    assert [(s["id"], s["payload"]) for s in listed] == [(schedule_id, {"n": 1})]
    assert cli("schedules", "delete", schedule_id, "--tenant", str(tenant)).returncode == 0
    again = cli("schedules", "delete", schedule_id, "--tenant", str(tenant))
    assert again.returncode == 2 and "not found" in again.stderr
    assert cli("schedules", "delete", "nope", "--tenant", str(tenant)).returncode == 2
    assert await count() == 0
