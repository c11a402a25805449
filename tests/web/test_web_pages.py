"""The dashboard's first pages over a run that really ran: the overview, the runs list,
a run (DAG, tasks, waterfall, events), the workflows and the start form; another
tenant's ids answer a 404 page."""

from __future__ import annotations

import re
import uuid

from tests.web.helpers import browser, csrf_of, person, sign_in


async def test_the_overview_shows_the_period_with_charts(app, ran) -> None:
    t, run = ran
    async with browser(app) as c:
        await sign_in(c, t.owner)
        r = await c.get("/?days=7")
        assert r.status_code == 200
        text = r.text
        assert re.search(r'<div class="label">Runs</div>\s*<div class="value">1</div>', text)
        assert re.search(r'<div class="label">Tasks</div>\s*<div class="value">3</div>', text)
        assert text.count('<svg class="chart spark"') == 7  # a chart per figure
        assert "Top agents by cost" in text and ">reader<" in text.replace("</a>", "<")
        assert "text_stats" in text  # the top tools
        assert "no monthly limit" not in text and "100,000,000" in text  # the budget
        assert run["id"][:8] in text  # the latest runs
        assert (await c.get("/?days=nonsense")).status_code == 200  # the default period


async def test_the_runs_list_filters_and_pages(app, ran) -> None:
    t, run = ran
    async with browser(app) as c:
        await sign_in(c, t.owner)
        r = await c.get("/runs")
        assert r.status_code == 200 and f'data-run="{run["id"]}"' in r.text
        assert 'sse-connect="/runs/live"' in r.text  # live status
        for query, found in (("status=completed", True), ("status=failed", False),
                             ("workflow=review", True), ("workflow=other", False),
                             ("agent=checker", True), ("agent=nobody", False)):
            r = await c.get(f"/runs?{query}")
            assert r.status_code == 200
            assert (f'data-run="{run["id"]}"' in r.text) is found, query
        rows = await c.get("/runs/rows?status=completed")
        assert rows.status_code == 200 and "<html" not in rows.text
        bad = await c.get("/runs?status=exploded&since=yesterday")
        assert bad.status_code == 422
        assert "not a run status" in bad.text and "a date, YYYY-MM-DD" in bad.text
        long = await c.get("/runs", params={"workflow": "x" * 300})
        assert long.status_code == 422 and "at most 100 characters" in long.text
        huge = await c.get("/runs", params={"workflow": "x" * 50_000})
        assert huge.status_code == 414 and "shorten the filters" in huge.text
        wrong = await c.get("/runs?cursor=bm90IGEgY3Vyc29y")
        assert wrong.status_code == 422 and "not a page of this list" in wrong.text


async def test_a_run_shows_its_dag_tasks_calls_and_events(app, ran) -> None:
    t, run = ran
    async with browser(app) as c:
        await sign_in(c, t.owner)
        r = await c.get(f"/runs/{run['id']}")
        assert r.status_code == 200
        text = r.text
        assert text.count('<g class="node completed"') == 3  # the DAG, every task green
        assert text.count('class="edge"') == 2  # check -> decide, read -> decide
        assert text.count('<details class="task card"') == 3
        assert "IDLE" in text and "COMPLETED" in text  # the agents' transitions
        assert 'sse-connect' not in text  # ended: nothing live
        calls = re.findall(r'data-call="([0-9a-f-]+)"', text)
        assert len(calls) >= 3
        assert "run.completed" in text  # the events
        assert ">Cancel<" not in text  # a completed run is not cancelled
        llm = re.search(r'hx-get="(/runs/[^"]+/calls/[0-9a-f-]+)"', text).group(1)
        body = await c.get(llm)
        assert body.status_code == 200 and 'class="msg user"' in body.text
        tool = re.search(r'hx-get="(/runs/[^"]+/tools/[0-9a-f-]+)"', text)
        if tool:
            assert "arguments" in (await c.get(tool.group(1))).text
        part = await c.get(f"/runs/{run['id']}/part/tasks")
        assert part.status_code == 200 and "<html" not in part.text
        page = await c.get(f"/runs/{run['id']}/calls")
        assert page.status_code == 200 and page.text.count("data-call=") == len(calls)


async def test_another_tenants_run_is_a_404_page(app, db, ran) -> None:
    _, run = ran
    stranger = await person(db)
    async with browser(app) as c:
        await sign_in(c, stranger)
        for path in (f"/runs/{run['id']}", f"/runs/{run['id']}/part/tasks",
                     f"/runs/{run['id']}/calls", "/runs/not-a-uuid", f"/runs/{uuid.uuid4()}",
                     "/workflows/review"):
            r = await c.get(path)
            assert r.status_code == 404, path
            assert "404 · Not found" in r.text and "Traceback" not in r.text
        r = await c.get("/no/such/page")
        assert r.status_code == 404 and "404 · Not found" in r.text
        token = csrf_of(await c.get("/runs"))
        r = await c.post(f"/runs/{run['id']}/cancel", data={"csrf": token})
        assert r.status_code == 404


async def test_a_workflow_page_draws_it_and_starts_a_run_from_its_inputs(app, ran) -> None:
    t, _ = ran
    async with browser(app) as c:
        token = await sign_in(c, t.owner)
        listing = await c.get("/workflows")
        assert listing.status_code == 200 and 'href="/workflows/review"' in listing.text
        r = await c.get("/workflows/review")
        assert r.status_code == 200
        assert r.text.count('<g class="node ') == 3
        assert 'name="input.change"' in r.text and 'name="input.audience"' in r.text
        assert 'placeholder="the team"' in r.text  # a default, shown
        # Nothing given for a required input: the form again, the field's error beside it.
        bad = await c.post("/workflows/review/runs", data={
            "csrf": token, "version": "1", "input.change": "  ", "input.audience": "us"})
        assert bad.status_code == 422
        assert re.search(r'id="error-change">missing input<', bad.text)
        assert ">us</textarea>" in bad.text  # what was typed stays
        started = await c.post("/workflows/review/runs", data={
            "csrf": token, "version": "1", "input.change": "+1", "input.audience": ""})
        assert started.status_code == 303
        assert re.match(r"/runs/[0-9a-f-]{36}\?notice=started", started.headers["location"])
        shown = await c.get(started.headers["location"])
        assert "The run has started." in shown.text
        assert (await c.get("/workflows/review?version=999")).status_code == 404


async def test_a_page_neither_stats_templates_nor_walks_the_startup_heap(app, ran,
                                                                          monkeypatch) -> None:
    """What made the pages' p99 (benchmarks/dashboard.py): a full collection walking
    every startup object, and a stat of each included template per row."""
    import gc
    import os

    assert gc.get_freeze_count() > 50_000  # create_app froze the startup heap
    t, _ = ran
    async with browser(app) as c:
        await sign_in(c, t.owner)
        assert (await c.get("/runs")).status_code == 200  # templates loaded
        stats = []
        real = os.path.getmtime
        monkeypatch.setattr(os.path, "getmtime", lambda p: stats.append(p) or real(p))
        for path in ("/runs", "/", "/runs/rows"):
            assert (await c.get(path)).status_code == 200
    assert not [p for p in stats if p.endswith(".html")]
