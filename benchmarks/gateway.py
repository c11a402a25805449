"""What the gateway adds to an LLM call: the same chat completions sent to a local
upstream directly, through agentplane's gateway (recording and budgets on), and through
the LiteLLM proxy, side by side, plain and streamed, at 1, 16 and 64 clients.

The upstream (a process of its own) speaks OpenAI's protocol and answers at once, so
what differs is the overhead: requests/s, the gateway's latency less the upstream's
(p50 and p99), and the server's CPU time per request (for agentplane, its process and
its PostgreSQL's). `agentplane up` runs on a temporary home with a tenant whose monthly
token limit, a key with a token budget, and a provider at the upstream (priced: the
model is gpt-4o-mini). The LiteLLM proxy is started as its docs say, with a config
naming the upstream and no database; it is skipped when `litellm` is not installed
(`pip install 'litellm[proxy]'`, or LITELLM=path/to/litellm).

    python -m benchmarks.gateway [--seconds 3] [--clients 1,16,64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello in five words."}]
KEY = "sk-bench-upstream"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the upstream ----------------------------------------------------------------------------


def _answers() -> tuple[bytes, bytes]:
    usage = {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}
    plain = json.dumps({
        "id": "chatcmpl-up", "object": "chat.completion", "created": 1, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant",
                                             "content": "Hello there, how are you?"},
                     "finish_reason": "stop"}],
        "usage": usage,
    }).encode()
    base = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": w}}]}
               for w in ("Hello ", "there, ", "how ", "are ", "you?")]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({**base, "choices": [], "usage": usage})
    stream = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return plain, stream + b"data: [DONE]\n\n"


def upstream(port: int) -> None:
    """An OpenAI-protocol server that answers at once (keep-alive, HTTP/1.1)."""
    plain, stream = _answers()

    def response(body: bytes, kind: bytes) -> bytes:
        return (b"HTTP/1.1 200 OK\r\ncontent-type: " + kind + b"\r\ncontent-length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)

    answers = {False: response(plain, b"application/json"),
               True: response(stream, b"text/event-stream")}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                streamed = b'"stream": true' in body or b'"stream":true' in body
                writer.write(answers[streamed])
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    _fast_loop()
    asyncio.run(main())


def _fast_loop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass


# -- the load --------------------------------------------------------------------------------


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    length, chunked = None, False
    for line in head.split(b"\r\n"):
        low = line.lower()
        if low.startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
        elif low.startswith(b"transfer-encoding:") and b"chunked" in low:
            chunked = True
    if length is not None:
        return await reader.readexactly(length)
    assert chunked, head
    out = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            return out
        out += data[:-2]


async def _client(port: int, request: bytes, stop_at: float, latencies: list[float],
                  errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            body = await _read_body(reader, head)
            status = int(head.split(b" ", 2)[1])
            if status != 200 or (b"[DONE]" not in body and b'"choices"' not in body):
                errors.append(f"{status}: {body[:200]!r}")
                return
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


def run_load(port: int, path: str, key: str, stream: bool, clients: int,
             seconds: float) -> tuple[list[float], list[str]]:
    _fast_loop()
    body = json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": 16, "stream": stream,
                       **({"stream_options": {"include_usage": True}} if stream else {})})
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n{body}"
               ).encode()
    latencies: list[float] = []
    errors: list[str] = []

    async def main() -> None:
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(*(_client(port, request, stop_at, latencies, errors)
                               for _ in range(clients)))

    asyncio.run(main())
    return latencies, errors[:3]


# -- the servers -----------------------------------------------------------------------------


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited before it was ready")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not answer in time")


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on port {port}") from None
            time.sleep(0.05)


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    r = subprocess.run([sys.executable, "-m", "agentplane", *args], env=env, input=stdin,
                       capture_output=True, text=True, check=False, timeout=120)
    if r.returncode != 0:
        raise SystemExit(f"agentplane {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def start_agentplane(home: Path, upstream_url: str) -> tuple[subprocess.Popen, int, str, dict]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTPLANE_")}
    env.update({"AGENTPLANE_HOME": str(home), "AGENTPLANE_PORT": str(port),
                "AGENTPLANE_LOG_LEVEL": "WARNING"})
    proc = subprocess.Popen([sys.executable, "-m", "agentplane", "up"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/ready", proc)
    cli(env, "tenant", "create", "Bench", "--slug", "bench", "--owner-email",
        "bench@example.com", "--rate-limit-per-hour", "100000000",
        "--token-limit", "100000000000")
    key = cli(env, "key", "create", "--tenant", "bench", "--email", "bench@example.com",
              "--name", "app", "--scope", "llm:invoke",
              "--rate-limit-per-hour", "10000000").split()[-1]
    admin = cli(env, "key", "create", "--tenant", "bench", "--email", "bench@example.com",
                "--name", "admin", "--scope", "all").split()[-1]
    cli(env, "providers", "add", "--tenant", "bench", "--name", "up", "--type",
        "openai_compatible", "--base-url", upstream_url + "/v1", "--model", MODEL,
        "--api-key-stdin", stdin=KEY)
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}",
                       headers={"Authorization": f"Bearer {admin}"})
    key_id = next(k["id"] for k in api.get("/v1/api-keys").json() if k["name"] == "app")
    api.put(f"/v1/api-keys/{key_id}/budget", json={"token_budget": 10**12}).raise_for_status()
    return proc, port, key, env


def start_litellm(home: Path, upstream_url: str) -> tuple[subprocess.Popen, int] | None:
    binary = os.environ.get("LITELLM") or shutil.which("litellm")
    if not binary:
        return None
    config = home / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream_url}/v1\n"
        f"      api_key: {KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    port = free_port()
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": "sk-bench-master"}
    proc = subprocess.Popen([binary, "--config", str(config), "--port", str(port),
                             "--host", "127.0.0.1", "--num_workers", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", proc)
    return proc, port


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def server_pids(proc: subprocess.Popen, home: Path | None) -> list[int]:
    """The server process, its children, and (agentplane) its PostgreSQL's processes."""
    pids = {proc.pid}
    with contextlib.suppress(psutil.Error):
        pids |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
    if home is not None:
        for p in psutil.process_iter(["cmdline", "pid"]):
            if "postgres" in " ".join(p.info["cmdline"] or []) and str(home) in " ".join(
                p.info["cmdline"] or []):
                pids.add(p.info["pid"])
                with contextlib.suppress(psutil.Error):
                    pids |= {c.pid for c in p.children(recursive=True)}
    return sorted(pids)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", default="1,16,64")
    args = parser.parse_args()
    clients = [int(c) for c in args.clients.split(",")]

    up_port = free_port()
    ctx = multiprocessing.get_context("spawn")
    up = ctx.Process(target=upstream, args=(up_port,), daemon=True)
    up.start()
    wait_port(up_port)
    upstream_url = f"http://127.0.0.1:{up_port}"
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="agentplane-bench-") as tmp:
        home = Path(tmp)
        try:
            ap, ap_port, key, _ = start_agentplane(home / "ap", upstream_url)
            procs.append(ap)
            systems: dict[str, tuple[int, str, str, list[int]]] = {
                "direct": (up_port, "/v1/chat/completions", KEY, [up.pid]),
                "agentplane": (ap_port, "/v1/chat/completions", key,
                               server_pids(ap, home / "ap")),
            }
            lite = start_litellm(home, upstream_url)
            if lite is not None:
                procs.append(lite[0])
                systems["litellm"] = (lite[1], "/v1/chat/completions", "sk-bench-master",
                                      server_pids(lite[0], None))
            results: dict[tuple[str, bool, int], dict] = {}
            with ctx.Pool(1) as pool:
                for name, (port, path, k, _) in systems.items():  # warm-up
                    for stream in (False, True):
                        _, errors = pool.apply(run_load, (port, path, k, stream, 4, 1.0))
                        if errors:
                            raise SystemExit(f"{name} answered {errors[0]}")
                for stream in (False, True):
                    for n in clients:
                        for name, (port, path, k, pids) in systems.items():
                            before = tree_cpu(pids)
                            lat, errors = pool.apply(
                                run_load, (port, path, k, stream, n, args.seconds))
                            cpu = tree_cpu(pids) - before
                            results[(name, stream, n)] = {
                                "rps": len(lat) / args.seconds, "p50": pct(lat, 0.5),
                                "p99": pct(lat, 0.99), "cpu_ms": cpu * 1000 / max(1, len(lat)),
                                "errors": errors,
                            }
        finally:
            for p in procs:
                p.terminate()
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
            up.terminate()

    print(f"\n{args.seconds:g} s per cell, {os.cpu_count()} CPUs shared by the upstream, the "
          "server, its PostgreSQL and the load generator. Overhead: the system's latency "
          "less the upstream's, at the same percentile.\n")
    print(f"{'system':<12}{'mode':<10}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'+p50 ms':>9}{'+p99 ms':>9}{'cpu ms/req':>12}")
    for stream in (False, True):
        for n in clients:
            base = results[("direct", stream, n)]
            for name in systems:
                r = results[(name, stream, n)]
                extra = ("", "") if name == "direct" else (
                    f"{r['p50'] - base['p50']:.2f}", f"{r['p99'] - base['p99']:.2f}")
                print(f"{name:<12}{'stream' if stream else 'plain':<10}{n:>8}{r['rps']:>10.0f}"
                      f"{r['p50']:>9.2f}{r['p99']:>9.2f}{extra[0]:>9}{extra[1]:>9}"
                      f"{r['cpu_ms']:>12.2f}" + (f"  errors: {r['errors'][0]}"
                                                 if r["errors"] else ""))
    if "litellm" in systems:
        print()
        for stream in (False, True):
            for n in clients:
                ratio = results[("agentplane", stream, n)]["rps"] / max(
                    1e-9, results[("litellm", stream, n)]["rps"])
                print(f"agentplane / litellm req/s, {'stream' if stream else 'plain'}, "
                      f"{n} clients: {ratio:.2f}x")
    else:
        print("\nLiteLLM proxy not measured: `litellm` not found (pip install "
              "'litellm[proxy]', or LITELLM=path/to/litellm)")


if __name__ == "__main__":
    main()
