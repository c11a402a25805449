"""`agentplane up` as a user runs it: a fresh home, a real process, real signals."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest

from agentplane.db.embedded import EmbeddedServer
from tests.conftest import free_port
from tests.support.processes import start_up, wait_ready


@pytest.fixture
def home(tmp_path: Path):
    home = tmp_path / "home"
    yield home
    EmbeddedServer(home).stop()  # whatever a failed test left running


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_up_serves_then_shuts_down_cleanly(home: Path, sig: signal.Signals) -> None:
    port = free_port()
    proc = start_up(home, port)
    try:
        ready = wait_ready(port, proc)
        assert ready.json()["status"] == "ready"
        assert (home / "pgdata" / "PG_VERSION").exists()
        r = httpx.get(f"http://127.0.0.1:{port}/health", headers={"X-Request-ID": "req-42"})
        assert r.headers["x-request-id"] == "req-42"
    finally:
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert not EmbeddedServer(home).is_running()
    # Logs are JSON lines when not on a terminal, carrying the request id.
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    access = [e for e in entries if e.get("request_id") == "req-42"]
    assert access and access[0]["status"] == 200
    assert "Traceback" not in stderr


def test_server_is_shared_and_stops_with_its_last_user(home: Path) -> None:
    first_port, second_port = free_port(), free_port()
    first = start_up(home, first_port)
    wait_ready(first_port, first)
    second = start_up(home, second_port)
    try:
        wait_ready(second_port, second)
        server = EmbeddedServer(home)
        pid = server.postmaster_pid()

        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
        assert first.returncode == 0
        # The other process still uses the server: it keeps running and serving.
        assert server.is_running() and server.postmaster_pid() == pid
        assert httpx.get(f"http://127.0.0.1:{second_port}/ready").status_code == 200
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
    assert second.returncode == 0
    assert not EmbeddedServer(home).is_running()


def test_a_killed_user_does_not_keep_the_server_alive(home: Path) -> None:
    port = free_port()
    victim = start_up(home, port)
    wait_ready(port, victim)
    victim.kill()
    victim.communicate(timeout=30)
    # The next process finds the server running, prunes the dead handle, and is the last user.
    port2 = free_port()
    survivor = start_up(home, port2)
    wait_ready(port2, survivor)
    survivor.send_signal(signal.SIGTERM)
    survivor.communicate(timeout=30)
    assert survivor.returncode == 0
    assert not EmbeddedServer(home).is_running()
