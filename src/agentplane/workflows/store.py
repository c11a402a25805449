"""SQL of workflows, runs, tasks, dependencies, run data, input requests and agent
interactions. Nothing else lives here.

One module past 400 lines on purpose: these tables are written together (a run with its
tasks and dependencies, a task with its input requests) and the statements share their
column lists; a section per table keeps each findable."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from agentplane.db.pool import Connection


async def _one(conn: Connection, query: str, params: Any = None) -> dict[str, Any] | None:
    cur = await conn.execute(query, params)
    return await cur.fetchone()


async def _all(conn: Connection, query: str, params: Any = None) -> list[dict[str, Any]]:
    cur = await conn.execute(query, params)
    return await cur.fetchall()


# -- workflows ---------------------------------------------------------------------------

WORKFLOW = """
    w.id, w.name, w.description, w.latest_version, w.created_at, w.updated_at,
    v.version, v.definition, v.source, v.format, v.created_at AS version_created_at
"""


async def insert_workflow(
    conn: Connection, name: str, description: str | None, user_id: UUID | None
) -> dict[str, Any]:
    return await _one(
        conn,
        "INSERT INTO workflows (tenant_id, name, description, created_by) "
        "VALUES (app_current_tenant(), %s, %s, %s) RETURNING id",
        [name, description, user_id],
    )


async def lock_workflow(conn: Connection, name: str) -> dict[str, Any] | None:
    return await _one(
        conn, "SELECT id, latest_version FROM workflows WHERE name = %s FOR UPDATE", [name]
    )


async def bump_workflow(conn: Connection, workflow_id: UUID, description: str | None) -> int:
    row = await _one(
        conn,
        "UPDATE workflows SET latest_version = latest_version + 1, "
        "description = coalesce(%s, description) WHERE id = %s RETURNING latest_version",
        [description, workflow_id],
    )
    return row["latest_version"]


async def insert_version(
    conn: Connection,
    workflow_id: UUID,
    version: int,
    definition: dict,
    source: str,
    fmt: str,
    user_id: UUID | None,
) -> None:
    await conn.execute(
        "INSERT INTO workflow_versions (tenant_id, workflow_id, version, definition, source, "
        "format, created_by) VALUES (app_current_tenant(), %s, %s, %s, %s, %s, %s)",
        [workflow_id, version, Jsonb(definition), source, fmt, user_id],
    )


async def get_workflow(conn: Connection, ref: str, version: int | None) -> dict[str, Any] | None:
    """By name or id; the latest version unless one is named."""
    return await _one(
        conn,
        f"""
        SELECT {WORKFLOW} FROM workflows w
        JOIN workflow_versions v ON v.tenant_id = w.tenant_id AND v.workflow_id = w.id
         AND v.version = coalesce(%(version)s, w.latest_version)
        WHERE w.name = %(ref)s OR w.id::text = %(ref)s
        """,
        {"ref": ref, "version": version},
    )


async def list_workflows(conn: Connection) -> list[dict[str, Any]]:
    return await _all(
        conn,
        f"""SELECT {WORKFLOW} FROM workflows w
        JOIN workflow_versions v ON v.tenant_id = w.tenant_id AND v.workflow_id = w.id
         AND v.version = w.latest_version ORDER BY w.name""",
    )


async def list_versions(conn: Connection, workflow_id: UUID) -> list[dict[str, Any]]:
    return await _all(
        conn,
        "SELECT version, format, created_at FROM workflow_versions WHERE workflow_id = %s "
        "ORDER BY version",
        [workflow_id],
    )


async def delete_workflow(conn: Connection, workflow_id: UUID) -> None:
    await conn.execute("DELETE FROM workflows WHERE id = %s", [workflow_id])


async def workflow_has_runs(conn: Connection, workflow_id: UUID) -> bool:
    row = await _one(
        conn, "SELECT EXISTS (SELECT 1 FROM runs WHERE workflow_id = %s) AS used", [workflow_id]
    )
    return row["used"]


# -- runs ----------------------------------------------------------------------------------


async def insert_run(conn: Connection, v: dict[str, Any]) -> dict[str, Any]:
    return await _one(
        conn,
        """
        INSERT INTO runs (tenant_id, id, workflow_id, workflow_version, kind, mode, query, inputs,
                          total_tasks, complexity_score, parent_run_id, call_stack, session_id,
                          user_id, api_key_id, metadata, model)
        VALUES (app_current_tenant(), %(id)s, %(workflow_id)s, %(workflow_version)s, %(kind)s,
                %(mode)s, %(query)s, %(inputs)s, %(total_tasks)s, %(complexity_score)s,
                %(parent_run_id)s, %(call_stack)s, %(session_id)s, %(user_id)s, %(api_key_id)s,
                %(metadata)s, %(model)s)
        RETURNING *
        """,
        {
            **v,
            "inputs": Jsonb(v["inputs"]),
            "metadata": Jsonb(v.get("metadata") or {}),
            "model": v.get("model"),
        },
    )


async def insert_tasks(conn: Connection, run_id: UUID, tasks: list[dict[str, Any]]) -> None:
    cols = (
        "id",
        "node",
        "agent_id",
        "parent_task_id",
        "status",
        "instruction",
        "pending_deps",
        "dispatch",
        "max_retries",
        "retry_delay_s",
        "timeout_s",
    )
    await conn.execute(
        """
        INSERT INTO tasks (tenant_id, run_id, id, node, agent_id, parent_task_id, status,
                           instruction, pending_deps, dispatch, max_retries, retry_delay_s,
                           timeout_s)
        SELECT app_current_tenant(), %s, * FROM unnest(
            %s::uuid[], %s::text[], %s::uuid[], %s::uuid[], %s::text[], %s::text[], %s::int[],
            %s::int[], %s::int[], %s::real[], %s::real[])
        """,
        [run_id, *([t[c] for t in tasks] for c in cols)],
    )


async def insert_dependencies(
    conn: Connection, run_id: UUID, pairs: list[tuple[UUID, UUID]]
) -> None:
    if not pairs:
        return
    await conn.execute(
        """
        INSERT INTO task_dependencies (tenant_id, run_id, task_id, depends_on_task_id)
        SELECT app_current_tenant(), %s, * FROM unnest(%s::uuid[], %s::uuid[])
        """,
        [run_id, [p[0] for p in pairs], [p[1] for p in pairs]],
    )


RUN_COLUMNS = """
    r.*, w.name AS workflow_name,
    (SELECT count(*) FROM input_requests i WHERE i.tenant_id = r.tenant_id AND i.run_id = r.id
       AND i.status = 'pending') AS pending_input_requests,
    -- Counted where the calls are, so a total never hides them (llm_calls_unpriced_idx:
    -- a run's priced calls, however many, cost the count nothing).
    (SELECT count(*) FROM llm_calls c
      WHERE c.tenant_id = r.tenant_id AND c.run_id = r.id AND c.status = 'completed'
        AND c.cost_usd IS NULL) AS unpriced_calls
"""


async def get_run(conn: Connection, run_id: UUID, *, lock: bool = False) -> dict[str, Any] | None:
    if lock:
        return await _one(conn, "SELECT * FROM runs WHERE id = %s FOR UPDATE", [run_id])
    return await _one(
        conn,
        f"SELECT {RUN_COLUMNS} FROM runs r LEFT JOIN workflows w "
        "ON w.tenant_id = r.tenant_id AND w.id = r.workflow_id WHERE r.id = %s",
        [run_id],
    )


async def list_runs(
    conn: Connection,
    *,
    status: str | None,
    workflow: str | None,
    before: tuple[datetime, UUID] | None,
    limit: int,
    id_range: tuple[UUID | None, UUID | None] = (None, None),
    agent: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """Newest first. `agent` (a slug): runs with a task of that agent; `since`/`until`
    bound the creation time."""
    return await _all(
        conn,
        f"""
        SELECT {RUN_COLUMNS} FROM runs r LEFT JOIN workflows w
          ON w.tenant_id = r.tenant_id AND w.id = r.workflow_id
        WHERE (%(status)s::text IS NULL OR r.status = %(status)s)
          AND (%(lo)s::uuid IS NULL OR r.id BETWEEN %(lo)s AND %(hi)s)
          AND (%(workflow)s::text IS NULL OR w.name = %(workflow)s)
          AND (%(at)s::timestamptz IS NULL OR (r.created_at, r.id) < (%(at)s, %(id)s::uuid))
          AND (%(since)s::timestamptz IS NULL OR r.created_at >= %(since)s)
          AND (%(until)s::timestamptz IS NULL OR r.created_at < %(until)s)
          AND (%(agent)s::text IS NULL OR EXISTS (
                SELECT 1 FROM tasks t JOIN agents a
                  ON a.tenant_id = t.tenant_id AND a.id = t.agent_id
                 WHERE t.tenant_id = r.tenant_id AND t.run_id = r.id AND a.slug = %(agent)s))
        ORDER BY r.created_at DESC, r.id DESC LIMIT %(limit)s
        """,
        {
            "status": status,
            "workflow": workflow,
            "lo": id_range[0],
            "hi": id_range[1],
            "limit": limit,
            "at": before[0] if before else None,
            "id": before[1] if before else None,
            "agent": agent,
            "since": since,
            "until": until,
        },
    )


async def set_run_status(
    conn: Connection,
    run_id: UUID,
    status: str,
    *,
    error: str | None = None,
    paused_by: str | None = None,
) -> dict[str, Any]:
    """Terminal statuses stamp completed_at and the duration."""
    return await _one(
        conn,
        """
        UPDATE runs SET status = %(status)s, error = coalesce(%(error)s, error),
            started_at = coalesce(started_at, CASE WHEN %(status)s = 'running' THEN now() END),
            completed_at = CASE WHEN %(status)s IN ('completed', 'failed', 'cancelled')
                                THEN now() END,
            duration_ms = CASE WHEN %(status)s IN ('completed', 'failed', 'cancelled')
                THEN (extract(epoch FROM now() - coalesce(started_at, created_at)) * 1000)::int
                END,
            metadata = CASE WHEN %(paused_by)s::text IS NULL THEN metadata - 'paused_by'
                            ELSE metadata || jsonb_build_object('paused_by', %(paused_by)s) END
        WHERE id = %(id)s RETURNING *
        """,
        {"id": run_id, "status": status, "error": error, "paused_by": paused_by},
    )


CALLS_OF_RUN = ("tool_executions", "llm_calls")


async def run_tree_rows(
    conn: Connection, run_id: UUID, *, calls: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """Everything a run's tree shows, a query per kind (each an index range scan);
    without its LLM and tool calls when `calls` is false (they are paged: run_calls)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for key, query in (
        (
            "tasks",
            "SELECT t.*, a.slug AS agent FROM tasks t JOIN agents a "
            "ON a.tenant_id = t.tenant_id AND a.id = t.agent_id WHERE t.run_id = %s "
            "ORDER BY t.created_at, t.started_at NULLS LAST, t.node",
        ),
        (
            "dependencies",
            "SELECT task_id, depends_on_task_id, dependency_type "
            "FROM task_dependencies WHERE run_id = %s",
        ),
        (
            "agent_executions",
            "SELECT e.id, e.task_id, e.attempt, e.state, e.strategy, e.model_used, "
            "e.prompt_tokens, e.completion_tokens, e.tokens_used, e.cost_usd, "
            "e.llm_calls, e.duration_ms, e.error_message, e.created_at, a.slug AS agent "
            "FROM agent_executions e JOIN agents a ON a.tenant_id = e.tenant_id "
            "AND a.id = e.agent_id WHERE e.run_id = %s ORDER BY e.created_at",
        ),
        (
            "transitions",
            "SELECT t.agent_execution_id, t.seq, t.from_state, t.to_state, t.note, t.at "
            "FROM agent_execution_transitions t JOIN agent_executions e "
            "ON e.tenant_id = t.tenant_id AND e.id = t.agent_execution_id "
            "WHERE e.run_id = %s ORDER BY t.agent_execution_id, t.seq",
        ),
        (
            "tool_executions",
            "SELECT id, agent_execution_id, tool_name, input_params, output, "
            "success, error, duration_ms, created_at FROM tool_executions "
            "WHERE run_id = %s ORDER BY created_at",
        ),
        (
            "llm_calls",
            "SELECT id, agent_execution_id, provider, model, prompt_tokens, "
            "completion_tokens, total_tokens, cost_usd, latency_ms, finish_reason, "
            "status, error, created_at FROM llm_calls WHERE run_id = %s "
            "ORDER BY created_at",
        ),
        ("input_requests", "SELECT * FROM input_requests WHERE run_id = %s ORDER BY requested_at"),
        (
            "interactions",
            "SELECT i.id, i.task_id, f.slug AS from_agent, t.slug AS to_agent, "
            "i.interaction_type, i.message, i.payload, i.created_at "
            "FROM agent_interactions i "
            "JOIN agents f ON f.tenant_id = i.tenant_id AND f.id = i.from_agent_id "
            "JOIN agents t ON t.tenant_id = i.tenant_id AND t.id = i.to_agent_id "
            "WHERE i.run_id = %s ORDER BY i.created_at",
        ),
        (
            "run_data",
            "SELECT key, value, data_type, tags, task_id, created_at FROM run_data "
            "WHERE run_id = %s ORDER BY created_at",
        ),
    ):
        if not calls and key in CALLS_OF_RUN:
            out[key] = []
            continue
        out[key] = await _all(conn, query, [run_id])
    return out


async def run_calls(
    conn: Connection,
    run_id: UUID,
    *,
    task_id: UUID | None,
    after: tuple[datetime, UUID] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """A run's LLM and tool calls in the order they started, a page at a time (each side
    an index range scan of at most `limit` rows), without their bodies."""
    params = {
        "run": run_id,
        "task": task_id,
        "at": after[0] if after else None,
        "id": after[1] if after else None,
        "limit": limit,
    }
    return await _all(
        conn,
        """
        SELECT x.*, k.node AS task_node FROM (
          (SELECT 'llm' AS kind, c.id, c.task_id, c.agent_execution_id, c.created_at,
                  c.latency_ms AS duration_ms, c.provider || '/' || c.model AS name,
                  c.status, c.error, c.prompt_tokens, c.completion_tokens, c.cost_usd
             FROM llm_calls c
            WHERE c.tenant_id = app_current_tenant() AND c.run_id = %(run)s
              AND (%(task)s::uuid IS NULL OR c.task_id = %(task)s)
              AND (%(at)s::timestamptz IS NULL OR (c.created_at, c.id) > (%(at)s, %(id)s::uuid))
            ORDER BY c.created_at, c.id LIMIT %(limit)s)
          UNION ALL
          (SELECT 'tool', t.id, t.task_id, t.agent_execution_id, t.created_at, t.duration_ms,
                  t.tool_name, CASE WHEN t.success THEN 'completed' ELSE 'failed' END,
                  t.error, 0, 0, NULL
             FROM tool_executions t
            WHERE t.tenant_id = app_current_tenant() AND t.run_id = %(run)s
              AND (%(task)s::uuid IS NULL OR t.task_id = %(task)s)
              AND (%(at)s::timestamptz IS NULL OR (t.created_at, t.id) > (%(at)s, %(id)s::uuid))
            ORDER BY t.created_at, t.id LIMIT %(limit)s)
        ) x LEFT JOIN tasks k ON k.tenant_id = app_current_tenant() AND k.id = x.task_id
        ORDER BY x.created_at, x.id LIMIT %(limit)s
        """,
        params,
    )


async def get_tool_execution(
    conn: Connection, run_id: UUID, tool_execution_id: UUID
) -> dict[str, Any] | None:
    return await _one(
        conn,
        "SELECT id, run_id, task_id, agent_execution_id, tool_name, call_id, input_params, "
        "output, success, error, duration_ms, created_at FROM tool_executions "
        "WHERE run_id = %s AND id = %s",
        [run_id, tool_execution_id],
    )


# -- tasks ---------------------------------------------------------------------------------


async def get_task(conn: Connection, task_id: UUID, *, lock: bool = False) -> dict[str, Any] | None:
    return await _one(
        conn, "SELECT * FROM tasks WHERE id = %s" + (" FOR UPDATE" if lock else ""), [task_id]
    )


async def dispatch_tasks(conn: Connection, task_ids: list[UUID]) -> list[dict[str, Any]]:
    """Mark tasks queued under a new dispatch number; the jobs carry that number."""
    return await _all(
        conn,
        "UPDATE tasks SET status = 'queued', dispatch = dispatch + 1, error = NULL "
        "WHERE id = ANY(%s) RETURNING id, run_id, dispatch, node",
        [task_ids],
    )


async def cancel_open_tasks(
    conn: Connection, run_id: UUID, reason: str, statuses: tuple[str, ...]
) -> list[dict[str, Any]]:
    return await _all(
        conn,
        "UPDATE tasks SET status = 'cancelled', error = %s, completed_at = now() "
        "WHERE run_id = %s AND status = ANY(%s) RETURNING id, node",
        [reason, run_id, list(statuses)],
    )


async def queued_tasks(conn: Connection, run_id: UUID) -> list[UUID]:
    rows = await _all(
        conn, "SELECT id FROM tasks WHERE run_id = %s AND status = 'queued'", [run_id]
    )
    return [r["id"] for r in rows]


async def reopen_cancelled(conn: Connection, run_id: UUID) -> list[UUID]:
    """After a retry: tasks cancelled by the failure wait again; ready ones are returned."""
    rows = await _all(
        conn,
        "UPDATE tasks SET status = 'pending', error = NULL, completed_at = NULL "
        "WHERE run_id = %s AND status = 'cancelled' RETURNING id, pending_deps",
        [run_id],
    )
    return [r["id"] for r in rows if r["pending_deps"] == 0]


async def reopen_failed_task(conn: Connection, run_id: UUID, task_id: UUID) -> None:
    await conn.execute(
        "UPDATE tasks SET retry_count = retry_count + 1, completed_at = NULL, deadline_at = NULL "
        "WHERE id = %s",
        [task_id],
    )
    await conn.execute(
        "UPDATE runs SET failed_tasks = greatest(failed_tasks - 1, 0), error = NULL, "
        "completed_at = NULL, duration_ms = NULL WHERE id = %s",
        [run_id],
    )


async def upstream_outputs(conn: Connection, task: dict[str, Any]) -> list[dict[str, Any]]:
    return await _all(
        conn,
        """
        SELECT u.node, u.output, a.slug AS agent FROM task_dependencies d
        JOIN tasks u ON u.tenant_id = d.tenant_id AND u.id = d.depends_on_task_id
        JOIN agents a ON a.tenant_id = u.tenant_id AND a.id = u.agent_id
        WHERE d.task_id = %(id)s
        UNION ALL
        SELECT p.node, p.output, a.slug FROM tasks p
        JOIN agents a ON a.tenant_id = p.tenant_id AND a.id = p.agent_id
        WHERE p.id = %(parent)s
        """,
        {"id": task["id"], "parent": task["parent_task_id"]},
    )


async def task_counts(conn: Connection, run_id: UUID) -> dict[str, Any]:
    return await _one(
        conn,
        "SELECT count(DISTINCT agent_id) AS agents_used FROM tasks WHERE run_id = %s",
        [run_id],
    )


# -- run data ------------------------------------------------------------------------------


async def put_run_data(conn: Connection, v: dict[str, Any]) -> dict[str, Any]:
    return await _one(
        conn,
        """
        INSERT INTO run_data (tenant_id, run_id, key, value, data_type, tags, task_id,
                              created_by_agent)
        VALUES (app_current_tenant(), %(run_id)s, %(key)s, %(value)s, %(data_type)s, %(tags)s,
                %(task_id)s, %(agent)s)
        RETURNING key, value, data_type, tags, task_id, created_at
        """,
        {**v, "value": Jsonb(v["value"])},
    )


async def get_run_data(
    conn: Connection, run_id: UUID, key: str | None = None
) -> list[dict[str, Any]]:
    return await _all(
        conn,
        "SELECT key, value, data_type, tags, task_id, created_at FROM run_data "
        "WHERE run_id = %s AND (%s::text IS NULL OR key = %s) ORDER BY created_at LIMIT 200",
        [run_id, key, key],
    )


# -- input requests ------------------------------------------------------------------------


async def insert_input_request(conn: Connection, v: dict[str, Any]) -> dict[str, Any]:
    return await _one(
        conn,
        """
        INSERT INTO input_requests (tenant_id, run_id, task_id, agent_execution_id, request_type,
                                    prompt, schema, call_id)
        VALUES (app_current_tenant(), %(run_id)s, %(task_id)s, %(agent_execution_id)s,
                %(request_type)s, %(prompt)s, %(schema)s, %(call_id)s)
        RETURNING *
        """,
        {**v, "schema": Jsonb(v["schema"])},
    )


async def get_input_request(
    conn: Connection, request_id: UUID, *, lock: bool = False
) -> dict[str, Any] | None:
    return await _one(
        conn,
        "SELECT * FROM input_requests WHERE id = %s" + (" FOR UPDATE" if lock else ""),
        [request_id],
    )


async def list_input_requests(
    conn: Connection, run_id: UUID | None, status: str | None,
    id_range: tuple[UUID | None, UUID | None] = (None, None),
) -> list[dict[str, Any]]:
    return await _all(
        conn,
        "SELECT * FROM input_requests WHERE (%(run)s::uuid IS NULL OR run_id = %(run)s) "
        "AND (%(status)s::text IS NULL OR status = %(status)s) "
        "AND (%(lo)s::uuid IS NULL OR id BETWEEN %(lo)s AND %(hi)s) "
        "ORDER BY requested_at LIMIT 500",
        {"run": run_id, "status": status, "lo": id_range[0], "hi": id_range[1]},
    )


async def answer_input_request(
    conn: Connection, request_id: UUID, response: Any, user_id: UUID | None
) -> dict[str, Any]:
    return await _one(
        conn,
        "UPDATE input_requests SET status = 'answered', response = %s, responded_by = %s, "
        "responded_at = now() WHERE id = %s RETURNING *",
        [Jsonb(response), user_id, request_id],
    )


async def answered_requests(conn: Connection, task_id: UUID) -> list[dict[str, Any]]:
    return await _all(
        conn,
        "SELECT * FROM input_requests WHERE task_id = %s AND status = 'answered' "
        "ORDER BY requested_at",
        [task_id],
    )


async def cancel_input_requests(conn: Connection, run_id: UUID) -> None:
    await conn.execute(
        "UPDATE input_requests SET status = 'cancelled' WHERE run_id = %s AND status = 'pending'",
        [run_id],
    )


async def pending_input_count(conn: Connection, run_id: UUID) -> int:
    row = await _one(
        conn,
        "SELECT count(*) AS n FROM input_requests WHERE run_id = %s AND status = 'pending'",
        [run_id],
    )
    return row["n"]


# -- agent interactions --------------------------------------------------------------------


async def insert_interaction(conn: Connection, v: dict[str, Any]) -> None:
    await conn.execute(
        """
        INSERT INTO agent_interactions (tenant_id, run_id, task_id, from_agent_id, to_agent_id,
                                        interaction_type, message, payload)
        VALUES (app_current_tenant(), %(run_id)s, %(task_id)s, %(from_agent)s, %(to_agent)s,
                %(type)s, %(message)s, %(payload)s)
        """,
        {**v, "payload": Jsonb(v.get("payload") or {})},
    )
