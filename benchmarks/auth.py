"""The cost of authentication and tenant scoping: authenticated `GET /me` (API key)
against unauthenticated `GET /health`, side by side, on a live server.

Starts `agentplane up` on a temporary home (embedded PostgreSQL) and a free port,
creates a tenant and a key with the CLI, then runs N concurrent keep-alive clients
against each endpoint in alternating rounds and prints requests per second, p50 and
p99 latency, and the ratio. Goal: /me at >= 70% of /health, p99 < 20 ms.

The load generator runs in a process of its own (uvloop when installed) and the CPU
time of the server process and of the load generator is reported per request, so
that a client-bound or machine-bound run shows as such.

    python -m benchmarks.auth [--clients 16] [--seconds 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(env: dict[str, str], *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "agentplane", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if r.returncode != 0:
        raise SystemExit(f"agentplane {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


async def one_client(port: int, request: bytes, stop_at: float, latencies: list[float]) -> None:
    """A keep-alive HTTP/1.1 client kept minimal so that it measures the server."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            if status != 200:
                raise SystemExit(f"unexpected status {status}: {head!r}")
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()
        await writer.wait_closed()


async def measure(
    port: int, path: str, headers: dict[str, str], clients: int, seconds: float
) -> list[float]:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    await asyncio.gather(*(one_client(port, request, stop_at, latencies) for _ in range(clients)))
    return latencies


def run_load(
    port: int, path: str, headers: dict[str, str], clients: int, seconds: float
) -> tuple[list[float], float]:
    """In a child process: the latencies, and the CPU seconds the client itself used."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    started = time.process_time()
    latencies = asyncio.run(measure(port, path, headers, clients, seconds))
    return latencies, time.process_time() - started


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux), 0 where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("agentplane up exited before it was ready")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit("agentplane up did not become ready in time")


def summary(latencies: list[float], seconds: float) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return len(ordered) / seconds, statistics.median(ordered) * 1000, p99 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="agentplane-bench-") as home:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTPLANE_")}
        env.update(
            {
                "AGENTPLANE_HOME": str(Path(home)),
                "AGENTPLANE_PORT": str(port),
                "AGENTPLANE_LOG_LEVEL": "WARNING",  # measure auth, not the access log
            }
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentplane", "up"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(port, proc)
            cli(
                env,
                "tenant",
                "create",
                "Bench",
                "--slug",
                "bench",
                "--owner-email",
                "bench@example.com",
                "--rate-limit-per-hour",
                "100000000",
            )
            key = cli(
                env,
                "key",
                "create",
                "--tenant",
                "bench",
                "--email",
                "bench@example.com",
                "--name",
                "bench",
                "--rate-limit-per-hour",
                "10000000",
            ).split()[-1]
            targets = {
                "GET /health": ("/health", {}),
                "GET /me (API key)": ("/me", {"Authorization": f"Bearer {key}"}),
            }
            results: dict[str, list[float]] = {name: [] for name in targets}
            server_cpu = dict.fromkeys(targets, 0.0)
            client_cpu = dict.fromkeys(targets, 0.0)
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(1) as pool:
                for path, headers in targets.values():  # warm-up: pools, prepared plans
                    pool.apply(run_load, (port, path, headers, args.clients, 1.0))
                for _ in range(args.rounds):  # alternate, so drift hits both alike
                    for name, (path, headers) in targets.items():
                        before = cpu_seconds(proc.pid)
                        latencies, used = pool.apply(
                            run_load, (port, path, headers, args.clients, args.seconds)
                        )
                        server_cpu[name] += cpu_seconds(proc.pid) - before
                        client_cpu[name] += used
                        results[name] += latencies
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    total = args.seconds * args.rounds
    rows = {name: summary(lat, total) for name, lat in results.items()}
    print(
        f"\n{args.clients} concurrent keep-alive clients, {args.rounds} x {args.seconds:g} s"
        f" per endpoint, {os.cpu_count()} CPUs (server, PostgreSQL and clients share them)\n"
    )
    print(
        f"{'endpoint':<20} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'server CPU ms/req':>18} {'client CPU ms/req':>18}"
    )
    for name, (rps, p50, p99) in rows.items():
        n = max(1, len(results[name]))
        print(
            f"{name:<20} {rps:>9.0f} {p50:>8.2f} {p99:>8.2f}"
            f" {server_cpu[name] * 1000 / n:>18.3f} {client_cpu[name] * 1000 / n:>18.3f}"
        )
    health, me = rows["GET /health"], rows["GET /me (API key)"]
    ratio = me[0] / health[0]
    print(
        f"\n/me throughput = {ratio:.0%} of /health (goal >= 70%);"
        f" /me p99 {me[2]:.1f} ms (goal < 20 ms)"
    )


if __name__ == "__main__":
    main()
