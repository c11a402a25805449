"""Short ids: wherever a command takes an id, a unique start of it will do (as git takes
a commit's), resolved by the listing routes' `id_prefix` (a range on the primary key)."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from agentplane import ids
from agentplane.db.pool import Database
from agentplane.errors import NotFound, ValidationFailed
from agentplane.queue import JobQueue
from tests.conftest import make_tenant
from tests.queue.workers import dead_letter


def test_a_prefix_is_the_range_of_the_ids_that_start_with_it() -> None:
    lo, hi = ids.bounds("AB12-3")
    assert (str(lo), str(hi)) == ("ab123000-0000-0000-0000-000000000000",
                                  "ab123fff-ffff-ffff-ffff-ffffffffffff")
    whole = uuid.uuid4()
    assert ids.bounds(str(whole)) == (whole, whole)
    assert ids.whole(f" {whole} ") == whole and ids.whole("ab12") is None
    with pytest.raises(ValidationFailed, match="id_prefix: 'xyz' is not the start of a job id"):
        ids.bounds("xyz", "job")


async def test_resolving_says_what_is_wrong_with_a_short_id() -> None:
    known = ["ab12cd00-0000-4000-8000-000000000001", "ab12ce00-0000-4000-8000-000000000002"]

    async def starting(prefix: str) -> list[str]:
        return [k for k in known if k.replace("-", "").startswith(prefix)][:2]

    assert await ids.resolve("AB12CD", "job", starting) == known[0]
    assert await ids.resolve(known[1], "job", starting) == known[1]  # whole: no lookup
    with pytest.raises(ValidationFailed, match="start of several jobs' ids: give more"):
        await ids.resolve("ab12c", "job", starting)
    with pytest.raises(NotFound, match="no job whose id starts with 'ffff'"):
        await ids.resolve("ffff", "job", starting)
    with pytest.raises(ValidationFailed, match="at least 4 characters"):
        await ids.resolve("ab1", "job", starting)
    with pytest.raises(ValidationFailed, match="'ab!2' is not a job id"):
        await ids.resolve("ab!2", "job", starting)


async def test_listings_filter_by_id_prefix(db: Database, client: httpx.AsyncClient) -> None:
    owner = await make_tenant(db)
    queue = JobQueue(db)
    made = [str(await queue.enqueue("short.x", {"i": i}, tenant_id=owner.tenant_id,
                                    allow_unknown=True)) for i in range(3)]
    r = await client.get("/v1/jobs", params={"id_prefix": made[1][:-6]}, headers=owner.headers)
    assert r.status_code == 200, r.text
    assert [j["id"] for j in r.json()["items"]] == [made[1]]
    other = await make_tenant(db)  # another tenant's ids are not found by their start
    r = await client.get("/v1/jobs", params={"id_prefix": made[1][:-6]}, headers=other.headers)
    assert r.json()["items"] == []
    r = await client.get("/v1/runs", params={"id_prefix": "nope"}, headers=owner.headers)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"] == [{"field": "id_prefix", "value": "nope",
                                   "message": "is not the start of a run id (hex digits and "
                                              "dashes)"}]


async def test_every_id_argument_takes_a_short_id(db: Database, cli) -> None:
    owner = await make_tenant(db)
    tenant = str(owner.tenant_id)
    queue = JobQueue(db)
    job = str(await queue.enqueue("short.cli", {}, tenant_id=owner.tenant_id,
                                  allow_unknown=True))
    shown = cli("jobs", "show", job[:-8], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == job
    cancelled = cli("jobs", "cancel", job[:-8])
    assert cancelled.returncode == 0 and f"job {job} cancelled" in cancelled.stdout
    retried = cli("jobs", "retry", job[:-8])
    assert retried.returncode == 0 and f"job {job} queued again" in retried.stdout
    vague = cli("jobs", "show", job[:4])  # jobs' ids begin with the time: many share it
    assert vague.returncode == 2 and "several jobs' ids: give more" in vague.stderr

    _, letter = await dead_letter(db, owner.tenant_id, "short.dead", {}, "short")
    requeued = cli("dlq", "requeue", str(letter)[:-8])
    assert requeued.returncode == 0, requeued.stderr
    assert "requeued as job" in requeued.stdout

    added = cli("schedules", "add", "--tenant", tenant, "--name", "n", "--cron", "0 * * * *",
                "--type", "short.s", "--allow-unknown")
    schedule = added.stdout.split()[1].rstrip(":")
    gone = cli("schedules", "delete", schedule[:13], "--tenant", tenant)
    assert gone.returncode == 0 and f"schedule {schedule} deleted" in gone.stdout

    revoked = cli("key", "revoke", str(owner.api_key_id)[:8], "--tenant", tenant)
    assert revoked.returncode == 0, revoked.stderr
    assert f"key {owner.api_key_id}" in revoked.stdout
    missing = cli("key", "revoke", "ffffffff", "--tenant", tenant)
    assert missing.returncode == 2 and "no key whose id starts with 'ffffffff'" in missing.stderr


async def test_a_runs_events_by_a_short_id(db: Database, cli) -> None:
    owner = await make_tenant(db)
    ran = cli("run", "hi", "--tenant", owner.slug, "--json", timeout=120)
    assert ran.returncode == 0, ran.stderr
    run = json.loads(ran.stdout)["run"]["id"]
    listed = cli("events", run[:8], "--tenant", owner.slug, "--json")
    assert listed.returncode == 0, listed.stderr
    events = [json.loads(line) for line in listed.stdout.splitlines()]
    assert events[-1]["type"] == "run.completed" and {e["run_id"] for e in events} == {run}
    whole = cli("events", run, "--type", "run.*")  # a whole id needs no tenant
    assert whole.returncode == 0 and "run.completed" in whole.stdout
    other = await make_tenant(db)
    hidden = cli("events", run[:8], "--tenant", other.slug)
    assert hidden.returncode == 2 and "no run whose id starts with" in hidden.stderr
