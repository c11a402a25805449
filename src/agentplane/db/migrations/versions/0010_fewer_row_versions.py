"""Fewer row versions per task, and the batch rollup by key.

Each LLM call's budget hold updated the tenant's row twice (taken, settled), one row
version each, and every hold of a batch waited on that row in turn. Now:

- `llm_reserve_many` takes a batch of holds without sessions or API key budgets that fits
  the tenant's limit as a whole with one update of the tenant's row and one insert; a batch
  that does not fit, or has other budgets, is taken hold by hold (each admitted or refused
  on its own) by 0009's function, renamed `llm_reserve_each`.
- `llm_settle_many` applies a batch's holds with one update per session, per API key
  budget and of the tenant, their sums (holds are never negative, so clamping the sum at
  zero is clamping each step).

`runtime_complete` (0009's, with one statement changed) rolls up its batch looking up each
task's run and agent by key, where a join let the plan read all the agent's tasks.

A task's status changes on every step of its life; with `status` out of `tasks_agent_idx`
(which finds an agent's tasks; nothing looks them up by status there), and room left on
each page of tasks, agent executions and runs (a run's counters change with every batch of
its tasks), those updates are HOT: no new entry in each index per update.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

from agentplane.db.migrations import sql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UPGRADE = """
-- 0009's function, which takes holds one by one, is what a batch falls back to.
ALTER FUNCTION llm_reserve_many(uuid, jsonb, interval, text) RENAME TO llm_reserve_each;

CREATE FUNCTION llm_reserve_many(p_tenant uuid, p_holds jsonb, p_ttl interval,
                                 p_lock_timeout text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_month date := date_trunc('month', now())::date;
    v_n integer := jsonb_array_length(p_holds);
    v_sum bigint;
    v_plain boolean;
    v_ids uuid[];
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    SELECT sum((x->>'tokens')::bigint),
           bool_and(x->>'session_id' IS NULL AND x->>'api_key_id' IS NULL
                    AND (x->>'tokens')::bigint >= 0)
    INTO v_sum, v_plain FROM jsonb_array_elements(p_holds) x;
    IF v_plain AND app_current_tenant() IS NOT NULL THEN
        -- The tenant's limit only: if the whole batch fits, it is one update and one insert.
        PERFORM set_config('synchronous_commit', 'off', true);
        UPDATE tenants SET
            monthly_token_usage =
                CASE WHEN usage_month = v_month THEN monthly_token_usage ELSE 0 END,
            usage_month = v_month,
            tokens_reserved = tokens_reserved + v_sum
        WHERE id = p_tenant
          AND (CASE WHEN usage_month = v_month THEN monthly_token_usage ELSE 0 END)
              + tokens_reserved + v_sum <= token_limit;
        IF FOUND THEN
            v_ids := ARRAY(SELECT gen_random_uuid() FROM generate_series(1, v_n));
            INSERT INTO budget_reservations (id, tenant_id, tokens, expires_at)
            SELECT v_ids[x.i], p_tenant, x.tokens, now() + p_ttl
            FROM ROWS FROM (jsonb_to_recordset(p_holds) AS (tokens bigint))
                 WITH ORDINALITY AS x(tokens, i);
            RETURN (SELECT jsonb_agg(jsonb_build_object('id', id) ORDER BY i)
                    FROM unnest(v_ids) WITH ORDINALITY AS u(id, i));
        END IF;
    END IF;
    RETURN llm_reserve_each(p_tenant, p_holds, p_ttl, p_lock_timeout);
END $$;

CREATE OR REPLACE FUNCTION llm_settle_many(p_ids uuid[], p_sessions uuid[], p_keys uuid[],
                                           p_used bigint[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_tenant uuid := app_current_tenant();
    v_n bigint;
    v_held bigint;
    v_used bigint;
BEGIN
    PERFORM 1 FROM sessions WHERE id = ANY(p_sessions) ORDER BY id FOR NO KEY UPDATE;
    PERFORM 1 FROM api_key_budgets WHERE api_key_id = ANY(p_keys)
        ORDER BY api_key_id FOR NO KEY UPDATE;
    WITH x AS (
        SELECT * FROM unnest(p_ids, p_sessions, p_keys, p_used)
            AS x(id, session_id, api_key_id, used)
    ), held AS (
        DELETE FROM budget_reservations b USING x WHERE b.id = x.id
        RETURNING b.id, b.tokens
    ), r AS (
        SELECT x.session_id, x.api_key_id, coalesce(held.tokens, 0) AS held, x.used
        FROM x LEFT JOIN held ON held.id = x.id
    ), s AS (
        UPDATE sessions s SET tokens_reserved = greatest(s.tokens_reserved - g.held, 0),
            tokens_used = s.tokens_used + g.used, request_count = s.request_count + g.n,
            last_activity = now()
        FROM (SELECT session_id, sum(held)::bigint AS held, sum(used)::bigint AS used,
                     count(*) FILTER (WHERE used > 0)::int AS n
              FROM r WHERE session_id IS NOT NULL GROUP BY session_id) g
        WHERE s.id = g.session_id
    ), k AS (
        UPDATE api_key_budgets k SET tokens_reserved = greatest(k.tokens_reserved - g.held, 0),
            tokens_used = k.tokens_used + g.used, updated_at = now()
        FROM (SELECT api_key_id, sum(held)::bigint AS held, sum(used)::bigint AS used
              FROM r WHERE api_key_id IS NOT NULL GROUP BY api_key_id) g
        WHERE k.api_key_id = g.api_key_id
    )
    SELECT count(*), sum(held)::bigint, sum(used)::bigint INTO v_n, v_held, v_used FROM r;
    IF v_n > 0 THEN
        PERFORM llm_apply_usage(v_tenant, NULL, NULL, v_held, v_used);  -- the tenant's row
    END IF;
END $$;

DROP INDEX tasks_agent_idx;
CREATE INDEX tasks_agent_idx ON tasks (tenant_id, agent_id, created_at DESC);
ALTER TABLE tasks SET (fillfactor = 80);
ALTER TABLE agent_executions SET (fillfactor = 80);
ALTER TABLE runs SET (fillfactor = 80);
"""


# runtime_complete as this revision makes it: 0009's, but its rollup looks up each task's
# run and agent by key. It joined the batch's tasks to runs and agents: its generic plan
# may then start from the agent's tasks (all of them) or the tenant's runs, a cost that
# grows with the tables.
RUNTIME_COMPLETE = """\
CREATE OR REPLACE FUNCTION runtime_complete(p jsonb) RETURNS jsonb LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_tenant uuid := app_current_tenant();
    v_applied uuid[];
    v_runs_ids uuid[];
    v_task_ids uuid[];
    v_released jsonb;
    v_runs jsonb;
    v_stripe smallint;
BEGIN
    -- Rows are found by `id = ANY(array)`: the planner takes a JSON record set for 100
    -- rows, which would make it scan whole tables to join them.
    SELECT array_agg(DISTINCT (x->>'run_id')::uuid), array_agg((x->>'task_id')::uuid)
    INTO v_runs_ids, v_task_ids FROM jsonb_array_elements(p->'tasks') x;
    PERFORM 1 FROM runs WHERE id = ANY(v_runs_ids) ORDER BY id FOR NO KEY UPDATE;
    SELECT coalesce(array_agg(id), '{}') INTO v_applied FROM (
        SELECT t.id FROM tasks t
        JOIN jsonb_to_recordset(p->'tasks') AS i(task_id uuid, run_id uuid, dispatch integer)
          ON t.id = i.task_id AND t.run_id = i.run_id
        WHERE t.id = ANY(v_task_ids) AND t.status = 'running' AND t.dispatch = i.dispatch
        ORDER BY t.id FOR UPDATE OF t
    ) locked;

    INSERT INTO llm_calls (id, tenant_id, user_id, api_key_id, session_id, run_id, task_id,
        agent_execution_id, agent_id, provider_id, provider, model, request,
        response_content, tool_calls, finish_reason, prompt_tokens, completion_tokens,
        cached_tokens, cache_write_tokens, cost_usd, cost_source, reserved_tokens, stream,
        latency_ms, ttft_ms, status, error, created_at, completed_at)
    SELECT c.id, v_tenant, c.user_id, c.api_key_id, c.session_id, c.run_id, c.task_id,
        c.agent_execution_id, c.agent_id, c.provider_id, c.provider, c.model, c.request,
        c.response_content, c.tool_calls, c.finish_reason, c.prompt_tokens,
        c.completion_tokens, c.cached_tokens, c.cache_write_tokens, c.cost_usd,
        c.cost_source, c.reserved_tokens, c.stream, c.latency_ms, c.ttft_ms, c.status,
        c.error, c.created_at, now()
    FROM jsonb_populate_recordset(NULL::llm_calls, p->'calls') c;
    INSERT INTO usage_records (tenant_id, llm_call_id, user_id, api_key_id, session_id,
        run_id, task_id, agent_id, provider, model, prompt_tokens, completion_tokens,
        cached_tokens, cost_usd, cost_source, latency_ms)
    SELECT v_tenant, u.llm_call_id, u.user_id, u.api_key_id, u.session_id, u.run_id,
        u.task_id, u.agent_id, u.provider, u.model, u.prompt_tokens, u.completion_tokens,
        u.cached_tokens, u.cost_usd, u.cost_source, u.latency_ms
    FROM jsonb_populate_recordset(NULL::usage_records, p->'usage') u;

    IF cardinality(v_applied) = 0 THEN
        RETURN jsonb_build_object('applied', '[]'::jsonb, 'released', '[]'::jsonb,
                                  'runs', '[]'::jsonb);
    END IF;

    UPDATE agent_executions e SET state = x.state, output = x.output,
        messages = coalesce(x.messages, e.messages),
        prompt_tokens = x.prompt_tokens, completion_tokens = x.completion_tokens,
        tokens_used = x.prompt_tokens + x.completion_tokens, cost_usd = x.cost,
        llm_calls = x.llm_calls, duration_ms = x.duration_ms, error_message = NULL,
        metadata = e.metadata || x.metadata
    FROM jsonb_to_recordset(p->'executions') AS x(id uuid, task_id uuid, state text,
        output text, messages jsonb, prompt_tokens integer, completion_tokens integer,
        cost numeric, llm_calls integer, duration_ms integer, metadata jsonb)
    WHERE e.task_id = ANY(v_applied) AND e.id = x.id AND x.task_id = ANY(v_applied);
    INSERT INTO agent_execution_transitions (tenant_id, agent_execution_id, seq, from_state,
                                             to_state, note, at)
    SELECT v_tenant, x.agent_execution_id, x.seq, x.from_state, x.to_state, x.note, x.at
    FROM jsonb_to_recordset(p->'transitions') AS x(task_id uuid, agent_execution_id uuid,
        seq integer, from_state text, to_state text, note text, at timestamptz)
    WHERE x.task_id = ANY(v_applied);
    INSERT INTO tool_executions (tenant_id, id, run_id, task_id, agent_execution_id,
                                 agent_id, tool_name, call_id, input_params, output,
                                 success, error, duration_ms, created_at)
    SELECT v_tenant, x.id, x.run_id, x.task_id, x.agent_execution_id, x.agent_id,
           x.tool_name, x.call_id, x.input_params, x.output, x.success, x.error,
           x.duration_ms, x.created_at
    FROM jsonb_populate_recordset(NULL::tool_executions, p->'tools') x
    WHERE x.task_id = ANY(v_applied);

    -- The tasks completed, and their day's rollup written here for the whole batch, one
    -- upsert per dimension value, instead of by the row trigger (usage_tasks_rollup, which
    -- the setting turns off for this statement) a few upserts per task.
    PERFORM set_config('agentplane.tasks_rolled_up', 'on', true);
    UPDATE tasks t SET status = 'completed', output = f.output, error = NULL,
        completed_at = now(), prompt_tokens = t.prompt_tokens + f.prompt,
        completion_tokens = t.completion_tokens + f.completion,
        tokens_used = t.tokens_used + f.prompt + f.completion,
        cost_usd = t.cost_usd + f.cost,
        duration_ms = (extract(epoch FROM now() - t.started_at) * 1000)::int
    FROM jsonb_to_recordset(p->'finishes') AS f(task_id uuid, output jsonb, prompt integer,
        completion integer, cost numeric)
    WHERE t.id = ANY(v_applied) AND t.id = f.task_id;
    PERFORM set_config('agentplane.tasks_rolled_up', 'off', true);
    v_stripe := usage_stripe(v_tenant);
    INSERT INTO usage_daily AS u (tenant_id, day, dimension, key, stripe, tasks_completed,
                                  tasks_failed, task_duration_ms)
    SELECT v_tenant, usage_utc_day(t.completed_at), x.dimension, x.key, v_stripe, count(*),
           0, sum(coalesce(t.duration_ms, 0))
    FROM tasks t
    CROSS JOIN LATERAL (VALUES ('tenant', ''), ('agent', t.agent_id::text),
        ('user', (SELECT r.user_id::text FROM runs r WHERE r.id = t.run_id)),
        ('api_key', (SELECT r.api_key_id::text FROM runs r WHERE r.id = t.run_id)),
        ('project', (SELECT a.project_id::text FROM agents a WHERE a.id = t.agent_id)))
        AS x (dimension, key)
    WHERE t.id = ANY(v_applied) AND x.key IS NOT NULL
    GROUP BY 2, 3, 4
    ON CONFLICT (tenant_id, dimension, key, day, stripe) DO UPDATE SET
        tasks_completed = u.tasks_completed + excluded.tasks_completed,
        task_duration_ms = u.task_duration_ms + excluded.task_duration_ms;

    -- One dependency fewer per completed upstream; those left with none become queued.
    WITH n AS (
        SELECT d.task_id, count(*)::int AS n FROM task_dependencies d
        WHERE d.depends_on_task_id = ANY(v_applied) GROUP BY d.task_id
    ), released AS (
        UPDATE tasks t SET pending_deps = t.pending_deps - n.n,
            status = CASE WHEN t.pending_deps = n.n AND t.status = 'pending' THEN 'queued'
                          ELSE t.status END,
            dispatch = t.dispatch + (t.pending_deps = n.n AND t.status = 'pending')::int
        FROM n WHERE t.id = n.task_id
        RETURNING t.id, t.run_id, t.dispatch, t.node, t.status
    )
    SELECT coalesce(jsonb_agg(to_jsonb(released)), '[]') INTO v_released FROM released;

    WITH f AS (
        SELECT * FROM jsonb_to_recordset(p->'finishes') AS f(task_id uuid, run_id uuid,
            agent_id uuid, prompt integer, completion integer, cost numeric, tools integer,
            latency integer)
        WHERE f.task_id = ANY(v_applied)
    ), per_run AS (
        SELECT run_id, count(*)::int AS n, sum(tools)::int AS tools,
               sum(prompt)::bigint AS prompt, sum(completion)::bigint AS completion,
               sum(cost) AS cost
        FROM f GROUP BY run_id
    ), run AS (
        UPDATE runs r SET completed_tasks = r.completed_tasks + s.n,
            tools_invoked = r.tools_invoked + s.tools,
            prompt_tokens = r.prompt_tokens + s.prompt,
            completion_tokens = r.completion_tokens + s.completion,
            total_tokens = r.total_tokens + s.prompt + s.completion,
            total_cost_usd = r.total_cost_usd + s.cost
        FROM per_run s WHERE r.id = ANY(v_runs_ids) AND r.id = s.run_id
        RETURNING r.id, r.status, r.total_tasks, r.completed_tasks, r.failed_tasks
    ), delta AS (
        -- What the tasks add to their agents' totals: rows of their own, so that tasks of
        -- one agent never wait on each other (fold_agent_totals moves them).
        INSERT INTO agent_total_deltas (tenant_id, agent_id, completed, failed, tokens,
                                        cost_usd, latency_ms)
        SELECT v_tenant, agent_id, count(*), 0, sum(prompt + completion), sum(cost),
               sum(greatest(latency, 0))
        FROM f GROUP BY agent_id
    )
    SELECT coalesce(jsonb_agg(to_jsonb(run)), '[]') INTO v_runs FROM run;

    PERFORM events_append_runs(v_tenant, (
        SELECT jsonb_agg(e ORDER BY i) FROM jsonb_array_elements(p->'events')
            WITH ORDINALITY AS x(e, i)
        WHERE (e->>'owner')::uuid = ANY(v_applied)));

    -- Runs whose tasks all completed come back with their outputs (creation order; `sink`
    -- marks those nothing depends on), for the caller to complete them.
    SELECT coalesce(jsonb_agg(CASE
        WHEN x.status NOT IN ('completed', 'failed', 'cancelled')
             AND x.completed_tasks = x.total_tasks
        THEN x.run || jsonb_build_object('outputs', (
            SELECT coalesce(jsonb_agg(jsonb_build_object('node', t.node, 'output', t.output,
                'sink', NOT EXISTS (SELECT 1 FROM task_dependencies d
                                    WHERE d.tenant_id = t.tenant_id
                                      AND d.depends_on_task_id = t.id))
                ORDER BY t.created_at, t.node), '[]')
            FROM tasks t WHERE t.run_id = x.id AND t.status = 'completed'))
        ELSE x.run END), '[]')
    INTO v_runs
    FROM (SELECT value AS run, (value->>'id')::uuid AS id, value->>'status' AS status,
                 (value->>'completed_tasks')::int AS completed_tasks,
                 (value->>'total_tasks')::int AS total_tasks
          FROM jsonb_array_elements(v_runs)) x;

    RETURN jsonb_build_object('applied', to_jsonb(v_applied), 'released', v_released,
                              'runs', v_runs);
END $$;"""

# As revision 0009 made them, for the downgrade.
RUNTIME_COMPLETE_0009 = """\
CREATE OR REPLACE FUNCTION runtime_complete(p jsonb) RETURNS jsonb LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_tenant uuid := app_current_tenant();
    v_applied uuid[];
    v_runs_ids uuid[];
    v_task_ids uuid[];
    v_released jsonb;
    v_runs jsonb;
    v_stripe smallint;
BEGIN
    -- Rows are found by `id = ANY(array)`: the planner takes a JSON record set for 100
    -- rows, which would make it scan whole tables to join them.
    SELECT array_agg(DISTINCT (x->>'run_id')::uuid), array_agg((x->>'task_id')::uuid)
    INTO v_runs_ids, v_task_ids FROM jsonb_array_elements(p->'tasks') x;
    PERFORM 1 FROM runs WHERE id = ANY(v_runs_ids) ORDER BY id FOR NO KEY UPDATE;
    SELECT coalesce(array_agg(id), '{}') INTO v_applied FROM (
        SELECT t.id FROM tasks t
        JOIN jsonb_to_recordset(p->'tasks') AS i(task_id uuid, run_id uuid, dispatch integer)
          ON t.id = i.task_id AND t.run_id = i.run_id
        WHERE t.id = ANY(v_task_ids) AND t.status = 'running' AND t.dispatch = i.dispatch
        ORDER BY t.id FOR UPDATE OF t
    ) locked;

    INSERT INTO llm_calls (id, tenant_id, user_id, api_key_id, session_id, run_id, task_id,
        agent_execution_id, agent_id, provider_id, provider, model, request,
        response_content, tool_calls, finish_reason, prompt_tokens, completion_tokens,
        cached_tokens, cache_write_tokens, cost_usd, cost_source, reserved_tokens, stream,
        latency_ms, ttft_ms, status, error, created_at, completed_at)
    SELECT c.id, v_tenant, c.user_id, c.api_key_id, c.session_id, c.run_id, c.task_id,
        c.agent_execution_id, c.agent_id, c.provider_id, c.provider, c.model, c.request,
        c.response_content, c.tool_calls, c.finish_reason, c.prompt_tokens,
        c.completion_tokens, c.cached_tokens, c.cache_write_tokens, c.cost_usd,
        c.cost_source, c.reserved_tokens, c.stream, c.latency_ms, c.ttft_ms, c.status,
        c.error, c.created_at, now()
    FROM jsonb_populate_recordset(NULL::llm_calls, p->'calls') c;
    INSERT INTO usage_records (tenant_id, llm_call_id, user_id, api_key_id, session_id,
        run_id, task_id, agent_id, provider, model, prompt_tokens, completion_tokens,
        cached_tokens, cost_usd, cost_source, latency_ms)
    SELECT v_tenant, u.llm_call_id, u.user_id, u.api_key_id, u.session_id, u.run_id,
        u.task_id, u.agent_id, u.provider, u.model, u.prompt_tokens, u.completion_tokens,
        u.cached_tokens, u.cost_usd, u.cost_source, u.latency_ms
    FROM jsonb_populate_recordset(NULL::usage_records, p->'usage') u;

    IF cardinality(v_applied) = 0 THEN
        RETURN jsonb_build_object('applied', '[]'::jsonb, 'released', '[]'::jsonb,
                                  'runs', '[]'::jsonb);
    END IF;

    UPDATE agent_executions e SET state = x.state, output = x.output,
        messages = coalesce(x.messages, e.messages),
        prompt_tokens = x.prompt_tokens, completion_tokens = x.completion_tokens,
        tokens_used = x.prompt_tokens + x.completion_tokens, cost_usd = x.cost,
        llm_calls = x.llm_calls, duration_ms = x.duration_ms, error_message = NULL,
        metadata = e.metadata || x.metadata
    FROM jsonb_to_recordset(p->'executions') AS x(id uuid, task_id uuid, state text,
        output text, messages jsonb, prompt_tokens integer, completion_tokens integer,
        cost numeric, llm_calls integer, duration_ms integer, metadata jsonb)
    WHERE e.task_id = ANY(v_applied) AND e.id = x.id AND x.task_id = ANY(v_applied);
    INSERT INTO agent_execution_transitions (tenant_id, agent_execution_id, seq, from_state,
                                             to_state, note, at)
    SELECT v_tenant, x.agent_execution_id, x.seq, x.from_state, x.to_state, x.note, x.at
    FROM jsonb_to_recordset(p->'transitions') AS x(task_id uuid, agent_execution_id uuid,
        seq integer, from_state text, to_state text, note text, at timestamptz)
    WHERE x.task_id = ANY(v_applied);
    INSERT INTO tool_executions (tenant_id, id, run_id, task_id, agent_execution_id,
                                 agent_id, tool_name, call_id, input_params, output,
                                 success, error, duration_ms, created_at)
    SELECT v_tenant, x.id, x.run_id, x.task_id, x.agent_execution_id, x.agent_id,
           x.tool_name, x.call_id, x.input_params, x.output, x.success, x.error,
           x.duration_ms, x.created_at
    FROM jsonb_populate_recordset(NULL::tool_executions, p->'tools') x
    WHERE x.task_id = ANY(v_applied);

    -- The tasks completed, and their day's rollup written here for the whole batch, one
    -- upsert per dimension value, instead of by the row trigger (usage_tasks_rollup, which
    -- the setting turns off for this statement) a few upserts per task.
    PERFORM set_config('agentplane.tasks_rolled_up', 'on', true);
    UPDATE tasks t SET status = 'completed', output = f.output, error = NULL,
        completed_at = now(), prompt_tokens = t.prompt_tokens + f.prompt,
        completion_tokens = t.completion_tokens + f.completion,
        tokens_used = t.tokens_used + f.prompt + f.completion,
        cost_usd = t.cost_usd + f.cost,
        duration_ms = (extract(epoch FROM now() - t.started_at) * 1000)::int
    FROM jsonb_to_recordset(p->'finishes') AS f(task_id uuid, output jsonb, prompt integer,
        completion integer, cost numeric)
    WHERE t.id = ANY(v_applied) AND t.id = f.task_id;
    PERFORM set_config('agentplane.tasks_rolled_up', 'off', true);
    v_stripe := usage_stripe(v_tenant);
    INSERT INTO usage_daily AS u (tenant_id, day, dimension, key, stripe, tasks_completed,
                                  tasks_failed, task_duration_ms)
    SELECT v_tenant, usage_utc_day(t.completed_at), x.dimension, x.key, v_stripe, count(*),
           0, sum(coalesce(t.duration_ms, 0))
    FROM tasks t
    JOIN runs r ON r.tenant_id = t.tenant_id AND r.id = t.run_id
    JOIN agents a ON a.tenant_id = t.tenant_id AND a.id = t.agent_id
    CROSS JOIN LATERAL (VALUES ('tenant', ''), ('agent', t.agent_id::text),
                               ('user', r.user_id::text), ('api_key', r.api_key_id::text),
                               ('project', a.project_id::text)) AS x (dimension, key)
    WHERE t.id = ANY(v_applied) AND x.key IS NOT NULL
    GROUP BY 2, 3, 4
    ON CONFLICT (tenant_id, dimension, key, day, stripe) DO UPDATE SET
        tasks_completed = u.tasks_completed + excluded.tasks_completed,
        task_duration_ms = u.task_duration_ms + excluded.task_duration_ms;

    -- One dependency fewer per completed upstream; those left with none become queued.
    WITH n AS (
        SELECT d.task_id, count(*)::int AS n FROM task_dependencies d
        WHERE d.depends_on_task_id = ANY(v_applied) GROUP BY d.task_id
    ), released AS (
        UPDATE tasks t SET pending_deps = t.pending_deps - n.n,
            status = CASE WHEN t.pending_deps = n.n AND t.status = 'pending' THEN 'queued'
                          ELSE t.status END,
            dispatch = t.dispatch + (t.pending_deps = n.n AND t.status = 'pending')::int
        FROM n WHERE t.id = n.task_id
        RETURNING t.id, t.run_id, t.dispatch, t.node, t.status
    )
    SELECT coalesce(jsonb_agg(to_jsonb(released)), '[]') INTO v_released FROM released;

    WITH f AS (
        SELECT * FROM jsonb_to_recordset(p->'finishes') AS f(task_id uuid, run_id uuid,
            agent_id uuid, prompt integer, completion integer, cost numeric, tools integer,
            latency integer)
        WHERE f.task_id = ANY(v_applied)
    ), per_run AS (
        SELECT run_id, count(*)::int AS n, sum(tools)::int AS tools,
               sum(prompt)::bigint AS prompt, sum(completion)::bigint AS completion,
               sum(cost) AS cost
        FROM f GROUP BY run_id
    ), run AS (
        UPDATE runs r SET completed_tasks = r.completed_tasks + s.n,
            tools_invoked = r.tools_invoked + s.tools,
            prompt_tokens = r.prompt_tokens + s.prompt,
            completion_tokens = r.completion_tokens + s.completion,
            total_tokens = r.total_tokens + s.prompt + s.completion,
            total_cost_usd = r.total_cost_usd + s.cost
        FROM per_run s WHERE r.id = ANY(v_runs_ids) AND r.id = s.run_id
        RETURNING r.id, r.status, r.total_tasks, r.completed_tasks, r.failed_tasks
    ), delta AS (
        -- What the tasks add to their agents' totals: rows of their own, so that tasks of
        -- one agent never wait on each other (fold_agent_totals moves them).
        INSERT INTO agent_total_deltas (tenant_id, agent_id, completed, failed, tokens,
                                        cost_usd, latency_ms)
        SELECT v_tenant, agent_id, count(*), 0, sum(prompt + completion), sum(cost),
               sum(greatest(latency, 0))
        FROM f GROUP BY agent_id
    )
    SELECT coalesce(jsonb_agg(to_jsonb(run)), '[]') INTO v_runs FROM run;

    PERFORM events_append_runs(v_tenant, (
        SELECT jsonb_agg(e ORDER BY i) FROM jsonb_array_elements(p->'events')
            WITH ORDINALITY AS x(e, i)
        WHERE (e->>'owner')::uuid = ANY(v_applied)));

    -- Runs whose tasks all completed come back with their outputs (creation order; `sink`
    -- marks those nothing depends on), for the caller to complete them.
    SELECT coalesce(jsonb_agg(CASE
        WHEN x.status NOT IN ('completed', 'failed', 'cancelled')
             AND x.completed_tasks = x.total_tasks
        THEN x.run || jsonb_build_object('outputs', (
            SELECT coalesce(jsonb_agg(jsonb_build_object('node', t.node, 'output', t.output,
                'sink', NOT EXISTS (SELECT 1 FROM task_dependencies d
                                    WHERE d.tenant_id = t.tenant_id
                                      AND d.depends_on_task_id = t.id))
                ORDER BY t.created_at, t.node), '[]')
            FROM tasks t WHERE t.run_id = x.id AND t.status = 'completed'))
        ELSE x.run END), '[]')
    INTO v_runs
    FROM (SELECT value AS run, (value->>'id')::uuid AS id, value->>'status' AS status,
                 (value->>'completed_tasks')::int AS completed_tasks,
                 (value->>'total_tasks')::int AS total_tasks
          FROM jsonb_array_elements(v_runs)) x;

    RETURN jsonb_build_object('applied', to_jsonb(v_applied), 'released', v_released,
                              'runs', v_runs);
END $$;"""

LLM_SETTLE_MANY_0009 = """\
CREATE OR REPLACE FUNCTION llm_settle_many(p_ids uuid[], p_sessions uuid[], p_keys uuid[],
                                p_used bigint[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_tenant uuid := app_current_tenant();
    r record;
BEGIN
    PERFORM 1 FROM sessions WHERE id = ANY(p_sessions) ORDER BY id FOR NO KEY UPDATE;
    PERFORM 1 FROM api_key_budgets WHERE api_key_id = ANY(p_keys)
        ORDER BY api_key_id FOR NO KEY UPDATE;
    FOR r IN
        WITH x AS (
            SELECT * FROM unnest(p_ids, p_sessions, p_keys, p_used) AS x(id, session_id,
                                                                     api_key_id, used)
        ), held AS (
            DELETE FROM budget_reservations b USING x WHERE b.id = x.id
            RETURNING b.id, b.tokens
        )
        SELECT x.session_id, x.api_key_id, coalesce(held.tokens, 0) AS held, x.used
        FROM x LEFT JOIN held ON held.id = x.id
    LOOP
        PERFORM llm_apply_usage(v_tenant, r.session_id, r.api_key_id, r.held, r.used);
    END LOOP;
END $$;"""


def upgrade() -> None:
    sql(UPGRADE)
    sql(RUNTIME_COMPLETE)


def downgrade() -> None:
    sql(RUNTIME_COMPLETE_0009)
    sql(LLM_SETTLE_MANY_0009)
    sql("""
    DROP FUNCTION llm_reserve_many(uuid, jsonb, interval, text);
    ALTER FUNCTION llm_reserve_each(uuid, jsonb, interval, text) RENAME TO llm_reserve_many;
    ALTER TABLE runs RESET (fillfactor);
    ALTER TABLE agent_executions RESET (fillfactor);
    ALTER TABLE tasks RESET (fillfactor);
    DROP INDEX tasks_agent_idx;
    CREATE INDEX tasks_agent_idx ON tasks (tenant_id, agent_id, status, created_at DESC);
    """)
