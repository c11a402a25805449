"""Tasks start and finish in batches: the tasks of a tenant that start (or finish)
while a worker commits are written together by the next commit, in one call of
`runtime_start` (or `runtime_complete`). Budget holds are taken in batches the same
way (`llm_reserve_many`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24

A batch locks what it writes in one order: the runs (by id), then their tasks (by id);
every other writer of a run takes the run first, so two batches never deadlock on rows
of the same runs. The holds of the batch's LLM calls are settled by `llm_settle_many`,
which takes sessions, then API key budgets, then the tenant: the order of
`llm_reserve`. `events_append` is the event log's one insert, shared by the event
service and the batches. A batch of completed tasks is rolled up into `usage_daily` by
`runtime_complete` itself, one upsert per dimension value, so the row trigger of 0008
(`tasks_usage_rollup`) now skips a statement that sets `agentplane.tasks_rolled_up`.

The two batch functions plan their statements generically from the first call: they are
key lookups (`id = ANY(array)`), and PL/pgSQL would otherwise plan each of them afresh on
each of a connection's first five calls, which costs more than running them.
"""

from agentplane.db.migrations import sql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

NOTE_MAX = 7900  # PostgreSQL refuses notification payloads of 8000 bytes or more
CARRY_MAX = 64  # bigger batches never fit in a note; their JSON is not built at all

UPGRADE = """
-- Store a run's events given as a JSON array of objects with keys type, task_id, agent,
-- message, payload: bump the run's counter (which serialises writers of the run and
-- checks that the run exists in this tenant), insert the batch numbered from it, and
-- queue one notification, delivered only if the transaction commits. An event's number
-- is its place in the array (WITH ORDINALITY). jsonb, not json: each payload is taken out
-- already in binary form, where json would parse it a second time into the column. The
-- note carries the events when they fit: the array as given, after the numbers of the
-- first and last and their created_at (`now()`, the transaction's timestamp), from which
-- a follower makes each event whole. Returns the run's last sequence number, NULL if no
-- such run.
CREATE FUNCTION events_append(p_tenant uuid, p_run uuid, p_n integer, p_rows jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
BEGIN
    WITH counter AS (
        INSERT INTO event_counters AS c (tenant_id, run_id, last_seq)
        SELECT r.tenant_id, r.id, p_n FROM runs r
        WHERE r.id = p_run AND r.tenant_id = p_tenant
        ON CONFLICT (run_id) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq
        RETURNING c.tenant_id, c.last_seq
    ), batch AS NOT MATERIALIZED (
        SELECT * FROM ROWS FROM (
            jsonb_to_recordset(p_rows)
                AS (type text, task_id uuid, agent text, message text, payload jsonb)
        ) WITH ORDINALITY AS e(type, task_id, agent, message, payload, i)
    ), inserted AS (
        INSERT INTO events (tenant_id, run_id, seq, task_id, type, agent, message, payload)
        SELECT counter.tenant_id, p_run, counter.last_seq - p_n + e.i,
               e.task_id, e.type, e.agent, e.message, e.payload
        FROM counter, batch e
    ), note AS (
        SELECT concat_ws(' ', counter.tenant_id, p_run::text,
                         counter.last_seq - p_n + 1, counter.last_seq) AS head,
               CASE WHEN p_n <= {carry_max} THEN
                   'E ' || concat_ws(' ', counter.tenant_id, p_run::text,
                                     counter.last_seq - p_n + 1, counter.last_seq,
                                     to_char(now() AT TIME ZONE 'UTC',
                                             'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                                     p_rows::text)
               END AS carried,
               counter.last_seq
        FROM counter
    )
    SELECT last_seq INTO v_last FROM (
        SELECT last_seq,
               pg_notify('agentplane_events',
                         CASE WHEN octet_length(carried) <= {note_max} THEN carried
                              ELSE 'A ' || head END)
        FROM note
    ) n;
    RETURN v_last;
END $$;

-- The completion of a batch of tasks rolls up the batch at once (runtime_complete):
-- the row trigger leaves the statement that completes them alone.
DROP TRIGGER tasks_usage_rollup ON tasks;
CREATE TRIGGER tasks_usage_rollup AFTER UPDATE OF status ON tasks FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND (OLD.status IN ('completed', 'failed') OR NEW.status IN ('completed', 'failed'))
          AND current_setting('agentplane.tasks_rolled_up', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION usage_tasks_rollup();

-- Events of several runs, given as one array of events with their run_id, in order:
-- each run's appended by events_append, the runs in id order (writers of several runs
-- take their counters in that order, so they never deadlock on them).
CREATE FUNCTION events_append_runs(p_tenant uuid, p_events jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT e.run_id, count(*)::int AS n,
               jsonb_agg(jsonb_build_object('type', e.type, 'task_id', e.task_id,
                                            'agent', e.agent, 'message', e.message,
                                            'payload', e.payload) ORDER BY e.i) AS rows
        FROM ROWS FROM (jsonb_to_recordset(coalesce(p_events, '[]')) AS (run_id uuid,
                        type text, task_id uuid, agent text, message text, payload jsonb))
             WITH ORDINALITY AS e(run_id, type, task_id, agent, message, payload, i)
        GROUP BY e.run_id ORDER BY e.run_id
    LOOP
        PERFORM events_append(p_tenant, g.run_id, g.n, g.rows);
    END LOOP;
END $$;

-- Holds for many calls of one tenant at once, each taken (or refused) as llm_reserve
-- takes it: the result has, in order, {"id": hold} or {"code": SQLSTATE, "message": ...}
-- for a refusal. The sessions and API key budgets are locked first, in id order, before
-- the tenant's row: llm_reserve's order, so that batches and single holds never deadlock.
-- Each hold is a subtransaction: a refusal undoes its own updates only.
CREATE FUNCTION llm_reserve_many(p_tenant uuid, p_holds jsonb, p_ttl interval,
                                 p_lock_timeout text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    h record;
    v_id uuid;
    v_out jsonb := '[]';
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    PERFORM 1 FROM sessions
    WHERE id IN (SELECT (x->>'session_id')::uuid FROM jsonb_array_elements(p_holds) x)
    ORDER BY id FOR NO KEY UPDATE;
    PERFORM 1 FROM api_key_budgets
    WHERE api_key_id IN (SELECT (x->>'api_key_id')::uuid FROM jsonb_array_elements(p_holds) x)
    ORDER BY api_key_id FOR NO KEY UPDATE;
    FOR h IN SELECT * FROM jsonb_to_recordset(p_holds)
                 AS x(session_id uuid, api_key_id uuid, tokens bigint)
    LOOP
        BEGIN
            v_id := llm_reserve(p_tenant, h.session_id, h.api_key_id, h.tokens, p_ttl,
                                p_lock_timeout);
            v_out := v_out || jsonb_build_object('id', v_id);
        EXCEPTION WHEN SQLSTATE 'AP402' OR SQLSTATE 'AP404' OR SQLSTATE 'AP409'
                       OR SQLSTATE 'AP422' THEN
            v_out := v_out || jsonb_build_object('code', SQLSTATE, 'message', SQLERRM);
        END;
    END LOOP;
    RETURN v_out;
END $$;

-- Settle holds, each to what its call used (a hold that is gone, swept or never taken
-- (NULL), has its use applied directly), in the transaction that records the calls.
-- Rows are locked in llm_reserve's order: sessions, API key budgets, then the tenant.
CREATE FUNCTION llm_settle_many(p_ids uuid[], p_sessions uuid[], p_keys uuid[],
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
END $$;

-- The writes of a batch of started tasks, given as one JSON object of arrays:
-- runs_started (run ids), tasks (task ids, now running), executions (agent executions
-- opened), transitions, events [{run_id, type, task_id, agent, message, payload}] in
-- order. The caller holds KEY SHARE on the runs and the tasks' rows.
CREATE FUNCTION runtime_start(p jsonb) RETURNS void LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_tenant uuid := app_current_tenant();
    v_runs uuid[] := ARRAY(SELECT jsonb_array_elements_text(p->'runs_started')::uuid);
BEGIN
    IF cardinality(v_runs) > 0 THEN
        PERFORM 1 FROM runs WHERE id = ANY(v_runs) ORDER BY id FOR NO KEY UPDATE;
        UPDATE runs SET status = 'running', started_at = coalesce(started_at, now())
        WHERE id = ANY(v_runs);
    END IF;
    UPDATE tasks SET status = 'running', started_at = coalesce(started_at, now()),
        deadline_at = now() + make_interval(secs => coalesce(timeout_s, 300))
    WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text(p->'tasks')::uuid));
    INSERT INTO agent_executions (tenant_id, id, run_id, task_id, agent_id, attempt, state,
                                  strategy, model_used, input, messages, metadata)
    SELECT v_tenant, x.id, x.run_id, x.task_id, x.agent_id, x.attempt, x.state, x.strategy,
           x.model_used, x.input, x.messages, x.metadata
    FROM jsonb_populate_recordset(NULL::agent_executions, p->'executions') x;
    INSERT INTO agent_execution_transitions (tenant_id, agent_execution_id, seq, from_state,
                                             to_state, note, at)
    SELECT v_tenant, x.agent_execution_id, x.seq, x.from_state, x.to_state, x.note, x.at
    FROM jsonb_to_recordset(p->'transitions') AS x(agent_execution_id uuid, seq integer,
        from_state text, to_state text, note text, at timestamptz);
    PERFORM events_append_runs(v_tenant, p->'events');
END $$;

-- The writes of a batch of completed tasks, given as one JSON object of arrays:
--   tasks        [{task_id, run_id, dispatch}]  the batch; a task no longer running under
--                this dispatch (cancelled, taken over) is left to the caller
--   calls, usage the batch's LLM calls and usage records (all written: they happened)
--   finishes     [{task_id, run_id, agent_id, output, prompt, completion, cost, tools,
--                  latency}]
--   executions   agent execution columns by id; transitions; tools (tool executions)
--   events       [{owner, run_id, type, task_id, agent, message, payload}] in order
-- Returns {applied: [task ids], released: [dependants, with their status], runs:
-- [counters of each run, with outputs when all its tasks completed]}.
CREATE FUNCTION runtime_complete(p jsonb) RETURNS jsonb LANGUAGE plpgsql
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
END $$;
"""


def upgrade() -> None:
    sql(UPGRADE.replace("{carry_max}", str(CARRY_MAX)).replace("{note_max}", str(NOTE_MAX)))


def downgrade() -> None:
    sql("""
    DROP TRIGGER tasks_usage_rollup ON tasks;
    CREATE TRIGGER tasks_usage_rollup AFTER UPDATE OF status ON tasks FOR EACH ROW
        WHEN (OLD.status IS DISTINCT FROM NEW.status
              AND (OLD.status IN ('completed', 'failed') OR NEW.status IN ('completed', 'failed')))
        EXECUTE FUNCTION usage_tasks_rollup();
    DROP FUNCTION runtime_complete(jsonb);
    DROP FUNCTION runtime_start(jsonb);
    DROP FUNCTION llm_settle_many(uuid[], uuid[], uuid[], bigint[]);
    DROP FUNCTION llm_reserve_many(uuid, jsonb, interval, text);
    DROP FUNCTION events_append_runs(uuid, jsonb);
    DROP FUNCTION events_append(uuid, uuid, integer, jsonb);
    """)
