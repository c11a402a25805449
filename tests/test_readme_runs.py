"""Every command the README shows runs, as written and in the order written, against a
server this test starts with the README's own `agentplane up`: a new user who pastes the
README line by line gets no error.

What the README leaves to the reader is filled in the way a reader would: placeholders
(`<run-id>`, `<job id>`, ...) become ids of things in the state the command needs (a run
in flight to pause, a failed task to retry, a pending input request), made beforehand
with the CLI or the API; public endpoints (OpenAI, Anthropic, Ollama, a shared server,
an external PostgreSQL) become local ones that speak the same protocol; files the reader
has (`app.py`, `code-review.yaml`, `key.txt`, `myapp/handlers.py`) are written. Choices
(`pause|resume|cancel`) and optional parts (`[--json]`) are each run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import cli_env, create_database, drop_database, free_port, run_cli
from tests.llm.vendors import KEY, AnthropicHandler, OpenAIHandler, serve
from tests.support.processes import stop_up, wait_ready
from tests.test_readme import TEXT

SLOW_S = 30.0
HANDLERS = '''
from agentplane.queue import JobContext, PermanentError, handler


@handler("report.build")
async def build(ctx: JobContext) -> dict:
    return {"built": ctx.payload}


@handler("email.send")
async def send(ctx: JobContext) -> dict:
    return {"sent": True}


@handler("readme.fail")
async def fail(ctx: JobContext) -> dict:
    raise PermanentError("this one always fails")
'''
WORKFLOW = """name: code-review
description: Review a file.
inputs:
  file: {description: the code}
tasks:
  review:
    agent: reviewer
    instruction: "Review this code: {{ inputs.file }}"
"""


class Ollama(OpenAIHandler):
    """A local model server: the OpenAI protocol, no key."""

    def authorized(self) -> bool:
        return True


def shell_blocks() -> list[list[str]]:
    """The README's shell code, block by block: continuations joined, comments cut."""
    blocks: list[list[str]] = []
    current: list[str] = []
    fenced = None
    for line in [*TEXT.splitlines(), ""]:
        if line.startswith("```"):
            fenced = None if fenced is not None else line[3:].strip()
            if current:
                blocks.append(current)
                current = []
            continue
        if (fenced in ("", "sh", "bash")) or (fenced is None and line.startswith("    ")):
            current.append(line.strip())
        elif fenced is None and current and line.strip():
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    joined = ["\n".join(b).replace("\\\n", " ") for b in blocks]
    out = []
    for text in joined:
        lines = [re.sub(r"\s+#\s.*$", "", x).strip() for x in text.splitlines()]
        lines = [x for x in lines if x]
        if any(x.startswith(("agentplane", "echo", "export", "pip")) for x in lines):
            out.append(lines)
    return out


def expanded(line: str) -> list[str]:
    """`runs pause|resume <id>` is two commands, `[--json]` with and without."""
    optional = re.search(r"\[(--?[^\]]+)\]", line)  # an option: not `".[dev]"`
    if optional:
        before, after = line[: optional.start()], line[optional.end():]
        return [*expanded(before + optional.group(1) + after),
                *expanded(re.sub(r"\s+", " ", before + after).strip())]
    choice = re.search(r"(?<=\s)([a-z][\w-]*(?:\|[a-z][\w-]*)+)(?=\s|$)", line)
    if choice:
        return [x for word in choice.group(1).split("|")
                for x in expanded(line[: choice.start()] + word + line[choice.end():])]
    return [line]


class Reader:
    """What a reader has and does around the README's commands."""

    def __init__(self, env: dict[str, str], home: Path, pg_server, vendors) -> None:
        self.env, self.home, self.pg_server = env, home, pg_server
        self.fast, self.slow, self.claude, self.ollama = vendors
        self.url: str = ""
        self.procs: list[subprocess.Popen[str]] = []
        self.cache: dict[str, str] = {}
        self.ran: list[str] = []

    def cli(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> str:
        r = run_cli(*args, env=env or self.env, input=input, timeout=timeout)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r.stdout

    def admin(self) -> str:
        if "admin" not in self.cache:
            self.cache["admin"] = self.cli(
                "key", "create", "--tenant", "my-org", "--email", "you@example.com", "--name",
                "setup", "--scope", "all").strip().splitlines()[-1]
        return self.cache["admin"]

    def http(self, method: str, path: str, **kwargs) -> httpx.Response:
        r = httpx.request(method, self.url + path, timeout=30,
                          headers={"Authorization": f"Bearer {self.admin()}"}, **kwargs)
        assert r.status_code < 400, r.text
        return r

    def until(self, what: Callable[[], object], timeout: float = 60) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = what()
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"waited {timeout}s in vain for {what.__doc__}")

    # -- placeholders: each made in the state its command needs -------------------------

    def run_id(self, line: str) -> str:
        if " pause " in line or " resume " in line or " cancel " in line:
            return self.slow_run()
        if " retry " in line:
            return self.failed_run()[0]
        return self.cached("any run", lambda: json.loads(self.cli(
            "runs", "list", "--tenant", "my-org", "--json"))[0]["id"])

    def slow_run(self) -> str:
        """A run whose LLM call is out (the provider answers in SLOW_S)."""
        def make() -> str:
            self.cli("providers", "add", "--tenant", "my-org", "--name", "slow", "--type",
                     "openai_compatible", "--base-url", self.slow.url + "/v1", "--model",
                     "gpt-4o", "--api-key-stdin", "--config", '{"max_retries": 0}',
                     input=KEY)
            self.cli("agents", "create", "--tenant", "my-org", "--id", "sloth", "--name",
                     "Sloth", "--role", "waits", "--model", "slow/gpt-4o")
            run = json.loads(self.cli("run", "hi", "--tenant", "my-org", "--agent", "sloth",
                                      "--no-wait", "--json"))["run"]["id"]
            self.until(lambda: self.slow.requests, 30)
            return run
        return self.cached("slow run", make)

    def failed_run(self) -> tuple[str, str]:
        """A run whose task failed (its provider refuses the connection)."""
        def make() -> str:
            self.cli("providers", "add", "--tenant", "my-org", "--name", "down", "--type",
                     "openai_compatible", "--base-url", f"http://127.0.0.1:{free_port()}/v1",
                     "--model", "gpt-4o", "--config", '{"max_retries": 0}')
            self.cli("agents", "create", "--tenant", "my-org", "--id", "broken", "--name",
                     "Broken", "--role", "fails", "--model", "down/gpt-4o")
            run = json.loads(self.cli("run", "hi", "--tenant", "my-org", "--agent", "broken",
                                      "--no-wait", "--json"))["run"]["id"]

            def failed() -> str | None:
                """the run to fail"""
                tree = json.loads(self.cli("runs", "show", run, "--tenant", "my-org", "--json"))
                return tree["tasks"][0]["node"] if tree["run"]["status"] == "failed" else None
            return f"{run} {self.until(failed)}"
        return tuple(self.cached("failed run", make).split())  # type: ignore[return-value]

    def request_id(self) -> str:
        def make() -> str:
            self.cli("agents", "create", "--tenant", "my-org", "--id", "asker", "--name",
                     "Asker", "--role", "asks", "--model", "offline/offline-1", "--tool",
                     "ask_human")
            self.cli("run", "Ship the release?", "--tenant", "my-org", "--agent", "asker",
                     "--no-wait")

            def pending() -> str | None:
                """an input request"""
                found = json.loads(self.cli("input-requests", "list", "--tenant", "my-org",
                                            "--status", "pending", "--json"))
                return found[0]["id"] if found else None
            return str(self.until(pending))
        return self.cached("request", make)

    def job_id(self) -> str:
        return self.cached("job", lambda: self.http("POST", "/v1/jobs", json={
            "type": "email.send", "queue": "mail", "payload": {"to": "you@example.com"}}
        ).json()["id"])

    def dead_letter_id(self) -> str:
        def make() -> str:
            job = self.http("POST", "/v1/jobs", json={"type": "readme.fail",
                                                      "max_attempts": 1}).json()["id"]

            def moved() -> str | None:
                """the job to be dead-lettered"""
                items = self.http("GET", "/v1/dead-letters").json()["items"]
                return next((d["id"] for d in items if d["job_id"] == job), None)
            return str(self.until(moved))
        return self.cached("dead letter", make)

    def schedule_id(self) -> str:
        found = json.loads(self.cli("schedules", "list", "--tenant", "my-org", "--json"))
        return found[0]["id"]

    def key_id(self) -> str:
        keys = self.http("GET", "/v1/api-keys").json()
        return next(k["id"] for k in keys if k["name"] == "admin")

    def demo_key(self) -> str:
        def make() -> str:
            owner = json.loads(self.cli("user", "list", "--tenant", "demo", "--json"))[0]
            return self.cli("key", "create", "--tenant", "demo", "--email", owner["email"],
                            "--name", "shared").strip().splitlines()[-1]
        return self.cached("demo key", make)

    def cached(self, name: str, make: Callable[[], str]) -> str:
        if name not in self.cache:
            self.cache[name] = make()
        return self.cache[name]

    def filled(self, line: str) -> str:
        fills: dict[str, Callable[[], str]] = {
            "<run-id>": lambda: self.run_id(line),
            "<task node or id>": lambda: self.failed_run()[1],
            "<request id>": self.request_id,
            "<job id>": self.job_id,
            "<dead letter id>": self.dead_letter_id,
            "<schedule id>": self.schedule_id,
            "<key id>": self.key_id,
            "ap_...": self.demo_key,
            "http://agentplane.internal:8400": lambda: self.url,
            "https://api.openai.com/v1": lambda: self.fast.url + "/v1",
            "https://api.anthropic.com": lambda: self.claude.url,
            "http://localhost:11434/v1": lambda: self.ollama.url + "/v1",
        }
        if " retry " in line and "<run-id>" in line:  # the task is the failed run's
            run, node = self.failed_run()
            line = line.replace("<run-id>", run).replace("<task node or id>", node)
        for hole, fill in fills.items():
            if hole in line:
                line = line.replace(hole, fill())
        external = re.search(r"postgresql://\S+", line)
        if external:
            line = line.replace(external.group(0), self.external_database())
        assert "<" not in line.replace("< ", ""), f"a placeholder is left in {line!r}"
        return line

    def external_database(self) -> str:
        create_database(self.pg_server, "t_readme_external", template=None)
        server = self.pg_server  # its owner, over its socket (TCP asks for a password)
        return (f"postgresql://postgres@/t_readme_external?host={server.socket_dir}"
                f"&port={server.port}")

    # -- running --------------------------------------------------------------------------

    def up(self, env: dict[str, str]) -> str:
        port = env["AGENTPLANE_PORT"]
        with (self.home / f"up-{port}.log").open("w") as log:  # the child keeps its own
            proc = subprocess.Popen([sys.executable, "-m", "agentplane", "up"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, text=True,
                                    cwd=self.home)
        self.procs.append(proc)
        wait_ready(int(port), proc, timeout=120)
        return f"http://127.0.0.1:{port}"

    def worker(self, line: str, env: dict[str, str]) -> None:
        proc = subprocess.Popen(["bash", "-c", f"exec {line}"], env=env, cwd=self.home,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(4)  # it starts, registers its handlers' types, claims
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "Traceback" not in out, out

    def block(self, lines: list[str]) -> None:
        env = dict(self.env)
        for written in lines:
            for step in written.split(" && "):
                if step.startswith("pip install"):
                    continue  # installed: this test runs from the installed package
                if step == "pytest":
                    continue  # the suite this test is part of
                for line in expanded(step):
                    self.step(self.filled(line), env)

    def step(self, line: str, env: dict[str, str]) -> None:
        self.ran.append(line)
        if line.startswith("export "):
            for pair in shlex.split(line)[1:]:
                name, _, value = pair.partition("=")
                env[name] = value
            return
        if line == "agentplane up":
            if "AGENTPLANE_DATABASE_URL" in env:  # an external database: a second server
                url = self.up({**env, "AGENTPLANE_PORT": str(free_port())})
                assert httpx.get(url + "/health", timeout=10).status_code == 200
                stop_up(self.procs.pop())
            elif not self.url:
                self.url = self.up(env)
            return
        if line.startswith("agentplane worker"):
            return self.worker(line, env)
        r = subprocess.run(["bash", "-c", line], env=env, cwd=self.home, capture_output=True,
                           text=True, timeout=180)
        assert r.returncode == 0, f"{line}\n{r.stdout}\n{r.stderr}"
        assert "Traceback" not in r.stderr, r.stderr



@pytest.fixture
def vendors() -> Iterator[tuple]:
    with serve(OpenAIHandler) as fast, serve(OpenAIHandler) as slow, \
            serve(AnthropicHandler) as claude, serve(Ollama) as ollama:
        slow.delay = SLOW_S
        yield fast, slow, claude, ollama


def test_every_readme_command_runs_as_written(pg_server, settings, tmp_path, vendors) -> None:
    name = "t_readme_walk"
    create_database(pg_server, name, template=None)  # empty, as on a new machine
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "agentplane").write_text(f'#!/bin/sh\nexec {sys.executable} -m agentplane "$@"\n')
    (shim / "agentplane").chmod(0o755)
    home = tmp_path / "work"
    (home / "myapp").mkdir(parents=True)
    (home / "myapp" / "__init__.py").write_text("")
    (home / "myapp" / "handlers.py").write_text(HANDLERS)
    (home / "app.py").write_text("def add(a, b):\n    return a + b\n")
    (home / "code-review.yaml").write_text(WORKFLOW)
    (home / "key.txt").write_text(KEY)
    (home / "anthropic-key.txt").write_text(KEY)
    env = cli_env(settings, AGENTPLANE_DATABASE_NAME=name, AGENTPLANE_PORT=str(free_port()),
                  AGENTPLANE_WORKER_IMPORTS="myapp.handlers", PYTHONPATH=str(home),
                  PATH=f"{shim}{os.pathsep}{os.environ['PATH']}")
    reader = Reader(env, home, pg_server, vendors)
    try:
        blocks = shell_blocks()
        for lines in blocks:
            reader.block(lines)
        ran = reader.ran
        assert ran.count("agentplane demo") == 1 and len(ran) >= 60, ran
        assert any(x.startswith("agentplane runs pause ") for x in ran)
        status = json.loads(reader.cli("runs", "show", reader.slow_run(), "--tenant", "my-org",
                                       "--json"))["run"]["status"]
        assert status == "cancelled"  # paused, resumed, then cancelled as the README did
        answered = json.loads(reader.cli("input-requests", "list", "--tenant", "my-org",
                                         "--json"))
        assert [r["status"] for r in answered] == ["answered"]
        assert reader.claude.requests and reader.ollama.requests and reader.fast.requests
    finally:
        for proc in reader.procs:
            stop_up(proc)
        drop_database(pg_server, name)
        drop_database(pg_server, "t_readme_external")
