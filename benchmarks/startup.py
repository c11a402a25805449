"""Time from `agentplane up` to `/ready` answering 200.

cold: a new, empty AGENTPLANE_HOME (initdb, server start, all migrations).
warm: an existing home whose server is stopped (server start, migration check).
Median of 5 runs each; prints a table.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

RUNS = 5
GOAL_WARM_S = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_ready(home: Path) -> float:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTPLANE_")}
    env.update({"AGENTPLANE_HOME": str(home), "AGENTPLANE_PORT": str(port),
                "AGENTPLANE_LOG_LEVEL": "WARNING"})
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "agentplane", "up"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with httpx.Client(timeout=1) as client:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"agentplane up failed: {proc.stderr.read()}")
                try:
                    if client.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="agentplane-bench-"))
    try:
        cold = [time_to_ready(root / f"cold-{i}") for i in range(RUNS)]
        warm_home = root / "warm"
        time_to_ready(warm_home)  # create it
        warm = [time_to_ready(warm_home) for _ in range(RUNS)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [("cold (empty home)", cold), ("warm (existing home)", warm)]
    print(f"agentplane up -> /ready 200, {RUNS} runs each")
    print(f"{'start':<22}{'median s':>10}{'min s':>9}{'max s':>9}")
    for name, values in rows:
        print(f"{name:<22}{statistics.median(values):>10.2f}{min(values):>9.2f}"
              f"{max(values):>9.2f}")
    verdict = "met" if statistics.median(warm) < GOAL_WARM_S else "NOT met"
    print(f"goal: warm start under {GOAL_WARM_S:.0f} s -> {verdict}")


if __name__ == "__main__":
    main()
