"""Tools can be discovered (GET /v1/tools, `agentplane tools list`) and added: a tool
defined outside the package, imported by name, called by an agent in a real run that a
real worker process executes, its output in the trace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agentplane.agents import tools
from tests.conftest import cli_env
from tests.runtime.helpers import add_agents, agent, settle, tenant

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.runtime.custom_tools"


@pytest.fixture(scope="module")
def custom():
    """This process is the API: it imports the module, as `agentplane up` would."""
    from agentplane.queue.registry import import_modules

    import_modules([MODULE])
    yield
    for name in ("shout", "reverse"):
        tools.REGISTRY.pop(name, None)


def env(settings, **extra):
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**cli_env(settings), "PYTHONPATH": path, **extra}


def start_worker(settings) -> subprocess.Popen[str]:
    """`agentplane worker --import` the tools' module, as a real process."""
    return subprocess.Popen(
        [sys.executable, "-m", "agentplane", "worker", "--import", MODULE,
         "--poll-interval", "0.1", "--no-schedules"],
        env=env(settings, AGENTPLANE_LOG_LEVEL="WARNING"), cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


async def test_get_tools_lists_built_ins_and_the_imported_ones(db, client, custom):
    ctx = await tenant(db)
    r = await client.get("/v1/tools", headers=ctx.headers)
    assert r.status_code == 200, r.text
    listed = {t["name"]: t for t in r.json()}
    assert set(tools.BUILTINS) | {"shout", "reverse"} == set(listed)
    ask = listed["ask_human"]
    assert ask["stateful"] and ask["source"] == "built-in" and "input request" in ask["description"]
    assert ask["schema"]["required"] == ["prompt"]
    shout = listed["shout"]
    assert shout == {
        "name": "shout",
        "description": "Upper-case a text and sign it.",
        "schema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
            "additionalProperties": False,
        },
        "source": MODULE,
        "stateful": False,
        "allowed": True,
    }
    # The docstring is the description; a defaulted parameter is optional.
    assert listed["reverse"]["description"] == "Reverse a text."
    assert listed["reverse"]["schema"]["required"] == ["text"]
    assert listed["reverse"]["schema"]["properties"]["times"] == {"type": "integer"}


async def test_a_viewer_may_list_tools_an_anonymous_caller_may_not(db, client):
    viewer = await tenant(db, role="viewer")
    assert (await client.get("/v1/tools", headers=viewer.headers)).status_code == 200
    r = await client.get("/v1/tools")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"


async def test_a_custom_tool_runs_in_a_worker_process_and_reaches_the_trace(
    db, settings, client, custom
):
    ctx = await tenant(db)
    await add_agents(client, ctx, agent("crier", tools=["shout"]))
    r = await client.post(
        "/v1/runs", json={"query": "hello there", "agent": "crier"}, headers=ctx.headers
    )
    assert r.status_code == 201, r.text
    proc = start_worker(settings)
    try:
        run = await settle(client, ctx, r.json()["id"], timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert run["status"] == "completed", (run, err)
    assert run["tools_invoked"] == 1
    tree = (await client.get(f"/v1/runs/{run['id']}/tree", headers=ctx.headers)).json()
    [execution] = tree["tasks"][0]["agent_executions"]
    [call] = execution["tool_executions"]
    assert call["tool_name"] == "shout" and call["success"], call
    output = json.loads(call["output"])
    assert output["by"] == "custom-tools" and output["shouted"] == output["shouted"].upper()
    assert "HELLO THERE" in output["shouted"]
    assert "SHOUTED" in run["result"] or "HELLO THERE" in run["result"]  # the model read it


async def test_an_agent_cannot_be_given_a_tool_no_module_registered(db, client):
    ctx = await tenant(db)
    r = await client.post("/v1/agents", json=agent("mute", tools=["whisper"]), headers=ctx.headers)
    assert r.status_code == 422 and "unknown tool: whisper" in r.json()["detail"]


def test_tools_list_on_the_command_line_imports_the_module(settings):
    from tests.conftest import run_cli

    r = run_cli("tools", "list", "--json", "--import", MODULE, env=env(settings))
    assert r.returncode == 0, r.stderr
    listed = {t["name"]: t for t in json.loads(r.stdout)}
    assert listed["shout"]["source"] == MODULE and "ask_human" in listed
    r = run_cli("tools", "list", env=env(settings, AGENTPLANE_WORKER_IMPORTS=MODULE))
    assert r.returncode == 0 and "shout" in r.stdout and "calculator" in r.stdout
    r = run_cli("tools", "list", "--import", "no_such_module_here", env=env(settings))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot import module 'no_such_module_here'" in r.stderr


def test_a_tool_cannot_take_a_built_in_name_or_a_bad_one():
    with pytest.raises(ValueError, match="built in"):
        tools.tool("calculator", description="mine")(lambda expression: 1)
    with pytest.raises(ValueError, match="letters, digits"):
        tools.tool("two words", description="x")(lambda: 1)
    assert tools.get("calculator").fn is tools.calculator
