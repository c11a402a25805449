"""SQL of the runtime: agent executions, their transitions, tool executions, and the
task/run/agent bookkeeping written when a task starts and finishes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from agentplane.db.pool import Connection


async def _one(conn: Connection, query: str, params: Any = None) -> dict[str, Any] | None:
    cur = await conn.execute(query, params)
    return await cur.fetchone()


async def send_lock(conn: Connection, run_id: UUID, task_id: UUID) -> Any:
    """lock_run_and_task on a pipelined connection, read later with read_lock: other
    statements can share its round trip."""
    return await conn.execute(LOCK, {"run": run_id, "task": task_id})


async def read_lock(cur: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    row = await cur.fetchone()
    return row["run"], row["task"]


async def lock_and_context(
    conn: Connection, run_id: UUID, task_id: UUID
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any]]:
    """The locked run and task and what a turn on the task needs, in one round trip on
    a pipelined connection (both statements are sent before either result is read)."""
    lock = await conn.execute(LOCK, {"run": run_id, "task": task_id})
    context = await conn.execute(CONTEXT, {"task": task_id, "run": run_id})
    row = await lock.fetchone()
    return row["run"], row["task"], await context.fetchone()


LOCK = """
WITH r AS (SELECT * FROM runs WHERE id = %(run)s FOR UPDATE),
     t AS (SELECT * FROM tasks WHERE id = %(task)s AND run_id = %(run)s FOR UPDATE)
SELECT (SELECT to_jsonb(r) FROM r) AS run, (SELECT to_jsonb(t) FROM t) AS task
"""

# The agent (its totals are not needed), upstream outputs, run data, an unfinished agent
# execution to resume, and the task's answered input requests.
CONTEXT = """
        WITH task AS (SELECT agent_id, parent_task_id FROM tasks WHERE id = %(task)s)
        SELECT
          (SELECT to_jsonb(a) FROM agents a WHERE a.id = (SELECT agent_id FROM task)) AS agent,
          (SELECT coalesce(jsonb_agg(jsonb_build_object('node', u.node, 'output', u.output,
                                                        'agent', ua.slug)), '[]')
             FROM tasks u JOIN agents ua ON ua.tenant_id = u.tenant_id AND ua.id = u.agent_id
            WHERE u.id IN (SELECT d.depends_on_task_id FROM task_dependencies d
                           WHERE d.task_id = %(task)s)
               OR u.id = (SELECT parent_task_id FROM task)) AS upstream,
          (SELECT coalesce(jsonb_object_agg(d.key, d.value), '{}')
             FROM (SELECT key, value FROM run_data WHERE run_id = %(run)s
                   ORDER BY created_at LIMIT 50) d) AS run_data,
          (SELECT to_jsonb(e) FROM agent_executions e WHERE e.task_id = %(task)s
             AND e.state NOT IN ('COMPLETED', 'FAILED')
             ORDER BY e.created_at DESC LIMIT 1) AS open_execution,
          (SELECT coalesce(jsonb_agg(to_jsonb(i) ORDER BY i.requested_at), '[]')
             FROM input_requests i WHERE i.task_id = %(task)s AND i.status = 'answered')
            AS answers,
          (SELECT s.context FROM sessions s JOIN runs r ON r.session_id = s.id
            WHERE r.id = %(run)s) AS session_context
"""


async def mark_task_running(conn: Connection, task_id: UUID) -> None:
    await conn.execute(
        "UPDATE tasks SET status = 'running', started_at = coalesce(started_at, now()), "
        "deadline_at = now() + make_interval(secs => coalesce(timeout_s, 300)) WHERE id = %s",
        [task_id],
    )


async def mark_run_started(conn: Connection, run_id: UUID) -> None:
    await conn.execute(
        "UPDATE runs SET status = 'running', started_at = coalesce(started_at, now()) "
        "WHERE id = %s",
        [run_id],
    )


async def fail_open_executions(conn: Connection, task_id: UUID, reason: str) -> None:
    await conn.execute(
        "UPDATE agent_executions SET state = 'FAILED', error_message = %s "
        "WHERE task_id = %s AND state NOT IN ('COMPLETED', 'FAILED')",
        [reason, task_id],
    )


async def insert_execution(conn: Connection, v: dict[str, Any]) -> None:
    await conn.execute(
        """
        INSERT INTO agent_executions (tenant_id, id, run_id, task_id, agent_id, attempt, state,
                                      strategy, model_used, input, messages, metadata)
        VALUES (app_current_tenant(), %(id)s, %(run_id)s, %(task_id)s, %(agent_id)s, %(attempt)s,
                %(state)s, %(strategy)s, %(model)s, %(input)s, %(messages)s, %(metadata)s)
        """,
        {**v, "messages": Jsonb(v["messages"]), "metadata": Jsonb(v["metadata"])},
    )


async def save_execution(conn: Connection, v: dict[str, Any]) -> None:
    await conn.execute(
        """
        UPDATE agent_executions SET state = %(state)s, output = %(output)s,
            messages = %(messages)s, prompt_tokens = %(prompt_tokens)s,
            completion_tokens = %(completion_tokens)s,
            tokens_used = %(prompt_tokens)s + %(completion_tokens)s, cost_usd = %(cost)s,
            llm_calls = %(llm_calls)s, duration_ms = %(duration_ms)s,
            error_message = %(error)s, metadata = metadata || %(metadata)s
        WHERE id = %(id)s
        """,
        {**v, "messages": Jsonb(v["messages"]), "metadata": Jsonb(v.get("metadata") or {})},
    )


async def insert_transitions(
    conn: Connection, execution_id: UUID, rows: list[tuple[int, str | None, str, str | None, Any]]
) -> None:
    if not rows:
        return
    await conn.execute(
        """
        INSERT INTO agent_execution_transitions (tenant_id, agent_execution_id, seq, from_state,
                                                 to_state, note, at)
        SELECT app_current_tenant(), %s, * FROM unnest(%s::int[], %s::text[], %s::text[],
                                                       %s::text[], %s::timestamptz[])
        """,
        [execution_id, *(list(col) for col in zip(*rows, strict=True))],
    )


async def insert_tool_executions(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    cols = (
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
    await conn.execute(
        """
        INSERT INTO tool_executions (tenant_id, id, run_id, task_id, agent_execution_id,
                                     agent_id, tool_name, call_id, input_params, output,
                                     success, error, duration_ms, created_at)
        SELECT app_current_tenant(), * FROM unnest(
            %s::uuid[], %s::uuid[], %s::uuid[], %s::uuid[], %s::uuid[], %s::text[], %s::text[],
            %s::jsonb[], %s::text[], %s::bool[], %s::text[], %s::int[], %s::timestamptz[])
        """,
        [[Jsonb(r[c]) if c == "input_params" else r[c] for r in rows] for c in cols],
    )


async def send_finish(
    conn: Connection,
    task_id: UUID,
    run_id: UUID,
    agent_id: UUID,
    output: dict[str, Any],
    usage: dict[str, Any],
    *,
    tools: int,
    latency_ms: int,
) -> Any:
    """One statement for a completed task: its output and usage, one dependency fewer for
    each dependant (those left with none become queued), the run's counters, the agent's
    totals delta. Returns the cursor (read with read_finish), so that on a pipelined
    connection later statements share its round trip. The rows touched are all different
    (the task, its dependants, the run), as one statement's updates must be."""
    return await conn.execute(
        """
        WITH done AS (
            UPDATE tasks SET status = 'completed', output = %(output)s, error = NULL,
                completed_at = now(), prompt_tokens = prompt_tokens + %(prompt)s,
                completion_tokens = completion_tokens + %(completion)s,
                tokens_used = tokens_used + %(prompt)s + %(completion)s,
                cost_usd = cost_usd + %(cost)s,
                duration_ms = (extract(epoch FROM now() - started_at) * 1000)::int
            WHERE id = %(id)s
            RETURNING id
        ), released AS (
            UPDATE tasks t SET pending_deps = t.pending_deps - 1,
                status = CASE WHEN t.pending_deps = 1 AND t.status = 'pending' THEN 'queued'
                              ELSE t.status END,
                dispatch = t.dispatch + (t.pending_deps = 1 AND t.status = 'pending')::int
            FROM task_dependencies d
            WHERE d.tenant_id = t.tenant_id AND d.task_id = t.id AND d.depends_on_task_id = %(id)s
            RETURNING t.id, t.run_id, t.dispatch, t.node, t.status
        ), run AS (
            UPDATE runs SET completed_tasks = completed_tasks + 1,
                tools_invoked = tools_invoked + %(tools)s,
                prompt_tokens = prompt_tokens + %(prompt)s,
                completion_tokens = completion_tokens + %(completion)s,
                total_tokens = total_tokens + %(prompt)s + %(completion)s,
                total_cost_usd = total_cost_usd + %(cost)s
            WHERE id = %(run)s
            RETURNING status, total_tasks, completed_tasks, failed_tasks
        ), delta AS (
            INSERT INTO agent_total_deltas (tenant_id, agent_id, completed, failed, tokens,
                                            cost_usd, latency_ms)
            SELECT app_current_tenant(), %(agent)s, 1, 0, %(prompt)s + %(completion)s,
                   %(cost)s, %(latency)s
            FROM done
        )
        SELECT (SELECT to_jsonb(run) FROM run) AS run,
               (SELECT coalesce(jsonb_agg(to_jsonb(released)), '[]') FROM released) AS released
        """,
        {
            "id": task_id,
            "run": run_id,
            "agent": agent_id,
            "output": Jsonb(output),
            "tools": tools,
            "latency": max(latency_ms, 0),
            **usage,
        },
    )


async def read_finish(cur: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's counters after the task, and the dependants it released (queued ones
    are ready to run)."""
    row = await cur.fetchone()
    return row["run"], row["released"]


async def run_outputs(conn: Connection, run_id: UUID) -> list[dict[str, Any]]:
    """Outputs of the run's completed tasks in creation order; `sink` marks those nothing
    depends on (subtasks included)."""
    cur = await conn.execute(
        """
        SELECT t.node, t.output, NOT EXISTS (
            SELECT 1 FROM task_dependencies d
            WHERE d.tenant_id = t.tenant_id AND d.depends_on_task_id = t.id) AS sink
        FROM tasks t WHERE t.run_id = %s AND t.status = 'completed'
        ORDER BY t.created_at, t.node
        """,
        [run_id],
    )
    return await cur.fetchall()


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
    await conn.execute("UPDATE tasks SET status = 'waiting' WHERE id = %s", [task_id])


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


async def finish_run(conn: Connection, run_id: UUID, result: str, response: dict[str, Any]) -> None:
    await conn.execute(
        """
        UPDATE runs SET status = 'completed', result = %(result)s, response = %(response)s,
            completed_at = now(),
            duration_ms = (extract(epoch FROM now() - coalesce(started_at, created_at))
                           * 1000)::int,
            agents_used = (SELECT count(DISTINCT agent_id) FROM tasks WHERE run_id = %(id)s)
        WHERE id = %(id)s
        """,
        {"id": run_id, "result": result, "response": Jsonb(response)},
    )


async def fail_run(conn: Connection, run_id: UUID, error: str) -> None:
    await conn.execute(
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
    await conn.execute(
        """
        INSERT INTO agent_total_deltas (tenant_id, agent_id, completed, failed, tokens,
                                        cost_usd, latency_ms)
        VALUES (app_current_tenant(), %(id)s, %(ok)s::int, (NOT %(ok)s)::int, %(tokens)s,
                %(cost)s, %(latency)s)
        """,
        {"id": agent_id, "ok": ok, "tokens": tokens, "cost": cost, "latency": max(latency_ms, 0)},
    )


async def fold_agent_totals(conn: Connection) -> None:
    """Moves the tenant's committed deltas into their agents' rows, skipping agents whose
    row another transaction holds (their deltas wait for the next fold). Exact under
    concurrency: a delta is deleted, and so added, by one fold only. NO KEY UPDATE does
    not block the key-share locks that inserting deltas takes on the agent."""
    await conn.execute(
        """
        WITH a AS (
            SELECT tenant_id, id FROM agents
            WHERE id IN (SELECT agent_id FROM agent_total_deltas)
            ORDER BY id FOR NO KEY UPDATE SKIP LOCKED
        ), d AS (
            DELETE FROM agent_total_deltas d USING a
            WHERE d.tenant_id = a.tenant_id AND d.agent_id = a.id
            RETURNING d.*
        ), s AS (
            SELECT tenant_id, agent_id, sum(completed) AS completed, sum(failed) AS failed,
                   sum(tokens) AS tokens, sum(cost_usd) AS cost, sum(latency_ms) AS latency
            FROM d GROUP BY tenant_id, agent_id
        )
        UPDATE agents g SET total_tasks_completed = g.total_tasks_completed + s.completed,
            total_tasks_failed = g.total_tasks_failed + s.failed,
            total_tokens_used = g.total_tokens_used + s.tokens,
            total_cost_usd = g.total_cost_usd + s.cost,
            total_latency_ms = g.total_latency_ms + s.latency
        FROM s WHERE g.tenant_id = s.tenant_id AND g.id = s.agent_id
        """
    )


async def agent_by_slug(conn: Connection, slug: str) -> dict[str, Any] | None:
    return await _one(conn, "SELECT id, slug, status FROM agents WHERE slug = %s", [slug])


async def team(conn: Connection, exclude: UUID) -> list[str]:
    cur = await conn.execute(
        "SELECT slug FROM agents WHERE status = 'active' AND id <> %s ORDER BY slug LIMIT 50",
        [exclude],
    )
    return [r["slug"] for r in await cur.fetchall()]


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
