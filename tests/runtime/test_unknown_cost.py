"""An unpriced model's cost is unknown, never zero: in the run summary and tree, `runs
list`, `agentplane usage` and the API. A total mixing priced and unpriced calls shows
the known part and says it is incomplete. The real CLI, against a local server that
speaks the OpenAI protocol."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import httpx

from agentplane.db.pool import Database
from tests.llm.vendors import KEY, OpenAIHandler, serve
from tests.runtime.helpers import add_agents, agent, tenant

MIXED = """
name: mixed
tasks:
  draft:
    agent: priced
    instruction: "Draft a line about rivers."
  polish:
    agent: unpriced
    instruction: "Polish {{ tasks.draft.output }}"
"""
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def cost_line(out: str) -> str:
    found = [line for line in out.splitlines() if line.strip().startswith("cost ")]
    assert found, out
    return found[0].strip()


async def test_unknown_and_incomplete_costs(cli, db: Database, client: httpx.AsyncClient) -> None:
    ctx = await tenant(db)
    with serve(OpenAIHandler) as vendor:
        r = cli("providers", "add", "--tenant", ctx.slug, "--name", "local", "--type",
                "openai_compatible", "--base-url", f"{vendor.url}/v1", "--api-key-stdin",
                input=KEY + "\n")
        assert r.returncode == 0, r.stderr

        # Every call unpriced: the cost is unknown.
        r = cli("run", "Name a river.", "--model", "local/llama-local", "--tenant", ctx.slug)
        assert r.returncode == 0, r.stderr + r.stdout
        assert cost_line(r.stdout).split(None, 1)[1].strip() == "—  (1 call without a price)"
        assert "$0.0000" not in r.stdout and "tok · —" in r.stdout
        unknown_id = re.search(rf"run\s+({UUID_RE})", r.stdout).group(1)

        await add_agents(client, ctx, agent("priced", model="local/gpt-4o"),
                         agent("unpriced", model="local/llama-local"))
        r = await client.post("/v1/workflows", json={"source": MIXED}, headers=ctx.headers)
        assert r.status_code == 201, r.text
        r = cli("run", "--workflow", "mixed", "--tenant", ctx.slug, "--json")
        assert r.returncode == 0, r.stderr
        tree = json.loads(r.stdout)
    run = tree["run"]
    assert (run["cost_complete"], run["unpriced_calls"]) == (False, 1)
    known = Decimal(run["total_cost_usd"])
    assert known > 0 and "E" not in run["total_cost_usd"]
    tasks = {t["node"]: t for t in tree["tasks"]}
    assert tasks["polish"]["cost_usd"] is None and tasks["polish"]["cost_complete"] is False
    assert Decimal(tasks["draft"]["cost_usd"]) == known and tasks["draft"]["cost_complete"]
    [polish_call] = tasks["polish"]["agent_executions"][0]["llm_calls"]
    assert polish_call["cost_usd"] is None

    r = cli("runs", "show", run["id"], "--tenant", ctx.slug)
    assert r.returncode == 0, r.stderr
    assert re.search(r"cost\s+\$\d+\.\d+ \+ unknown  \(1 call without a price\)", r.stdout)
    assert "cost unknown (no price)" in r.stdout and "tok · —" in r.stdout

    r = await client.get(f"/v1/runs/{unknown_id}", headers=ctx.headers)
    assert r.json()["total_cost_usd"] is None and r.json()["cost_complete"] is False

    listed = cli("runs", "list", "--tenant", ctx.slug)
    assert listed.returncode == 0, listed.stderr
    lines = {m.group(0): line for line in listed.stdout.splitlines()
             if (m := re.search(UUID_RE, line))}
    assert unknown_id in lines and run["id"] in lines, listed.stdout
    assert "—" in lines[unknown_id] and "$0.0000" not in lines[unknown_id]
    assert "+ unknown" in lines[run["id"]]

    usage = cli("usage", "--by", "model", "--since", "1d", "--tenant", ctx.slug)
    assert usage.returncode == 0, usage.stderr
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in usage.stdout.splitlines()]
    rows = {c[1]: c for c in cells if len(c) == 9}
    assert rows["local/llama-local"][5] == "—", usage.stdout
    assert rows["local/gpt-4o"][5].startswith("$"), usage.stdout
    total = cli("usage", "--since", "1d", "--tenant", ctx.slug)
    assert "+ unknown" in total.stdout, total.stdout
    r = await client.get("/v1/usage", params={"by": "model", "since": "1d"}, headers=ctx.headers)
    by_model = {x["key"]: x for x in r.json()["rows"]}
    assert by_model["local/llama-local"]["cost_usd"] is None
    assert by_model["local/llama-local"]["cost_complete"] is False
    assert Decimal(by_model["local/gpt-4o"]["cost_usd"]) == known
    r = await client.get("/v1/usage/summary", headers=ctx.headers)
    assert r.json()["cost_complete"] is False and r.json()["unpriced_calls"] == 2
