"""`agentplane tenant|user|key ...` as real subprocesses, and the first-run hint of `up`."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from agentplane.db.pool import Database
from tests.conftest import cli_env, create_database, drop_database, free_port
from tests.support.processes import stop_up

PASSWORD = "correct horse battery\n"


async def _count(db: Database, table: str) -> int:
    async with db.admin_connection() as conn:
        cur = await conn.execute(f"SELECT count(*) AS n FROM {table}")
        return (await cur.fetchone())["n"]


async def test_first_owner_and_key_from_the_cli(cli, client: httpx.AsyncClient) -> None:
    r = cli(
        "tenant",
        "create",
        "Acme Inc",
        "--slug",
        "acme",
        "--owner-email",
        "Boss@Acme.test",
        "--password-stdin",
        input=PASSWORD,
    )
    assert r.returncode == 0, r.stderr
    assert "tenant acme created" in r.stdout and "owner boss@acme.test" in r.stdout
    assert "agentplane key create --tenant acme" in r.stdout

    r = cli("user", "create", "--tenant", "acme", "--email", "dev@acme.test", "--role", "developer")
    assert r.returncode == 0, r.stderr
    assert "added to acme as developer" in r.stdout

    r = cli(
        "key",
        "create",
        "--tenant",
        "acme",
        "--email",
        "boss@acme.test",
        "--name",
        "admin",
        "--scope",
        "all",
    )
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("ap_")
    me = await client.get("/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200 and me.json()["role"] == "owner"
    assert "keys:manage" in me.json()["scopes"]
    # The owner can sign in with the password read from stdin.
    r2 = await client.post(
        "/v1/auth/login", json={"email": "boss@acme.test", "password": PASSWORD.strip()}
    )
    assert r2.status_code == 200

    r = cli("key", "list", "--tenant", "acme")
    assert r.returncode == 0, r.stderr
    key_id = me.json()["api_key_id"]
    assert key_id in r.stdout and key[:8] in r.stdout and key not in r.stdout

    r = cli("key", "revoke", "--tenant", "acme", key_id)
    assert r.returncode == 0 and "revoked" in r.stdout
    assert (await client.get("/me", headers={"Authorization": f"Bearer {key}"})).status_code == 401
    r = cli("key", "list", "--tenant", "acme", "--include-revoked")
    assert "revoked" in r.stdout


async def test_cli_bad_input_is_one_line_and_writes_nothing(cli, db: Database) -> None:
    cli("tenant", "create", "Taken", "--slug", "taken", "--owner-email", "t@taken.test")
    tenants, users = await _count(db, "tenants"), await _count(db, "users")
    cases = [
        (
            ("tenant", "create", "X", "--slug", "Bad Slug", "--owner-email", "x@x.test"),
            None,
            "slug",
        ),
        (
            ("tenant", "create", "X", "--slug", "taken", "--owner-email", "x@x.test"),
            None,
            "slug already exists",
        ),
        (
            ("tenant", "create", "X", "--slug", "fresh", "--owner-email", "nope"),
            None,
            "owner-email",
        ),
        (
            (
                "tenant",
                "create",
                "X",
                "--slug",
                "fresh",
                "--owner-email",
                "x@x.test",
                "--password-stdin",
            ),
            "short\n",
            "password must be at least 12",
        ),
        (("user", "create", "--tenant", "nope", "--email", "x@x.test"), None, "no tenant"),
        (
            ("user", "create", "--tenant", "taken", "--email", "x@x.test", "--role", "god"),
            None,
            "role",
        ),
        (
            ("key", "create", "--tenant", "taken", "--email", "x@x.test", "--name", "k"),
            None,
            "not a member",
        ),
        (
            (
                "key",
                "create",
                "--tenant",
                "taken",
                "--email",
                "t@taken.test",
                "--name",
                "k",
                "--scope",
                "bogus:scope",
            ),
            None,
            "unknown scopes",
        ),
    ]
    for args, stdin, expected in cases:
        r = cli(*args, input=stdin)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert expected in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert await _count(db, "tenants") == tenants
    assert await _count(db, "users") == users


def test_up_prints_how_to_create_the_first_owner(pg_server, settings) -> None:
    name = "t_identity_up_fresh"
    create_database(pg_server, name)
    env = cli_env(
        settings,
        AGENTPLANE_DATABASE_NAME=name,
        AGENTPLANE_PORT=str(free_port()),
        AGENTPLANE_LOG_FORMAT="text",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentplane", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    try:
        seen = ""
        deadline = time.monotonic() + 60
        while "agentplane key create" not in seen and time.monotonic() < deadline:
            try:
                seen += lines.get(timeout=0.5)
            except queue.Empty:
                if proc.poll() is not None:
                    break
        assert "no tenant yet" in seen, seen
        assert "agentplane tenant create" in seen and "agentplane key create" in seen
        # Every hint works when pasted as it is printed, and so does the one it leads to.
        hints = [line.strip() for line in seen.splitlines() if line.startswith("  agentplane")
                 or line.startswith("  echo")]
        made = paste(hints[0], env)
        assert made.returncode == 0, made.stderr
        follow = [line.removeprefix("next: ") for line in made.stdout.splitlines()
                  if line.startswith("next: ")]
        for hint in [hints[1], *follow]:
            done = paste(hint, env)
            assert done.returncode == 0, (hint, done.stderr)
            key = done.stdout.strip().splitlines()[-1]
            me = httpx.get(f"http://127.0.0.1:{env['AGENTPLANE_PORT']}/me",
                           headers={"Authorization": f"Bearer {key}"}, timeout=10)
            assert me.status_code == 200 and "runs:write" in me.json()["scopes"], me.text
    finally:
        stop_up(proc, signal.SIGINT)
        reader.join(timeout=10)
        proc.stdout.close()
        drop_database(pg_server, name)


def paste(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A hint run by a shell as a user would paste it, `agentplane` being this one."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(["bash", "-c", line], env={**env, "PATH": path},
                          capture_output=True, text=True, timeout=60, check=False)
