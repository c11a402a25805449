-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- Tasks start and finish in batches: the tasks of a tenant that start (or finish) while
-- a worker commits are written together by the next commit, in one call of
-- runtime_start (or runtime_complete), sent with the budget settlement and COMMIT
-- (agentplane.runtime.store). A batch locks what it writes in one order: the runs (by
-- id), then their tasks (by id); every other writer of a run takes the run first, so two
-- batches never deadlock on rows of the same runs. Both plan their statements
-- generically from the first call: they are key lookups (`id = ANY(array)`), and
-- PL/pgSQL would otherwise plan each of them afresh on each of a connection's first five
-- calls, which costs more than running them.

-- The writes of a batch of started tasks, given as one JSON object of arrays:
-- runs_started (run ids), tasks (task ids, now running), executions (agent executions
-- opened), transitions, events [{run_id, type, task_id, agent, message, payload}] in
-- order. The caller holds KEY SHARE on the runs and the tasks' rows.
CREATE OR REPLACE FUNCTION runtime_start(p jsonb) RETURNS void LANGUAGE plpgsql
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

-- The writes of a batch of completed tasks, given as one JSON object:
--   tasks        [{task_id, run_id, dispatch}]  the batch; a task no longer running under
--                this dispatch (cancelled, taken over) is left to the caller
--   calls, usage the batch's LLM calls and usage records (all written: they happened)
--   finishes     [{task_id, run_id, agent_id, output, prompt, completion, cost, tools,
--                  latency}]
--   executions   agent execution columns by id; transitions; tools (tool executions)
--   events       [{owner, run_id, type, task_id, agent, message, payload}] in order
--   job          the columns of the job that runs a released task, but its id and payload
--   result_chars how much of its sinks' outputs a completed run keeps as its result
-- Returns {applied: [task ids]}: the tasks it completed.
CREATE OR REPLACE FUNCTION runtime_complete(p jsonb) RETURNS jsonb LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_tenant uuid := app_current_tenant();
    v_applied uuid[];
    v_runs_ids uuid[];
    v_task_ids uuid[];
    v_queued integer;
    v_ended uuid[];
    v_ended_tasks integer[];
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
        c.error, c.created_at,
        least(c.created_at + make_interval(secs => c.latency_ms / 1000.0), now())
    FROM jsonb_populate_recordset(NULL::llm_calls, p->'calls') c;
    INSERT INTO usage_records (tenant_id, llm_call_id, user_id, api_key_id, session_id,
        run_id, task_id, agent_id, provider, model, prompt_tokens, completion_tokens,
        cached_tokens, cost_usd, cost_source, latency_ms)
    SELECT v_tenant, u.llm_call_id, u.user_id, u.api_key_id, u.session_id, u.run_id,
        u.task_id, u.agent_id, u.provider, u.model, u.prompt_tokens, u.completion_tokens,
        u.cached_tokens, u.cost_usd, u.cost_source, u.latency_ms
    FROM jsonb_populate_recordset(NULL::usage_records, p->'usage') u;

    IF cardinality(v_applied) = 0 THEN
        RETURN jsonb_build_object('applied', '[]'::jsonb);
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
    -- the setting turns off for this statement) a few upserts per task. Each task's run
    -- and agent are looked up by key: a join could start from all the agent's tasks.
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

    -- One dependency fewer per completed upstream; those left with none become queued,
    -- each with a job carrying its dispatch number (its fencing token).
    WITH n AS (
        SELECT d.task_id, count(*)::int AS n FROM task_dependencies d
        WHERE d.depends_on_task_id = ANY(v_applied) GROUP BY d.task_id
    ), released AS (
        UPDATE tasks t SET pending_deps = t.pending_deps - n.n,
            status = CASE WHEN t.pending_deps = n.n AND t.status = 'pending' THEN 'queued'
                          ELSE t.status END,
            dispatch = t.dispatch + (t.pending_deps = n.n AND t.status = 'pending')::int
        FROM n WHERE t.id = n.task_id
        RETURNING t.id, t.run_id, t.dispatch, t.status
    ), jobs AS (
        SELECT queue_enqueue(v_tenant, jsonb_agg(p->'job' || jsonb_build_object(
                   'id', queue_uuid7(),
                   'payload', jsonb_build_object('task_id', r.id, 'run_id', r.run_id,
                                                 'dispatch', r.dispatch)))) AS id
        FROM released r WHERE r.status = 'queued'
        HAVING count(*) > 0
    )
    SELECT count(*) INTO v_queued FROM jobs;

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
        RETURNING r.id, r.status, r.total_tasks, r.completed_tasks
    ), delta AS (
        -- What the tasks add to their agents' totals: rows of their own, so that tasks of
        -- one agent never wait on each other (agents_fold_totals moves them).
        INSERT INTO agent_total_deltas (tenant_id, agent_id, completed, failed, tokens,
                                        cost_usd, latency_ms)
        SELECT v_tenant, agent_id, count(*), 0, sum(prompt + completion), sum(cost),
               sum(greatest(latency, 0))
        FROM f GROUP BY agent_id
    )
    SELECT coalesce(array_agg(id ORDER BY id), '{}'),
           coalesce(array_agg(total_tasks ORDER BY id), '{}')
    INTO v_ended, v_ended_tasks FROM run
    WHERE status NOT IN ('completed', 'failed', 'cancelled')
      AND completed_tasks = total_tasks;

    -- Runs whose tasks all completed: their result is the text of the outputs nothing
    -- depends on (in creation order), their response every node's text.
    IF cardinality(v_ended) > 0 THEN
        UPDATE runs r SET status = 'completed', result = left(o.result, (p->>'result_chars')::int),
            response = o.response, completed_at = now(),
            duration_ms = (extract(epoch FROM now() - coalesce(r.started_at, r.created_at))
                           * 1000)::int,
            agents_used = o.agents
        FROM (
            SELECT t.run_id,
                   coalesce(string_agg(x.text, E'\n\n' ORDER BY t.created_at, t.node)
                            FILTER (WHERE NOT EXISTS (
                                SELECT 1 FROM task_dependencies d
                                WHERE d.tenant_id = t.tenant_id
                                  AND d.depends_on_task_id = t.id)), '') AS result,
                   jsonb_object_agg(t.node, x.text ORDER BY t.created_at, t.node) AS response,
                   count(DISTINCT t.agent_id) AS agents
            FROM tasks t
            CROSS JOIN LATERAL (SELECT CASE jsonb_typeof(t.output)
                                    WHEN 'object' THEN coalesce(t.output->>'text', '')
                                    WHEN 'null' THEN '' ELSE t.output #>> '{}' END AS text) x
            WHERE t.run_id = ANY(v_ended) AND t.status = 'completed'
            GROUP BY t.run_id
        ) o
        WHERE r.id = ANY(v_ended) AND r.id = o.run_id;
    END IF;

    -- The tasks' events, then each ended run's run.completed, appended run by run.
    PERFORM events_append_runs(v_tenant, (
        SELECT jsonb_agg(e ORDER BY k, i) FROM (
            SELECT x.e, 0 AS k, x.i FROM jsonb_array_elements(p->'events')
                WITH ORDINALITY AS x(e, i)
            WHERE (x.e->>'owner')::uuid = ANY(v_applied)
            UNION ALL
            SELECT jsonb_build_object('run_id', r.id, 'type', 'run.completed',
                                      'payload', jsonb_build_object('tasks', r.tasks)), 1, r.i
            FROM unnest(v_ended, v_ended_tasks) WITH ORDINALITY AS r(id, tasks, i)
        ) s));

    IF cardinality(v_ended) > 0 THEN
        PERFORM agents_fold_totals();
    END IF;
    RETURN jsonb_build_object('applied', to_jsonb(v_applied));
END $$;
