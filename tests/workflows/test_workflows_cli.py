"""The real `agentplane` command: run, runs list|show, workflows schema|show, and bad input."""

from __future__ import annotations

import functools
import json
import re

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def test_commands_need_a_tenant_that_exists(cli):
    """A misspelled tenant is an error naming the known ones, never a new tenant."""
    r = cli("runs", "list")
    assert r.returncode == 2
    assert r.stderr.startswith("error: which tenant? give --tenant or set AGENTPLANE_TENANT")
    r = cli("run", "hi", AGENTPLANE_TENANT="nope")
    assert r.returncode == 2 and r.stderr.startswith("error: no tenant 'nope' ("), r.stderr
    r = cli("runs", "list", "--tenant", "nope")
    assert r.returncode == 2 and "no tenant 'nope'" in r.stderr
    assert "nope" not in cli("runs", "list", "--tenant", "nope").stdout
    created = cli("tenant", "create", "Real", "--slug", "real", "--owner-email", "o@real.test")
    assert created.returncode == 0, created.stderr
    tenant_id = re.search(rf"created: ({UUID_RE})", created.stdout).group(1)
    r = cli("run", "hi", AGENTPLANE_TENANT="nope")
    assert r.returncode == 2 and r.stderr.startswith("error: no tenant 'nope' (tenants: ")
    assert "real" in r.stderr
    # The id, or a unique prefix of it, names the tenant as well as the slug.
    for ref in ("real", tenant_id, tenant_id[:8]):
        assert cli("runs", "list", "--tenant", ref).returncode == 0


def test_run_query_and_workflow_with_a_file_input(cli, tmp_path):
    made = cli("tenant", "create", "Files", "--slug", "files", "--owner-email", "o@files.test")
    assert made.returncode == 0, made.stderr
    cli = functools.partial(cli, AGENTPLANE_TENANT="files")
    r = cli("run", "How do I reverse a list in Python?", "--mode", "standard")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "status      completed" in r.stdout
    assert "2 completed, 0 failed, 2 in all" in r.stdout

    spec = tmp_path / "wf.yaml"
    spec.write_text(
        "name: echo\ninputs:\n  file: {}\ntasks:\n  read:\n    agent: assistant\n"
        "    instruction: 'Read {{ inputs.file }}'\n"
    )
    r = cli("workflows", "save", str(spec))
    assert r.returncode == 0, r.stderr
    code = tmp_path / "code.py"
    code.write_text("def secret_sauce(): pass\n")
    r = cli("run", "--workflow", "echo", "--input", f"file=@{code}", "--json")
    assert r.returncode == 0, r.stderr
    tree = json.loads(r.stdout)
    assert tree["run"]["status"] == "completed"
    assert tree["run"]["inputs"]["file"] == "def secret_sauce(): pass\n"
    # A plain value is the value, even where a file of that name exists.
    r = cli("run", "--workflow", "echo", "--input", f"file={code}", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["run"]["inputs"]["file"] == str(code)
    r = cli("run", "--workflow", "echo", "-i", "file=@@home", "--json")
    assert json.loads(r.stdout)["run"]["inputs"]["file"] == "@home"

    listed = cli("runs", "list")
    assert listed.returncode == 0 and listed.stdout.count("completed") == 4


async def runs_of(db, slug: str) -> int:
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM runs r JOIN tenants t "
            "ON t.id = r.tenant_id WHERE t.slug = %s",
            [slug],
        )
        return (await cur.fetchone())["n"]


async def test_cli_bad_input_is_one_line_and_writes_nothing(cli, db):
    made = cli("tenant", "create", "B", "--slug", "bad", "--owner-email", "o@bad.test")
    assert made.returncode == 0, made.stderr
    cli = functools.partial(cli, AGENTPLANE_TENANT="bad")
    before = await runs_of(db, "bad")
    r = cli("run", "--workflow", "nope")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: workflow nope not found"
    r = cli("run", "--workflow", "echo-missing", "--input", "novalue")
    assert r.returncode == 2 and "use NAME=VALUE" in r.stderr
    r = cli("run", "--workflow", "echo", "--input", "file=@no/such/file")
    assert r.returncode == 2 and "no file 'no/such/file' to read" in r.stderr
    r = cli("run")
    assert r.returncode == 2 and "give a query" in r.stderr
    r = cli("runs", "show", "not-a-uuid")
    assert r.returncode == 2 and "is not a run id" in r.stderr
    assert await runs_of(db, "bad") == before


def test_workflows_schema_show_and_a_bad_document_on_the_command_line(cli, tmp_path):
    made = cli("tenant", "create", "S", "--slug", "shows", "--owner-email", "o@s.test")
    assert made.returncode == 0, made.stderr
    cli = functools.partial(cli, AGENTPLANE_TENANT="shows")
    r = cli("workflows", "schema")
    assert r.returncode == 0, r.stderr
    schema = json.loads(r.stdout)
    assert schema["required"] == ["tasks"]
    assert set(schema["$defs"]["TaskSpec"]["properties"]) >= {"agent", "instruction", "retry"}

    # A first query makes the default assistant; a workflow can then use it.
    assert cli("run", "warm up").returncode == 0
    spec = tmp_path / "shown.yaml"
    spec.write_text(
        "# kept as written\nname: shown\ntasks:\n  only:\n    agent: assistant\n"
        "    instruction: say hi\n"
    )
    assert cli("workflows", "save", str(spec)).returncode == 0
    spec.write_text(
        '{"name": "shown", "tasks": {"one": {"agent": "assistant", '
        '"instruction": "line one\\nline two"}}}'
    )
    assert cli("workflows", "save", str(spec)).returncode == 0
    r = cli("workflows", "show", "shown", "--version", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# kept as written\n") and "instruction: say hi" in r.stdout
    r = cli("workflows", "show", "shown")  # version 2, saved as JSON: printed as YAML
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:3] == ["name: shown", "tasks:", "  one:"]
    assert "instruction: |-\n      line one\n      line two" in r.stdout
    r = cli("workflows", "show", "shown", "--version", "9")
    assert r.returncode == 2 and r.stderr.strip() == "error: workflow shown version 9 not found"

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\ntasks:\n  a:\n    agent: ghost\n    instruction: Write about {topic}\n"
        "    prompt: extra\n"
    )
    r = cli("workflows", "save", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    prompt, agent_, template = r.stderr.splitlines()  # one line per problem
    assert prompt == (
        "error: tasks.a.prompt: unknown field 'prompt' (did you mean instruction?); allowed: "
        "agent, instruction, depends_on, dependency_type, retry, timeout_s"
    )
    assert agent_.startswith("error: tasks.a.agent: unknown agent 'ghost' (known: ")
    assert template == (
        "error: tasks.a.instruction: {topic} looks like a template but has single braces; "
        "write {{ inputs.topic }}"
    )
    bad.write_text("name: bad\ntasks:\n  a: [unclosed\n")
    r = cli("workflows", "save", str(bad))
    assert r.returncode == 2
    assert r.stderr.startswith("error: source: not valid YAML at line 4, column 1")
    assert cli("workflows", "show", "bad").returncode == 2  # nothing was saved
