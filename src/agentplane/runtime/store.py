"""SQL of the runtime: agent executions, their transitions, tool executions, and the
task/run/agent bookkeeping written when a task starts and finishes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from agentplane.db.pool import Connection
from agentplane.llm.store import PROVIDER_COLUMNS


def _exec(conn: Connection, query: Any, params: Any = None) -> Any:
    """Prepared from the first use on a connection: these statements run on every task or
    call, and preparing them spares the server parsing and planning them each time."""
    return conn.execute(query, params, prepare=True)


async def _one(conn: Connection, query: str, params: Any = None) -> dict[str, Any] | None:
    cur = await _exec(conn, query, params)
    return await cur.fetchone()


async def send_lock(conn: Connection, run_id: UUID, task_id: UUID) -> Any:
    """LOCK on a pipelined connection, read later with read_lock: other statements can
    share its round trip."""
    return await _exec(conn, LOCK, {"run": run_id, "task": task_id})


async def read_lock(cur: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    row = await cur.fetchone()
    return row["run"], row["task"]


async def lock_and_contexts(
    conn: Connection, wanted: list[tuple[UUID, UUID]]
) -> list[tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any]]]:
    """For each (run, task): the run and the locked task and what a execution on the task
    needs, including the row of the provider its agent's model names (or the default
    one) under "provider" (None if there is none). One round trip on a pipelined
    connection: the runs are locked (by id) before the tasks (by id), the order every
    writer of a run takes."""
    ids = {"runs": [r for r, _ in wanted], "tasks": [t for _, t in wanted]}
    await _exec(conn, LOCK_MANY, ids)
    cur = await _exec(conn, CONTEXTS, ids)
    out = []
    for row in await cur.fetchall():
        provider = {c: row.pop(f"p.{c}") for c in _PROVIDER}
        row["provider"] = provider if provider["id"] is not None else None
        out.append((row.pop("run"), row.pop("task"), row))
    return out


# The transaction of a task that fails: the run with NO KEY UPDATE, then the task. It
# writes the run's counters and events later, and every writer of a run takes the run's
# row before its event counter (runtime_complete does the same, runtime_start takes a
# run's row before its counter too), so they cannot deadlock; cancel, pause and retry
# (FOR UPDATE on the run, then its tasks) wait for it, so run -> task holds everywhere.
#
# It also makes the transaction's later statements run their prepared generic plans: the
# runtime's statements are key lookups whose custom plans cost more to make each time
# (row-level security included) than to run, and they are written so that the generic
# plan is an index lookup whatever the statistics.
LOCK = """
WITH g AS MATERIALIZED (SELECT set_config('plan_cache_mode', 'force_generic_plan', true)),
     r AS (SELECT * FROM runs WHERE id = %(run)s FOR NO KEY UPDATE),
     t AS (SELECT * FROM tasks WHERE id = %(task)s
           AND run_id IS NOT DISTINCT FROM %(run)s FOR UPDATE)
SELECT (SELECT to_jsonb(r) FROM r) AS run, (SELECT to_jsonb(t) FROM t) AS task,
       (SELECT count(*) FROM g) AS generic
"""

# The start of many tasks: the runs (KEY SHARE: starts do not wait for each other or for
# finishes), then the tasks, each in id order (a select list is evaluated in order).
# CONTEXTS then reads them, after the locks.
LOCK_MANY = """
SELECT set_config('plan_cache_mode', 'force_generic_plan', true),
       (SELECT count(*) FROM (SELECT 1 FROM runs WHERE id = ANY(%(runs)s::uuid[])
                              ORDER BY id FOR KEY SHARE) r) AS runs,
       (SELECT count(*) FROM (SELECT 1 FROM tasks WHERE id = ANY(%(tasks)s::uuid[])
                              ORDER BY id FOR UPDATE) t) AS tasks
"""

_PROVIDER = [c.split(" AS ")[-1].strip() for c in PROVIDER_COLUMNS.split(",")] + [
    "api_key_ciphertext"
]
# The agent (its totals are not needed), upstream outputs, run data, an unfinished agent
# execution to resume, the task's answered input requests, the session's context, the
# team the agent may delegate to (when it has a tool that delegates), the tools the
# tenant's settings deny, and the provider its model names ("name/model", as
# llm.store.get_provider finds it), else the default one (llm.store.default_provider).
# A run's own model, when it has one, stands for its agents' models.
CONTEXT = f"""
        WITH task AS (SELECT agent_id, parent_task_id FROM tasks WHERE id = %(task)s),
        agent AS MATERIALIZED (SELECT a.* FROM agents a WHERE a.id = (SELECT agent_id FROM task)),
        m AS (
            SELECT used, CASE WHEN strpos(used, '/') BETWEEN 1 AND length(used) - 1
                              THEN split_part(used, '/', 1) END AS ref
            FROM (SELECT coalesce((SELECT r.model FROM runs r WHERE r.id = %(run)s), a.model)
                         AS used FROM agent a) a
        )
        SELECT {", ".join(f'p.{c} AS "p.{c}"' for c in _PROVIDER)},
          (SELECT to_jsonb(a) || jsonb_build_object('model', m.used) FROM agent a, m)
            AS agent,
          (SELECT coalesce(jsonb_agg(jsonb_build_object(
                      'node', u.node, 'output', u.output,
                      'agent', (SELECT ua.slug FROM agents ua WHERE ua.id = u.agent_id))
                    ORDER BY u.created_at, u.node), '[]')
             FROM (SELECT d.depends_on_task_id AS id FROM task_dependencies d
                   WHERE d.task_id = %(task)s
                   UNION ALL SELECT parent_task_id FROM task) up
             JOIN tasks u ON u.id = up.id) AS upstream,
          (SELECT coalesce(jsonb_object_agg(d.key, d.value), '{{}}')
             FROM (SELECT key, value FROM run_data WHERE run_id = %(run)s
                   ORDER BY created_at LIMIT 50) d) AS run_data,
          (SELECT to_jsonb(e) FROM agent_executions e WHERE e.task_id = %(task)s
             AND e.state NOT IN ('COMPLETED', 'FAILED')
             ORDER BY e.created_at DESC LIMIT 1) AS open_execution,
          (SELECT coalesce(jsonb_agg(to_jsonb(i) ORDER BY i.requested_at), '[]')
             FROM input_requests i
            WHERE i.run_id = %(run)s AND i.task_id = %(task)s AND i.status = 'answered')
            AS answers,
          (SELECT s.context FROM sessions s JOIN runs r ON r.session_id = s.id
            WHERE r.id = %(run)s) AS session_context,
          (SELECT coalesce(array_agg(slug ORDER BY slug), '{{}}') FROM (
             SELECT o.slug FROM agents o WHERE o.status = 'active'
                AND o.id <> (SELECT agent_id FROM task)
                AND (SELECT tools && ARRAY['spawn_subtask', 'handoff'] FROM agent)
                ORDER BY o.slug LIMIT 50) o) AS team,
          (SELECT coalesce(settings #> '{{tools,denied}}', '[]') FROM tenants
            WHERE id = app_current_tenant()) AS denied
        FROM (SELECT 1) one LEFT JOIN LATERAL (
            SELECT {PROVIDER_COLUMNS}, p.api_key_ciphertext FROM llm_providers p, m
            WHERE CASE WHEN m.ref IS NULL THEN p.enabled
                       ELSE p.name = m.ref OR p.id::text = m.ref END
            ORDER BY p.tenant_id IS NULL, CASE WHEN m.ref IS NULL THEN p.weight END DESC, p.name
            LIMIT 1) p ON true
"""

# CONTEXT for many (run, task) pairs, in their order, with the run and the task.
CONTEXTS = f"""
SELECT (SELECT to_jsonb(r) FROM runs r WHERE r.id = w.run) AS run,
       (SELECT CASE WHEN t.run_id = w.run THEN to_jsonb(t) END FROM tasks t
         WHERE t.id = w.task) AS task,
       c.*
FROM unnest(%(runs)s::uuid[], %(tasks)s::uuid[]) WITH ORDINALITY AS w(run, task, n)
CROSS JOIN LATERAL ({CONTEXT.replace("%(task)s", "w.task").replace("%(run)s", "w.run")}) c
ORDER BY w.n
"""


async def fail_open_executions(conn: Connection, task_id: UUID, reason: str) -> None:
    await _exec(
        conn,
        "UPDATE agent_executions SET state = 'FAILED', error_message = %s "
        "WHERE task_id = %s AND state NOT IN ('COMPLETED', 'FAILED')",
        [reason, task_id],
    )


EXECUTION_UPDATE = """
    UPDATE agent_executions SET state = %(state)s, output = %(output)s,
        messages = %(messages)s, prompt_tokens = %(prompt_tokens)s,
        completion_tokens = %(completion_tokens)s,
        tokens_used = %(prompt_tokens)s + %(completion_tokens)s, cost_usd = %(cost)s,
        llm_calls = %(llm_calls)s, duration_ms = %(duration_ms)s,
        error_message = %(error)s, metadata = metadata || %(metadata)s
    WHERE id = %(id)s
"""
TASK_RUNNING = """
    UPDATE tasks SET status = 'running', started_at = coalesce(started_at, now()),
        deadline_at = now() + make_interval(secs => coalesce(timeout_s, 300))
    WHERE id = %(task_id)s
"""
TRANSITIONS = """
    INSERT INTO agent_execution_transitions (tenant_id, agent_execution_id, seq, from_state,
                                             to_state, note, at)
    SELECT app_current_tenant(), %(id)s, * FROM unnest(
        %(t_seq)s::int[], %(t_from)s::text[], %(t_to)s::text[], %(t_note)s::text[],
        %(t_at)s::timestamptz[])
"""
TOOLS = (
    "id",
    "run_id",
    "task_id",
    "agent_execution_id",
    "agent_id",
    "tool_name",
    "call_id",
    "input_params",
    "output",
    "success",
    "error",
    "duration_ms",
    "created_at",
)
TOOL_EXECUTIONS = """
    INSERT INTO tool_executions (tenant_id, id, run_id, task_id, agent_execution_id,
                                 agent_id, tool_name, call_id, input_params, output,
                                 success, error, duration_ms, created_at)
    SELECT app_current_tenant(), * FROM unnest(
        %(x_id)s::uuid[], %(x_run_id)s::uuid[], %(x_task_id)s::uuid[],
        %(x_agent_execution_id)s::uuid[], %(x_agent_id)s::uuid[], %(x_tool_name)s::text[],
        %(x_call_id)s::text[], %(x_input_params)s::jsonb[], %(x_output)s::text[],
        %(x_success)s::bool[], %(x_error)s::text[], %(x_duration_ms)s::int[],
        %(x_created_at)s::timestamptz[])
"""


async def write_trace(
    conn: Connection,
    execution: dict[str, Any],
    transitions: list[tuple[int, str | None, str, str | None, Any]],
    tools: list[dict[str, Any]],
    *,
    starting: bool = False,
) -> None:
    """The agent execution updated, its new transitions and tool executions, and with
    `starting` the task marked running: one statement, one data-modifying CTE per table
    (the transitions' foreign key is checked at its end)."""
    parts = [EXECUTION_UPDATE]
    params = {
        **execution,
        "messages": Jsonb(execution["messages"]),
        "metadata": Jsonb(execution.get("metadata") or {}),
    }
    if starting:
        parts.append(TASK_RUNNING)
    if transitions:
        parts.append(TRANSITIONS)
        for key, col in zip(
            ("t_seq", "t_from", "t_to", "t_note", "t_at"),
            zip(*transitions, strict=True),
            strict=True,
        ):
            params[key] = list(col)
    if tools:
        parts.append(TOOL_EXECUTIONS)
        for c in TOOLS:
            params[f"x_{c}"] = [Jsonb(r[c]) if c == "input_params" else r[c] for r in tools]
    *ctes, last = parts
    query = "".join(f"{'WITH' if i == 0 else ','} w{i} AS ({q})" for i, q in enumerate(ctes))
    await _exec(conn, query + last, params)


async def fail_task(
    conn: Connection, task_id: UUID, error: str, usage: dict[str, Any], retry: bool
) -> dict[str, Any]:
    """Back to queued under a new dispatch when retrying, else failed."""
    return await _one(
        conn,
        """
        UPDATE tasks SET error = %(error)s,
            status = CASE WHEN %(retry)s THEN 'queued' ELSE 'failed' END,
            retry_count = retry_count + %(retry)s::int, dispatch = dispatch + %(retry)s::int,
            completed_at = CASE WHEN %(retry)s THEN NULL ELSE now() END,
            prompt_tokens = prompt_tokens + %(prompt)s,
            completion_tokens = completion_tokens + %(completion)s,
            tokens_used = tokens_used + %(prompt)s + %(completion)s, cost_usd = cost_usd + %(cost)s,
            duration_ms = (extract(epoch FROM now() - started_at) * 1000)::int
        WHERE id = %(id)s RETURNING id, run_id, dispatch, retry_count, retry_delay_s
        """,
        {"id": task_id, "error": error, "retry": retry, **usage},
    )


async def suspend_task(conn: Connection, task_id: UUID) -> None:
    await _exec(conn, "UPDATE tasks SET status = 'waiting' WHERE id = %s", [task_id])


async def add_to_run(
    conn: Connection,
    run_id: UUID,
    *,
    completed: int = 0,
    failed: int = 0,
    tasks: int = 0,
    tools: int = 0,
    usage: dict[str, Any],
) -> dict[str, Any]:
    return await _one(
        conn,
        """
        UPDATE runs SET completed_tasks = completed_tasks + %(completed)s,
            failed_tasks = failed_tasks + %(failed)s, total_tasks = total_tasks + %(tasks)s,
            tools_invoked = tools_invoked + %(tools)s,
            prompt_tokens = prompt_tokens + %(prompt)s,
            completion_tokens = completion_tokens + %(completion)s,
            total_tokens = total_tokens + %(prompt)s + %(completion)s,
            total_cost_usd = total_cost_usd + %(cost)s
        WHERE id = %(id)s
        RETURNING status, total_tasks, completed_tasks, failed_tasks, metadata
        """,
        {
            "id": run_id,
            "completed": completed,
            "failed": failed,
            "tasks": tasks,
            "tools": tools,
            **usage,
        },
    )


async def fail_run(conn: Connection, run_id: UUID, error: str) -> None:
    await _exec(
        conn,
        """
        UPDATE runs SET status = 'failed', error = %(error)s, completed_at = now(),
            duration_ms = (extract(epoch FROM now() - coalesce(started_at, created_at))
                           * 1000)::int,
            agents_used = (SELECT count(DISTINCT agent_id) FROM tasks WHERE run_id = %(id)s)
        WHERE id = %(id)s
        """,
        {"id": run_id, "error": error},
    )


async def add_agent_delta(
    conn: Connection, agent_id: UUID, *, ok: bool, tokens: int, cost: Decimal, latency_ms: int
) -> None:
    """What a finished task adds to its agent's totals: a row of its own, so tasks of one
    agent never wait on each other (fold_agent_totals moves it into the agent's row)."""
    await _exec(
        conn,
        """
        INSERT INTO agent_total_deltas (tenant_id, agent_id, completed, failed, tokens,
                                        cost_usd, latency_ms)
        VALUES (app_current_tenant(), %(id)s, %(ok)s::int, (NOT %(ok)s)::int, %(tokens)s,
                %(cost)s, %(latency)s)
        """,
        {"id": agent_id, "ok": ok, "tokens": tokens, "cost": cost, "latency": max(latency_ms, 0)},
    )


async def fold_agent_totals(conn: Connection) -> None:
    """Moves the tenant's committed deltas into their agents' rows (agents_fold_totals,
    agents/sql/totals.sql)."""
    await _exec(conn, "SELECT agents_fold_totals()")


async def agent_by_slug(conn: Connection, slug: str) -> dict[str, Any] | None:
    return await _one(conn, "SELECT id, slug, status FROM agents WHERE slug = %s", [slug])


async def insert_subtask(conn: Connection, v: dict[str, Any]) -> dict[str, Any]:
    return await _one(
        conn,
        """
        INSERT INTO tasks (tenant_id, run_id, node, agent_id, parent_task_id, status,
                           instruction, dispatch, timeout_s)
        VALUES (app_current_tenant(), %(run_id)s,
                %(node)s || '.' || (SELECT count(*) + 1 FROM tasks
                                    WHERE parent_task_id = %(parent)s),
                %(agent_id)s, %(parent)s, 'queued', %(instruction)s, 1, %(timeout_s)s)
        RETURNING id, run_id, dispatch, node
        """,
        v,
    )


async def send_complete_batch(conn: Connection, batch: Jsonb) -> Any:
    """runtime_complete (runtime/sql/batches.sql) on a batch, sent on a pipelined connection
    without waiting: read it with read_complete_batch once the transaction commits."""
    return await _exec(conn, "SELECT runtime_complete(%s) AS done", [batch])


async def read_complete_batch(cur: Any) -> dict[str, Any]:
    """{"applied": the ids of the tasks the batch completed}."""
    return (await cur.fetchone())["done"]


async def start_batch(conn: Connection, batch: Jsonb) -> None:
    """runtime_start (runtime/sql/batches.sql) on a batch given as JSON."""
    await _exec(conn, "SELECT runtime_start(%s)", [batch])
