"""`agentplane agents list|show|create|update|delete` as a real subprocess: an agent from
a YAML file and flags (flags win), shown and listed, changed field by field, deleted;
bad input is one line with exit code 2 and writes nothing."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path

import pytest

from tests.runtime.helpers import count


@pytest.fixture(scope="module")
def agents(cli):
    made = cli("tenant", "create", "Crew", "--slug", "crew", "--owner-email", "o@crew.test")
    assert made.returncode == 0, made.stderr
    return functools.partial(cli, "agents", AGENTPLANE_TENANT="crew")


def ok(result) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def one_line_error(result, needle: str) -> None:
    assert result.returncode == 2, result.stdout
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("error: ") and needle in result.stderr, result.stderr


def test_an_agents_life_from_a_file_and_flags(agents, tmp_path: Path) -> None:
    spec = tmp_path / "mika.yaml"
    spec.write_text("id: mika-007\nname: Mika\nrole: translator\ntools: [calculator]\n"
                    "instructions: Translate plainly.\n")
    out = ok(agents("create", "--file", str(spec), "--role", "editor", "--max-tokens", "80"))
    assert out.strip() == "agent mika-007 created (offline/offline-1)"
    shown = json.loads(ok(agents("show", "mika-007")))
    assert (shown["name"], shown["role"], shown["tools"], shown["instructions"]) == (
        "Mika", "editor", ["calculator"], "Translate plainly.")
    assert shown["metadata"] == {"max_tokens": 80} and shown["version"] == 1

    assert ok(agents("update", "mika-007", "--status", "maintenance", "--name", "Mika B")) \
        .strip() == "agent mika-007 updated"
    listed = json.loads(ok(agents("list", "--json")))
    assert [(a["id"], a["name"], a["status"], a["version"]) for a in listed] == [
        ("mika-007", "Mika B", "maintenance", 2)]
    assert json.loads(ok(agents("list", "--status", "active", "--json"))) == []
    table = ok(agents("list"))
    assert "mika-007" in table and "maintenance" in table

    assert ok(agents("delete", "mika-007")).strip() == "agent mika-007 deleted"
    assert json.loads(ok(agents("list", "--json"))) == []


async def test_bad_input_is_one_line_and_writes_nothing(agents, db, tmp_path: Path) -> None:
    async def run(*args: str):
        return await asyncio.to_thread(agents, *args)

    tenant = await _tenant_id(db, "crew")
    before = await count(db, "agents", tenant)
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: [unclosed\n")
    one_line_error(await run("create", "--file", str(broken)), "not valid YAML or JSON at line")
    listed = tmp_path / "list.yaml"
    listed.write_text("- id: a\n")
    one_line_error(await run("create", "--file", str(listed)), "an agent is a mapping of fields")
    one_line_error(await run("create", "--id", "Bad Slug", "--name", "B", "--role", "r"), "id")
    one_line_error(await run("create", "--id", "t", "--name", "T", "--role", "r", "--tool",
                             "rm_rf"), "unknown tool: rm_rf")
    one_line_error(await run("update", "nobody", "--name", "N"), "agent nobody not found")
    one_line_error(await run("update", "nobody"), "nothing to change")
    one_line_error(await run("delete", "nobody"), "agent nobody not found")
    one_line_error(await run("show", "nobody"), "agent nobody not found")
    assert await count(db, "agents", tenant) == before


async def _tenant_id(db, slug: str):
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT id FROM tenants WHERE slug = %s", [slug])
        return (await cur.fetchone())["id"]
