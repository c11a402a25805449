"""`agentplane demo`: the seeded team runs the code-review workflow in-process and prints
its trace; the hint it prints shows the run again."""

from __future__ import annotations

import json
import re

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def test_demo_runs_the_code_review_workflow_and_prints_the_trace(cli):
    r = cli("demo", timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    out = r.stdout
    for name in ("Akira - Code Review Master", "Yuki - Test Engineering Specialist"):
        assert name in out
    assert "status      completed" in out
    assert "5 completed, 0 failed, 5 in all" in out  # four nodes and Akira's review handoff
    assert "IDLE → ANALYZING → PLANNING → RETRIEVING → EXECUTING" in out
    assert "tool handoff ✓" in out and "review: kenji-005 → akira-001" in out
    assert "created the tenant demo" in out
    hint = re.search(r"See it again with: (agentplane runs show .*)", out).group(1).strip()
    args = hint.split()[1:]
    assert args[:2] == ["runs", "show"] and re.fullmatch(UUID_RE, args[2])
    again = cli(*args)  # as printed: the hint names its tenant
    assert again.returncode == 0 and "5 completed, 0 failed" in again.stdout, again.stderr
    run_id = args[2]

    shown = cli("runs", "show", run_id, "--json", AGENTPLANE_TENANT="demo")
    assert shown.returncode == 0, shown.stderr
    tree = json.loads(shown.stdout)
    assert tree["run"]["status"] == "completed"
    assert {t["node"] for t in tree["tasks"]} >= {"review", "tests", "security", "synthesis"}
    assert tree["interactions"][0]["interaction_type"] == "review"

    listed = cli("runs", "list", AGENTPLANE_TENANT="demo")
    assert listed.returncode == 0 and listed.stdout.count("code-review") == 1
