"""Start `agentplane up` as a real process and wait for it to be ready."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx


def start_up(home: Path, port: int, **env: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AGENTPLANE_")}
    environ.update({"AGENTPLANE_HOME": str(home), "AGENTPLANE_PORT": str(port),
                    "AGENTPLANE_LOG_FORMAT": "json", **env})
    return subprocess.Popen(
        [sys.executable, "-m", "agentplane", "up"],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_ready(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"agentplane up exited {proc.returncode}: {proc.stderr.read()}")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
            if r.status_code == 200:
                return r
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("agentplane up did not become ready in time")


def stop_up(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> None:
    """Stop a server as an operator would (a signal), killing it if it hangs."""
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
