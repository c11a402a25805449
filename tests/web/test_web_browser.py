"""The dashboard in a real browser: Chromium (Debian's `chromium`) driven by Playwright
against a live `agentplane up` on a fresh database. Sign in, the overview, a workflow
started from its form whose tasks turn green live (no reload), a task's LLM call opened,
a run cancelled, a dead letter retried, a key created and revoked; a viewer sees no
action and its forged POST is refused; no page breaks its Content-Security-Policy."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli_env, free_port, run_cli
from tests.llm.vendors import KEY, OpenAIHandler, serve
from tests.queue.workers import dead_letter
from tests.support.processes import stop_up, wait_ready

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic"]
PASSWORD = "a long passphrase for the browser"
OWNER, VIEWER = "owner@browser.example.com", "viewer@browser.example.com"
WORKFLOW = """
name: triage
description: Two looks at a report, then a verdict.
inputs:
  report:
    description: what happened
tasks:
  look:
    agent: looker
    instruction: "Look at: {{ inputs.report }}"
  second:
    agent: looker
    instruction: "Look again at: {{ inputs.report }}"
  verdict:
    agent: judge
    instruction: "Judge: {{ tasks.look.output }} {{ tasks.second.output }}"
"""

MISSING = "the browser tests need Chromium: apt-get install chromium (Debian's package)"
if not os.path.exists(CHROMIUM):
    found = shutil.which("chromium")
    if found is None:
        # CI (.ci/run) installs it and says BROWSER_TESTS=required: there, a miss fails.
        if os.environ.get("BROWSER_TESTS") == "required":
            raise RuntimeError(MISSING)
        pytest.skip(MISSING, allow_module_level=True)
    CHROMIUM = found
playwright = pytest.importorskip("playwright.async_api", reason="pip install -e '.[dev]'")
expect = playwright.expect


class GatedHandler(OpenAIHandler):
    """A vendor whose answers wait until the test opens the gate."""

    def do_POST(self) -> None:
        self.server.gate.wait(60)  # type: ignore[attr-defined]
        super().do_POST()


@pytest.fixture(scope="module")
def vendor():
    with serve(GatedHandler) as server:
        server.gate = threading.Event()  # type: ignore[attr-defined]
        server.gate.set()
        yield server


@pytest.fixture(scope="module")
def server(settings, database_name, vendor, tmp_path_factory):
    """`agentplane up` on this module's fresh database, with an owner and a viewer that
    sign in with passwords, agents on the gated vendor and a workflow."""
    port = free_port()
    env = cli_env(settings, AGENTPLANE_PORT=str(port))
    sh = lambda *a, input=None: _ok(run_cli(*a, env=env, input=input))  # noqa: E731
    sh("tenant", "create", "Browser", "--slug", "browser", "--owner-email", OWNER,
       "--password-stdin", input=PASSWORD + "\n")
    sh("user", "create", "--tenant", "browser", "--email", VIEWER, "--role", "viewer",
       "--password-stdin", input=PASSWORD + "\n")
    sh("providers", "add", "--tenant", "browser", "--name", "gated", "--type",
       "openai_compatible", "--base-url", vendor.url + "/v1", "--model", "gpt-4o",
       "--config", '{"max_retries": 0}', "--api-key-stdin", input=KEY + "\n")
    for slug in ("looker", "judge"):
        sh("agents", "create", "--tenant", "browser", "--id", slug, "--name", slug.title(),
           "--role", "triage", "--model", "gated/gpt-4o", "--max-tokens", "100")
    spec = tmp_path_factory.mktemp("wf") / "triage.yaml"
    spec.write_text(WORKFLOW)
    sh("workflows", "save", "--tenant", "browser", str(spec))
    log = tmp_path_factory.mktemp("up") / "up.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "agentplane", "up"], env=env,
                                stdout=sink, stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_up(proc)


def _ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, (r.args, r.stdout, r.stderr)
    return r.stdout


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Any]:
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def page(chromium) -> AsyncIterator[Any]:
    """A fresh browser context (no cookies) whose CSP violations are collected."""
    context = await chromium.new_context(viewport={"width": 1400, "height": 1000})
    tab = await context.new_page()
    tab.violations = []
    # Script errors and CSP refusals; a 4xx the test asked for is no error of the page.
    tab.on("console", lambda m: tab.violations.append(m.text) if (
        "Content Security Policy" in m.text
        or (m.type == "error" and not m.text.startswith("Failed to load resource"))) else None)
    tab.on("pageerror", lambda e: tab.violations.append(str(e)))
    tab.questions = []

    async def answer(dialog: Any) -> None:  # "Cancel this run?" and the like: yes
        tab.questions.append(dialog.message)
        await dialog.accept()

    tab.on("dialog", answer)
    yield tab
    await context.close()


async def sign_in(page: Any, url: str, email: str) -> None:
    await page.goto(f"{url}/login")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{url}/")


async def test_sign_in_and_see_the_overview(server, page) -> None:
    await page.goto(server + "/runs")
    assert page.url.startswith(server + "/login")
    await page.fill("input[name=email]", OWNER)
    await page.fill("input[name=password]", "not the password!!")
    await page.click("button[type=submit]")
    assert "invalid email or password" in await page.inner_text(".flash.error")
    await sign_in(page, server, OWNER)
    assert await page.inner_text("h1") == "Overview"
    assert await page.locator(".stat").count() == 7
    assert await page.locator("svg.chart.spark").count() == 7
    assert page.violations == []


async def test_a_run_started_from_its_form_turns_green_live(server, page, vendor) -> None:
    await sign_in(page, server, OWNER)
    await page.goto(server + "/workflows/triage")
    assert await page.locator("svg.dag g.node").count() == 3
    await page.click("#start-run button[type=submit]")  # nothing given: refused
    assert await page.inner_text("#error-report") == "missing input"
    vendor.gate.clear()  # calls wait until the page is watching
    try:
        await page.fill("textarea[name='input.report']", "the disk filled up")
        await page.click("#start-run button[type=submit]")
        await page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}\?notice=started"))
        await page.wait_for_selector("#run[sse-connect]")
        await page.evaluate("window.stayed = true")  # gone if the page reloads
        assert await page.locator("svg.dag g.node.completed").count() == 0
    finally:
        vendor.gate.set()
    # (Polled by Playwright's own script: the page's CSP refuses eval, wait_for_function.)
    await expect(page.locator("svg.dag g.node.completed")).to_have_count(3, timeout=30_000)
    await expect(page.locator("#run-status")).to_have_text("completed", timeout=15_000)
    assert await page.evaluate("window.stayed") is True  # live: no reload
    assert await page.locator("#events li").filter(has_text="run.completed").count() == 1

    # A task's LLM call, opened in place: its messages load when it opens.
    await page.reload()
    row = page.locator("#calls details.call.llm").first
    await row.locator("summary").click()
    await row.locator(".msg.user").first.wait_for()
    assert "the disk filled up" in await row.locator(".messages").inner_text()
    await row.locator("a", has_text="open").click()
    await page.wait_for_url(re.compile(r".*/llm-calls/[0-9a-f-]{36}"))
    assert "gated/gpt-4o" in await page.inner_text("dl.facts")
    assert page.violations == []


async def test_cancel_a_run(server, page, vendor) -> None:
    await sign_in(page, server, OWNER)
    vendor.gate.clear()
    try:
        await page.goto(server + "/workflows/triage")
        await page.fill("textarea[name='input.report']", "stuck")
        await page.click("#start-run button[type=submit]")
        await page.wait_for_url(re.compile(r".*/runs/.*notice=started"))
        await page.click("#run-actions button:has-text('Cancel')")
        await page.wait_for_url(re.compile(r".*notice=cancelled"))
        assert page.questions == ["Cancel this run? Its running tasks stop."]
        assert await page.inner_text("#run-status") == "cancelled"
        assert "The run is cancelled." in await page.inner_text("#flash")
        assert await page.locator("#run-actions button").count() == 0
    finally:
        vendor.gate.set()


async def test_retry_a_dead_letter(server, page, db) -> None:
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT id FROM tenants WHERE slug = 'browser'")
        tenant = (await cur.fetchone())["id"]
    job, letter = await dead_letter(db, tenant, "browser.dead", {"n": 1}, "browser-q")
    await sign_in(page, server, OWNER)
    await page.goto(server + "/queue")
    row = page.locator(f"tr[data-dead-letter='{letter}']")
    await row.locator("button", has_text="Retry the job").click()
    await page.wait_for_url(re.compile(r".*/queue\?notice=job-retried"))
    assert "The job is queued again." in await page.inner_text("#flash")
    status = await page.locator(f"tr[data-job='{job}'] .badge").inner_text()
    assert status != "dead_letter"


async def test_create_and_revoke_a_key(server, page) -> None:
    await sign_in(page, server, OWNER)
    await page.goto(server + "/keys")
    await page.fill("#key-name", "from the browser")
    await page.click("#create-key button[type=submit]")
    secret = (await page.inner_text("#key-secret")).strip()
    assert secret.startswith("ap_")
    me = await page.request.get(server + "/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status == 200
    await page.goto(server + "/keys")
    assert secret not in await page.content()
    row = page.locator("tr", has_text="from the browser")
    await row.locator("button", has_text="Revoke").click()
    await page.wait_for_url(re.compile(r".*notice=key-revoked"))
    me = await page.request.get(server + "/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status == 401


async def test_a_viewer_sees_no_action_and_a_forged_post_is_refused(server, page) -> None:
    await sign_in(page, server, VIEWER)
    await page.goto(server + "/runs?status=completed")
    await page.locator("#runs tbody a").first.click()
    await page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}$"))
    assert await page.locator("main form[method=post]").count() == 0
    assert await page.locator("main button").count() == await page.locator(
        "#calls button").count()  # only "More calls", nothing that acts
    run_id = page.url.rsplit("/", 1)[1]
    await page.goto(server + "/workflows/triage")
    assert await page.locator("#start-run").count() == 0
    token = await page.get_attribute("meta[name=csrf-token]", "content")
    forged = await page.request.post(f"{server}/runs/{run_id}/pause",
                                     form={"csrf": token})
    assert forged.status == 403
    forged = await page.request.post(f"{server}/workflows/triage/runs",
                                     form={"csrf": token, "input.report": "x"})
    assert forged.status == 403
    assert page.violations == []


async def test_docs_and_redoc_load_from_the_package(server, page) -> None:
    # Requests that reached a server: ReDoc's attribution logo (a CDN's image in its
    # bundle) is refused by the page's CSP (img-src 'self'), so it never leaves.
    requests: list[str] = []
    page.on("requestfinished", lambda r: requests.append(r.url))
    await page.goto(server + "/docs")
    await page.wait_for_selector(".opblock", timeout=20_000)
    await page.goto(server + "/redoc")
    await page.wait_for_selector("[role=menuitem], .menu-content", timeout=20_000)
    outside = [u for u in requests if not u.startswith((server, "data:", "blob:"))]
    assert outside == []


def test_ci_installs_chromium() -> None:
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "apt-get install -y -qq chromium" in ci and "BROWSER_TESTS=required" in ci
