"""The first hour of a new team, as the README tells it, with the real command: a server
started with `agentplane up`, a tenant and a key with the defaults, agents, the README's
example workflow saved and run, its events, its tree, usage; a run cancelled while its
LLM call is out (against a provider that answers slowly); and the same path through the
HTTP API with --url/--api-key, as a team sharing one server works."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import cli_env, create_database, drop_database, free_port, run_cli
from tests.llm.vendors import KEY, OpenAIHandler, serve
from tests.support.processes import stop_up, wait_ready
from tests.workflows.test_workflow_docs import readme_example

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
SLOW_S = 6.0


@pytest.fixture(scope="module")
def server(pg_server, settings, tmp_path_factory):
    """`agentplane up` on a database of its own, and the environment its CLI uses."""
    name = "t_first_hour_up"
    create_database(pg_server, name, template=None)  # empty: `up` migrates it
    port = free_port()
    env = cli_env(settings, AGENTPLANE_DATABASE_NAME=name, AGENTPLANE_PORT=str(port))
    log = tmp_path_factory.mktemp("up") / "up.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "agentplane", "up"], env=env,
                                stdout=sink, stderr=subprocess.STDOUT, text=True)
    try:
        wait_ready(port, proc)
        yield env, f"http://127.0.0.1:{port}"
    finally:
        stop_up(proc)
        drop_database(pg_server, name)


def sh(env: dict[str, str], *args: str, input: str | None = None, ok: bool = True,
       timeout: float = 90) -> subprocess.CompletedProcess[str]:
    r = run_cli(*args, env=env, input=input, timeout=timeout)
    if ok:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def test_the_first_hour_from_the_readme(server, tmp_path: Path) -> None:
    env, url = server
    made = sh(env, "tenant", "create", "My org", "--slug", "my-org", "--owner-email",
              "you@example.com", "--password-stdin", input="a long passphrase\n")
    hint = re.search(r"next: agentplane (.*)", made.stdout).group(1).split()
    key = sh(env, *hint).stdout.strip().splitlines()[-1]  # the key, with default scopes
    assert key.startswith("ap_")
    env = {**env, "AGENTPLANE_TENANT": "my-org"}

    # The README's example workflow, with agents of those ids.
    source = readme_example()
    spec = tmp_path / "release-check.yaml"
    spec.write_text(source)
    for slug in sorted({t["agent"] for t in yaml.safe_load(source)["tasks"].values()}):
        sh(env, "agents", "create", "--id", slug, "--name", slug.title(), "--role", "reviewer")
    assert "akira-001" in sh(env, "agents", "list").stdout
    saved = sh(env, "workflows", "save", str(spec))
    assert "workflow release-check version 1 saved" in saved.stdout
    change = tmp_path / "my.diff"
    change.write_text("-    return a + b\n+    return a - b\n")
    ran = sh(env, "run", "--workflow", "release-check", "--input", f"change=@{change}",
             "--json", timeout=180)
    tree = json.loads(ran.stdout)
    run_id = tree["run"]["id"]
    assert tree["run"]["status"] == "completed" and tree["run"]["completed_tasks"] == 4
    assert tree["run"]["inputs"]["change"] == change.read_text()

    events = [json.loads(line) for line in sh(env, "events", run_id, "--json").stdout.splitlines()]
    assert events[-1]["type"] == "run.completed"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    followed = sh(env, "events", run_id, "--follow").stdout  # ended: prints it all and stops
    assert "run.completed" in followed

    shown = sh(env, "runs", "show", run_id[:8])  # a short id will do
    assert "4 completed, 0 failed, 4 in all" in shown.stdout
    rows = list(csv.DictReader(io.StringIO(sh(env, "usage", "--by", "agent", "--csv").stdout)))
    assert len({r["key"] for r in rows}) == 4 and sum(int(r["calls"]) for r in rows) >= 4
    agents = {t["agent"] for t in yaml.safe_load(source)["tasks"].values()}
    assert {r["label"] for r in rows} == agents  # each agent's id, and its slug beside it
    table = sh(env, "usage", "--by", "agent").stdout
    assert all(slug in table for slug in agents)
    assert "run.completed" in sh(env, "events", run_id[:8], "--type", "run.*").stdout

    # Through the shared server, as the key: the same commands, the same answers.
    remote = {k: v for k, v in env.items() if k != "AGENTPLANE_TENANT"}
    remote.update(AGENTPLANE_URL=url, AGENTPLANE_API_KEY=key)
    listed = json.loads(sh(remote, "runs", "list", "--json").stdout)
    assert [r["id"] for r in listed] == [run_id]
    assert "4 completed, 0 failed" in sh(remote, "runs", "show", run_id[:6]).stdout
    assert "release-check" in sh(remote, "workflows", "list").stdout
    assert "kenji-005" in sh(remote, "agents", "list").stdout
    again = json.loads(sh(remote, "run", "Is this change safe?", "--json", timeout=120).stdout)
    assert again["run"]["status"] == "completed"  # run by the server's own worker
    shared = list(csv.DictReader(io.StringIO(sh(remote, "usage", "--by", "agent",
                                                 "--csv").stdout)))
    assert len({r["key"] for r in shared}) == 5  # the four, and the query's assistant
    refused = sh(remote, "runs", "show", "0000", ok=False)
    assert refused.returncode == 2 and refused.stderr.startswith("error: no run whose id")
    wrong = sh({**remote, "AGENTPLANE_API_KEY": "ap_wrong"}, "runs", "list", ok=False)
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: ")

    # A run cancelled while its call is out: the call stops, nothing follows run.cancelled.
    with serve(OpenAIHandler) as vendor:
        vendor.delay = SLOW_S
        r = httpx.post(f"{url}/v1/llm/providers", headers={"Authorization": f"Bearer {key}"},
                       json={"name": "slow", "type": "openai_compatible",
                             "base_url": vendor.url + "/v1", "api_key": KEY,
                             "config": {"max_retries": 0}}, timeout=10)
        assert r.status_code == 403  # a default key does not manage providers
        admin = sh(env, "key", "create", "--email", "you@example.com", "--name", "ops",
                   "--scope", "all").stdout.strip().splitlines()[-1]
        ops = {**remote, "AGENTPLANE_API_KEY": admin}
        r = httpx.post(f"{url}/v1/llm/providers", headers={"Authorization": f"Bearer {admin}"},
                       json={"name": "slow", "type": "openai_compatible",
                             "base_url": vendor.url + "/v1", "api_key": KEY,
                             "config": {"max_retries": 0}}, timeout=10)
        assert r.status_code == 201, r.text
        sh(ops, "agents", "create", "--id", "sloth", "--name", "Sloth", "--role", "waits",
           "--model", "slow/gpt-4o")
        started = json.loads(sh(remote, "run", "hi", "--agent", "sloth", "--no-wait",
                                "--json").stdout)
        slow_id = started["run"]["id"]
        deadline = time.monotonic() + 20
        while not vendor.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert vendor.requests, "the call never went out"
        sent = time.monotonic()
        assert f"run {slow_id} cancelled" in sh(remote, "runs", "cancel", slow_id[:8]).stdout
        calls = []
        while time.monotonic() - sent < SLOW_S - 1:
            calls = httpx.get(f"{url}/v1/llm-calls", params={"run_id": slow_id},
                              headers={"Authorization": f"Bearer {admin}"}, timeout=10).json()
            calls = calls.get("items", calls) if isinstance(calls, dict) else calls
            if calls:
                break
            time.sleep(0.1)
        assert [(c["status"], c["error"]) for c in calls] == [
            ("cancelled", "cancelled by the caller")]
        time.sleep(max(0.0, SLOW_S - (time.monotonic() - sent)) + 1)
    last = json.loads(sh(remote, "events", slow_id[:8], "--json").stdout.splitlines()[-1])
    assert last["type"] == "run.cancelled"
    jobs = json.loads(sh(ops, "jobs", "list", "--json").stdout)["items"]  # the key's tenant's
    stopped = [j for j in jobs if j["payload"].get("run_id") == slow_id]
    assert [j["status"] for j in stopped] == ["cancelled"]
    short = stopped[0]["id"][:-8]  # job ids begin with their time: more than 8 characters
    assert json.loads(sh(ops, "jobs", "show", short, "--json").stdout)["id"] == stopped[0]["id"]
    added = sh(ops, "schedules", "add", "--name", "nightly", "--cron", "0 2 * * *", "--type",
               "report.nightly", "--allow-unknown").stdout
    schedule = added.split()[1].rstrip(":")
    listed = json.loads(sh(ops, "schedules", "list", "--json").stdout)
    assert [(s["id"], s["name"]) for s in listed] == [(schedule, "nightly")]
    assert f"schedule {schedule} deleted" in sh(ops, "schedules", "delete", schedule[:13]).stdout
    assert json.loads(sh(ops, "schedules", "list", "--json").stdout) == []
    budget = httpx.get(f"{url}/v1/usage/summary", headers={"Authorization": f"Bearer {key}"},
                       timeout=10).json()
    assert budget["tokens_reserved"] == 0 and budget["token_limit"] is None
