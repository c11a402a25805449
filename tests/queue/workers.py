"""Helpers for queue tests: worker subprocesses, the effects tables, waiting on the database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg

from agentplane.db.pool import Database
from agentplane.queue import JobQueue

ROOT = Path(__file__).resolve().parents[2]

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS queue_effects (job_id uuid PRIMARY KEY, attempt int NOT NULL);
CREATE TABLE IF NOT EXISTS queue_runs (job_id uuid NOT NULL, attempt int NOT NULL);
CREATE TABLE IF NOT EXISTS queue_completions (job_id uuid NOT NULL, at timestamptz DEFAULT now());
CREATE OR REPLACE FUNCTION log_completion() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO queue_completions (job_id) VALUES (NEW.id); RETURN NULL; END $$;
DROP TRIGGER IF EXISTS jobs_log_completion ON jobs;
CREATE TRIGGER jobs_log_completion AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (NEW.status = 'completed' AND OLD.status <> 'completed')
    EXECUTE FUNCTION log_completion();
"""


def install_effects(owner_conninfo: str) -> None:
    with psycopg.connect(owner_conninfo, autocommit=True) as conn:
        conn.execute(EFFECTS_DDL)


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """`python -m agentplane worker` with the tests' handlers, as a real process."""
    environ = {**env, "PYTHONPATH": str(ROOT), "AGENTPLANE_LOG_FORMAT": "json",
               "AGENTPLANE_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-m", "agentplane", "worker", "--import", "tests.queue.handlers",
         "--poll-interval", "0.1", *args],
        env=environ, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)


def stop(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """SIGTERM, wait; returns stderr."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=timeout)
    return err


async def wait_until(
    check: Callable[[], Awaitable[bool]], within: float, what: str, step: float = 0.05
) -> None:
    """Poll a database condition (the state we wait for lives there) until true."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(step)


async def dead_letter(
    db: Database, tenant: uuid.UUID, type_: str, payload: dict, queue: str
) -> tuple[uuid.UUID, uuid.UUID]:
    """A job that failed for good, made through the worker functions (claim, then a
    permanent failure): returns (job id, dead letter id)."""
    job = await JobQueue(db).enqueue(type_, payload, tenant_id=tenant, queue=queue,
                                     allow_unknown=True)
    async with db.app_connection() as conn:
        cur = await conn.execute("SELECT attempts FROM queue_claim('w', %s, 1, 30, %s, 1, 16)",
                                 [[queue], uuid.uuid4()])
        attempt = (await cur.fetchone())["attempts"]
        cur = await conn.execute(
            "SELECT queue_finish('w', %s, %s, %s, 'permanent', 'bad payload', 'stack') AS s",
            [tenant, job, attempt])
        assert (await cur.fetchone())["s"] == "dead_letter"
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT id FROM dead_letters WHERE job_id = %s", [job])
        return job, (await cur.fetchone())["id"]
