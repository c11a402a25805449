"""The usage page (charts, tables, CSV) and the queue page (jobs, dead letters with
retry and requeue, pausing, schedules)."""

from __future__ import annotations

import csv
import io
import re
import uuid

import httpx

from agentplane.queue import schedules
from agentplane.queue.service import JobQueue
from tests.conftest import make_tenant
from tests.queue.workers import dead_letter
from tests.web.helpers import browser, person, sign_in


async def test_usage_reports_as_a_chart_a_table_and_csv(app, ran) -> None:
    t, _ = ran
    async with browser(app) as c:
        await sign_in(c, t.owner)
        r = await c.get("/usage?by=agent&measure=total_tokens")
        assert r.status_code == 200
        assert '<svg class="chart columns"' in r.text and 'id="usage-table"' in r.text
        body = r.text.split('id="usage-table"')[1]
        assert all(slug in body for slug in ("reader", "checker", "decider"))
        link = re.search(r'href="(/usage\.csv\?[^"]+)"', r.text).group(1).replace("&amp;", "&")
        got = await c.get(link)
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(got.text)))
        assert {row["label"] for row in rows} == {"reader", "checker", "decider"}
        bad = await c.get("/usage?period=fortnight")
        assert bad.status_code == 422 and "period must be one of" in bad.text
        assert (await c.get("/usage?since=" + "9" * 5000)).status_code == 422


async def test_the_queue_retries_and_requeues_dead_letters(app, db) -> None:
    owner = await person(db)
    job, letter = await dead_letter(db, owner.tenant_id, "web.dead", {"n": 1}, "web-q")
    _, letter2 = await dead_letter(db, owner.tenant_id, "web.dead", {"n": 2}, "web-q")
    await schedules.create(db, {"name": "nightly", "cron": "0 3 * * *", "type": "web.report"},
                           tenant_id=owner.tenant_id)
    async with browser(app) as c:
        token = await sign_in(c, owner)
        r = await c.get("/queue")
        assert r.status_code == 200
        assert f'data-dead-letter="{letter}"' in r.text and "nightly" in r.text
        retried = await c.post(f"/queue/jobs/{job}/retry", data={"csrf": token})
        assert retried.status_code == 303
        assert (await JobQueue(db).get(job, tenant_id=owner.tenant_id)).status != "dead_letter"
        requeued = await c.post(f"/queue/dead-letters/{letter2}/requeue", data={"csrf": token})
        assert requeued.status_code == 303
        page = await c.get("/queue?notice=requeued")
        assert "A fresh job was queued" in page.text
        again = await c.post(f"/queue/dead-letters/{letter2}/requeue", data={"csrf": token})
        assert again.status_code == 409 and "already requeued" in again.text
        paused = await c.post("/queue/pause", data={"csrf": token, "queue": "web-q"})
        assert paused.status_code == 303
        assert (await c.get("/queue?status=exploded")).status_code == 422
        assert (await c.get("/queue?queue=web-q")).status_code == 200


async def test_a_developer_acts_on_jobs_and_a_viewer_only_sees(app, db) -> None:
    """Roles as in the API (queue/api.py): developers retry, cancel, requeue and pause;
    schedules are the owners' and admins'; a viewer reads, and its forged POSTs are 403."""
    owner = await person(db)
    job, letter = await dead_letter(db, owner.tenant_id, "web.dead", {"n": 1}, "roles-q")
    _, letter2 = await dead_letter(db, owner.tenant_id, "web.dead", {"n": 2}, "roles-q")
    made = await schedules.create(db, {"name": "weekly", "cron": "0 3 * * 1",
                                       "type": "web.report"}, tenant_id=owner.tenant_id)
    developer = await person(db, "developer", tenant=owner)
    async with browser(app) as c:
        token = await sign_in(c, developer)
        r = await c.get("/queue")
        assert r.status_code == 200 and 'href="/queue"' in r.text
        assert f'action="/queue/dead-letters/{letter}/requeue"' in r.text
        assert f'action="/queue/schedules/{made.id}/delete"' not in r.text
        assert (await c.post(f"/queue/jobs/{job}/retry", data={"csrf": token})).status_code == 303
        assert (await JobQueue(db).get(job, tenant_id=owner.tenant_id)).status != "dead_letter"
        r = await c.post(f"/queue/dead-letters/{letter2}/requeue", data={"csrf": token})
        assert r.status_code == 303
        r = await c.post(f"/queue/schedules/{made.id}/delete", data={"csrf": token})
        assert r.status_code == 403
    viewer = await person(db, "viewer", tenant=owner)
    _, letter3 = await dead_letter(db, owner.tenant_id, "web.dead", {"n": 3}, "roles-v")
    async with browser(app) as c:
        token = await sign_in(c, viewer)
        r = await c.get("/queue")
        assert r.status_code == 200 and f'data-dead-letter="{letter3}"' in r.text
        assert 'method="post"' not in r.text.split("<main>")[1]
        for path, data in ((f"/queue/dead-letters/{letter3}/requeue", {}),
                           (f"/queue/jobs/{job}/cancel", {}),
                           ("/queue/pause", {"queue": "roles-q"}),
                           (f"/queue/schedules/{made.id}/delete", {})):
            r = await c.post(path, data={"csrf": token, **data})
            assert r.status_code == 403, path
    assert [s.id for s in await schedules.list_(db, tenant_id=owner.tenant_id)] == [made.id]
    letters = await JobQueue(db).dead_letters(tenant_id=owner.tenant_id, limit=10)
    assert next(d for d in letters.items if d.id == letter3).requeued_job_id is None


async def test_queue_pauses_listed_paused_and_resumed(app, db) -> None:
    """The pauses come from the API's service (the same list as GET /v1/queue-pauses); a
    developer pauses and resumes; an operator's pause shows but has no button."""
    owner = await person(db)
    developer = await person(db, "developer", tenant=owner)
    operators = f"op-{uuid.uuid4().hex[:6]}"
    await JobQueue(db).pause(operators)  # for every tenant
    try:
        async with browser(app) as c:
            token = await sign_in(c, developer)
            r = await c.post("/queue/pause", data={"csrf": token, "queue": "pz-q",
                                                   "type": "web.x"})
            assert r.status_code == 303
            page = await c.get("/queue")
            assert page.status_code == 200
            pauses = page.text.split('id="pauses"')[1].split("</table>")[0]
            mine = pauses.split('data-pause="pz-q/web.x"')[1].split("</tr>")[0]
            assert 'name="resume"' in mine and "this tenant" in mine
            theirs = pauses.split(f'data-pause="{operators}/*"')[1].split("</tr>")[0]
            assert "an operator" in theirs and "<form" not in theirs
            listed = await JobQueue(db).pauses(tenant_id=owner.tenant_id)
            assert {(p.queue, p.type) for p in listed} >= {("pz-q", "web.x"), (operators, None)}

            bad = await c.post("/queue/pause", data={"csrf": token, "queue": "no spaces"})
            assert bad.status_code == 422 and 'class="field-error"' in bad.text
            assert 'value="no spaces"' in bad.text
            assert await JobQueue(db).pauses(tenant_id=owner.tenant_id) == listed

            r = await c.post("/queue/pause", data={"csrf": token, "queue": "pz-q",
                                                   "type": "web.x", "resume": "1"})
            assert r.status_code == 303 and r.headers["location"].endswith("queue-resumed")
            left = await JobQueue(db).pauses(tenant_id=owner.tenant_id)
            assert [(p.queue, p.everyone) for p in left] == [(operators, True)]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver") as api:
            key = await make_tenant(db, role="viewer")
            r = await api.get("/v1/queue-pauses", headers=key.headers)
            assert r.status_code == 200
            assert [(p["queue"], p["everyone"]) for p in r.json()] == [(operators, True)]
        viewer = await person(db, "viewer", tenant=owner)
        async with browser(app) as c:
            await sign_in(c, viewer)
            page = await c.get("/queue")
            assert f'data-pause="{operators}/*"' in page.text and 'name="resume"' not in page.text
    finally:
        await JobQueue(db).resume(operators)
