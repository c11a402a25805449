"""Screenshots of the dashboard's main pages, from the demo's data, for the README.

    python -m scripts.screenshots [--out docs/screenshots] [--keep]

A fresh home in a temporary directory: `agentplane demo` seeds the `demo` tenant and
runs its workflow, a user with a password joins it as owner, `agentplane up` serves
it, and Chromium (Debian's `chromium`, driven by Playwright) signs in and takes each
page. Nothing of the caller's own home is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic"]
EMAIL, PASSWORD = "you@demo.localhost", "a long passphrase for the demo"
PAGES = [
    ("overview", "/?days=7"),
    ("runs", "/runs"),
    ("run", None),  # the demo's run
    ("workflow", "/workflows/code-review"),
    ("usage", "/usage"),
    ("llm-calls", "/llm-calls"),
    ("queue", "/queue"),
    ("providers", "/providers"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agentplane(env: dict[str, str], *args: str, input: str | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", "agentplane", *args], env=env, input=input,
                          capture_output=True, text=True, check=False, timeout=300)
    if done.returncode:
        raise SystemExit(f"agentplane {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def shoot(url: str, out: Path, run_id: str | None) -> list[Path]:
    from playwright.sync_api import sync_playwright

    taken = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{url}/login")
        page.fill("input[name=email]", EMAIL)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/")
        for name, path in PAGES:
            page.goto(url + (path or f"/runs/{run_id}"))
            page.wait_for_load_state("networkidle")
            target = out / f"{name}.png"
            page.screenshot(path=str(target), full_page=False)
            taken.append(target)
        browser.close()
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--keep", action="store_true", help="leave the server running")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="agentplane-shots-") as home:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTPLANE_")}
        env.update(AGENTPLANE_HOME=home, AGENTPLANE_PORT=str(port), AGENTPLANE_TENANT="demo")
        shown = agentplane(env, "demo")
        run_id = re.search(r"run ([0-9a-f]{8})", shown).group(1)
        agentplane(env, "user", "create", "--email", EMAIL, "--role", "owner",
                   "--password-stdin", input=PASSWORD + "\n")
        for query in ("Summarise the review in one line.", "Which risks are left?"):
            agentplane(env, "run", query, "--agent", "kenji-005")
        listed = json.loads(agentplane(env, "runs", "list", "--json"))
        full = next(r["id"] for r in listed if r["id"].startswith(run_id))
        server = subprocess.Popen([sys.executable, "-m", "agentplane", "up"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            for path in shoot(url, args.out, full):
                print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
            if args.keep:
                print(f"serving on {url} (sign in as {EMAIL}); Ctrl-C stops it")
                server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
