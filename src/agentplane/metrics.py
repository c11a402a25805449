"""Prometheus metrics of this process: the counters the instrumented code moves (one
call each, cheap: it runs on hot paths), and what is read at scrape time (the queue and
the runs from the database, the connection pools).

Counters are per process (each process is scraped on its own); jobs and runs by status
come from the database, so they are the installation's whatever process answers.
Prometheus counters are floats: the cost counter is the exact decimal costs summed in
binary floating point, fine to graph and alert on but not an amount to bill by (the
usage records are that).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg_pool import AsyncConnectionPool

from agentplane import clock

log = logging.getLogger("agentplane.metrics")
CONTENT_TYPE = CONTENT_TYPE_LATEST
# A scrape must never hang the API: the database part gives up after this long (the
# statement on the server sooner), and the scrape answers without it.
DB_STATEMENT_TIMEOUT_MS = 1000
DB_SECONDS = 2.0
JOB_STATUSES = ("pending", "queued", "running", "paused", "completed", "failed", "stuck",
                "cancelled", "dead_letter")
RUN_STATUSES = ("pending", "running", "paused", "completed", "failed", "cancelled")
BUDGETS = ("session", "api_key", "tenant")

REGISTRY = CollectorRegistry()
for _default in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_default)

HTTP_REQUESTS = Counter(
    "agentplane_http_requests", "HTTP requests answered, by route template and status.",
    ["method", "route", "status"], registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "agentplane_http_request_duration_seconds",
    "Time to answer an HTTP request (a stream: how long it stayed open).",
    ["method", "route"], registry=REGISTRY,
)
JOBS_CLAIMED = Counter(
    "agentplane_jobs_claimed", "Jobs this process's workers claimed.", ["queue"],
    registry=REGISTRY,
)
TASKS = Counter(
    "agentplane_tasks", "Tasks this process ran, by what happened.", ["outcome"],
    registry=REGISTRY,
)
LLM_CALLS = Counter(
    "agentplane_llm_calls", "LLM calls made, by provider, model and status.",
    ["provider", "model", "status"], registry=REGISTRY,
)
LLM_TOKENS = Counter(
    "agentplane_llm_tokens", "Tokens of completed LLM calls; kind: prompt, completion, cached.",
    ["provider", "model", "kind"], registry=REGISTRY,
)
LLM_COST = Counter(
    "agentplane_llm_cost_usd", "Cost of completed LLM calls in USD (a float; unpriced: 0).",
    ["provider", "model"], registry=REGISTRY,
)
LLM_DURATION = Histogram(
    "agentplane_llm_call_duration_seconds", "Time an LLM call took, by provider and model.",
    ["provider", "model"], registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
BUDGET_REFUSALS = Counter(
    "agentplane_budget_refusals", "LLM calls refused by a token budget, by which budget.",
    ["budget"], registry=REGISTRY,
)
FANOUT_LAG = Histogram(
    "agentplane_event_fanout_lag_seconds",
    "From the writing transaction's now() (its start) to the events' fan-out to followers.",
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# -- what the instrumented code calls ---------------------------------------------------


def http_request(scope: dict[str, Any], status: int, started: float) -> None:
    # The route's template (/v1/runs/{run_id}), never the raw path: one series per route.
    route = getattr(scope.get("route"), "path", None) or "unmatched"
    method = scope["method"]
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)


def job_claimed(queue: str) -> None:
    JOBS_CLAIMED.labels(queue).inc()


def task_outcome(outcome: str) -> None:
    TASKS.labels(outcome).inc()


def llm_call(
    provider: str, model: str, status: str, result: Any = None, cost: Decimal | None = None,
    latency_ms: int = 0,
) -> None:
    LLM_CALLS.labels(provider, model, status).inc()
    LLM_DURATION.labels(provider, model).observe(latency_ms / 1000)
    if result is not None:
        LLM_TOKENS.labels(provider, model, "prompt").inc(result.prompt_tokens)
        LLM_TOKENS.labels(provider, model, "completion").inc(result.completion_tokens)
        LLM_TOKENS.labels(provider, model, "cached").inc(result.cached_tokens)
    if cost:
        LLM_COST.labels(provider, model).inc(float(cost))


def budget_refused(exc: Any) -> None:
    budget = exc.extra.get("budget")
    BUDGET_REFUSALS.labels(budget if budget in BUDGETS else "other").inc()


def fanout(created_at: datetime) -> None:
    FANOUT_LAG.observe(max((clock.now() - created_at).total_seconds(), 0.0))


# -- scrape time ----------------------------------------------------------------------------


class _Snapshot(Collector):
    """What the scrape read just before rendering (rendering is synchronous)."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return self.families


_SNAPSHOT = _Snapshot()
REGISTRY.register(_SNAPSHOT)


async def render(db: Any, pools: dict[str, AsyncConnectionPool]) -> bytes:
    """The exposition: this process's counters, the pools, the database's counts."""
    families = _pool_families(pools) + await _db_families(db)
    _SNAPSHOT.families = families
    try:
        return generate_latest(REGISTRY)
    finally:
        _SNAPSHOT.families = []


async def _db_families(db: Any) -> list[Metric]:
    up = GaugeMetricFamily(
        "agentplane_metrics_database_up",
        "1 if this scrape read the database counts (jobs, runs), 0 if it could not in time.",
    )
    jobs = GaugeMetricFamily("agentplane_jobs", "Jobs by queue and status (all tenants).",
                             labels=["queue", "status"])
    runs = GaugeMetricFamily("agentplane_runs", "Runs by status (all tenants).",
                             labels=["status"])
    try:
        async with asyncio.timeout(DB_SECONDS):
            job_rows, run_rows = await _counts(db)
    except Exception as exc:  # a busy or absent database must not fail the scrape
        log.warning("metrics: the database counts were not read: %s", exc)
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    by_queue: dict[str, dict[str, int]] = {}
    for row in job_rows:
        by_queue.setdefault(row["queue"], dict.fromkeys(JOB_STATUSES, 0))[row["status"]] = row["n"]
    for queue, counts in sorted(by_queue.items()):
        for status, n in counts.items():
            jobs.add_metric([queue, status], n)
    found = dict.fromkeys(RUN_STATUSES, 0) | {r["status"]: r["n"] for r in run_rows}
    for status, n in found.items():
        runs.add_metric([status], n)
    return [up, jobs, runs]


async def _counts(db: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    # As the owner, like the operator's other installation-wide reads (ops): the
    # application role sees one tenant's rows only.
    async with db.admin_connection() as conn:
        await conn.execute(f"SET LOCAL statement_timeout = {DB_STATEMENT_TIMEOUT_MS}")
        cur = await conn.execute(
            "SELECT queue, status::text AS status, count(*) AS n FROM jobs GROUP BY 1, 2"
        )
        job_rows = await cur.fetchall()
        cur = await conn.execute("SELECT status, count(*) AS n FROM runs GROUP BY 1")
        run_rows = await cur.fetchall()
    return job_rows, run_rows


def _pool_families(pools: dict[str, AsyncConnectionPool]) -> list[Metric]:
    gauges = {
        "pool_size": ("agentplane_db_pool_connections", "Connections open, in use or idle."),
        "pool_available": ("agentplane_db_pool_idle_connections", "Connections idle."),
        "pool_max": ("agentplane_db_pool_max_connections", "The pool's maximum size."),
        "requests_waiting": ("agentplane_db_pool_requests_waiting", "Callers waiting now."),
    }
    counters = {
        "requests_num": ("agentplane_db_pool_requests", "Connections asked of the pool."),
        "requests_errors": ("agentplane_db_pool_request_errors",
                            "Requests that failed (timed out waiting, pool closed)."),
    }
    out: list[Metric] = []
    stats = {name: pool.get_stats() for name, pool in pools.items()}
    for key, (name, doc) in gauges.items():
        family = GaugeMetricFamily(name, doc, labels=["pool"])
        for pool, s in stats.items():
            family.add_metric([pool], s.get(key, 0))
        out.append(family)
    for key, (name, doc) in counters.items():
        family = CounterMetricFamily(name, doc, labels=["pool"])
        for pool, s in stats.items():
            family.add_metric([pool], s.get(key, 0))
        out.append(family)
    return out
