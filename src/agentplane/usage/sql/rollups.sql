-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- usage_daily, the one rollup every report reads: per tenant and UTC day, one row per
-- dimension value (the tenant itself, a user, an API key, an agent, a project, a model as
-- `provider/model`, a tool). Triggers keep it in the transaction that writes the fact:
-- usage records (statement triggers, so a COPY of many rows makes one upsert per key), a
-- task entering or leaving completed/failed, tool executions, a run entering or leaving
-- an end state; a batch of completed tasks is rolled up by runtime_complete itself.
-- Nothing ever rescans raw rows.
--
-- Hot rows are striped: concurrent writers of one tenant would otherwise queue on the
-- tenant's row of the day until they commit. A transaction takes a free stripe of its
-- tenant (a transaction-level advisory lock, tried from 0 up, so a quiet tenant uses one
-- stripe) and only ever writes rows of that stripe: writers never wait on each other's
-- rows and cannot deadlock on them. Readers sum the stripes.

-- This transaction's stripe of the tenant's rollup rows (64 stripes).
CREATE OR REPLACE FUNCTION usage_stripe(p_tenant uuid) RETURNS smallint LANGUAGE plpgsql AS $$
DECLARE
    setting text := 'agentplane_stripe.t' || replace(p_tenant::text, '-', '');
    held text := current_setting(setting, true);
    lock_key integer := hashtext('agentplane.usage_daily:' || p_tenant::text);
    s integer;
BEGIN
    IF held IS NOT NULL AND held <> '' THEN
        RETURN held::smallint;
    END IF;
    FOR s IN 0..64 - 1 LOOP
        IF pg_try_advisory_xact_lock(lock_key, s) THEN
            PERFORM set_config(setting, s::text, true);
            RETURN s;
        END IF;
    END LOOP;
    -- More concurrent writers than stripes: wait for one.
    s := pg_backend_pid() % 64;
    PERFORM pg_advisory_xact_lock(lock_key, s);
    PERFORM set_config(setting, s::text, true);
    RETURN s;
END $$;

CREATE OR REPLACE FUNCTION usage_utc_day(t timestamptz) RETURNS date
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT (t AT TIME ZONE 'UTC')::date $$;

-- Usage records -> usage_daily, then alerts of the tenants written to.
CREATE OR REPLACE FUNCTION usage_records_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    WITH stripes AS MATERIALIZED (
        SELECT tenant_id, usage_stripe(tenant_id) AS stripe
        FROM (SELECT DISTINCT tenant_id FROM new_rows) d
    )
    INSERT INTO usage_daily AS u (tenant_id, day, dimension, key, stripe, calls, prompt_tokens,
                                  completion_tokens, cached_tokens, cost_usd, unpriced_calls,
                                  llm_latency_ms)
    SELECT r.tenant_id, usage_utc_day(r.created_at), x.dimension, x.key, s.stripe, count(*),
           sum(r.prompt_tokens), sum(r.completion_tokens), sum(r.cached_tokens),
           coalesce(sum(r.cost_usd), 0), count(*) FILTER (WHERE r.cost_usd IS NULL),
           coalesce(sum(r.latency_ms), 0)
    FROM new_rows r
    JOIN stripes s ON s.tenant_id = r.tenant_id
    LEFT JOIN agents a ON a.tenant_id = r.tenant_id AND a.id = r.agent_id
    CROSS JOIN LATERAL (VALUES ('tenant', ''), ('model', r.provider || '/' || r.model),
                               ('user', r.user_id::text), ('api_key', r.api_key_id::text),
                               ('agent', r.agent_id::text), ('project', a.project_id::text)
                       ) AS x (dimension, key)
    WHERE x.key IS NOT NULL
    GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant_id, dimension, key, day, stripe) DO UPDATE SET
        calls = u.calls + excluded.calls,
        prompt_tokens = u.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = u.completion_tokens + excluded.completion_tokens,
        cached_tokens = u.cached_tokens + excluded.cached_tokens,
        cost_usd = u.cost_usd + excluded.cost_usd,
        unpriced_calls = u.unpriced_calls + excluded.unpriced_calls,
        llm_latency_ms = u.llm_latency_ms + excluded.llm_latency_ms;

    FOR t IN
        SELECT d.tenant_id, (SELECT r.run_id FROM new_rows r
                             WHERE r.tenant_id = d.tenant_id AND r.run_id IS NOT NULL
                             LIMIT 1) AS run_id
        FROM (SELECT DISTINCT tenant_id FROM new_rows) d
        WHERE EXISTS (SELECT 1 FROM usage_alerts a WHERE a.tenant_id = d.tenant_id AND a.enabled)
    LOOP
        PERFORM usage_check_alerts(t.tenant_id, t.run_id);
    END LOOP;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER usage_records_rollup AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_records_rollup();

-- A task entering completed/failed counts on the day it ended; leaving it (a failed task
-- retried by hand) takes the count back, so the rollup always equals the tasks' states.
-- The statement of runtime_complete that completes a batch (agentplane.tasks_rolled_up
-- on) is left alone: it rolls up the whole batch at once.
CREATE OR REPLACE FUNCTION usage_tasks_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
    project uuid;
    v_stripe smallint := usage_stripe(NEW.tenant_id);
    sign integer;
    t record;
BEGIN
    SELECT user_id, api_key_id INTO r FROM runs WHERE tenant_id = NEW.tenant_id AND id = NEW.run_id;
    SELECT project_id INTO project FROM agents
    WHERE tenant_id = NEW.tenant_id AND id = NEW.agent_id;
    FOR t IN
        SELECT OLD.status AS status, OLD.completed_at AS at, OLD.duration_ms AS ms, -1 AS sign
        WHERE OLD.status IN ('completed', 'failed')
        UNION ALL
        SELECT NEW.status, NEW.completed_at, NEW.duration_ms, 1
        WHERE NEW.status IN ('completed', 'failed')
    LOOP
        sign := t.sign;
        INSERT INTO usage_daily AS u (tenant_id, day, dimension, key, stripe, tasks_completed,
                                      tasks_failed, task_duration_ms)
        SELECT NEW.tenant_id, usage_utc_day(coalesce(t.at, now())), x.dimension, x.key, v_stripe,
               sign * (t.status = 'completed')::int, sign * (t.status = 'failed')::int,
               sign * coalesce(t.ms, 0)
        FROM (VALUES ('tenant', ''), ('agent', NEW.agent_id::text), ('user', r.user_id::text),
                     ('api_key', r.api_key_id::text), ('project', project::text)
             ) AS x (dimension, key)
        WHERE x.key IS NOT NULL
        ON CONFLICT (tenant_id, dimension, key, day, stripe) DO UPDATE SET
            tasks_completed = u.tasks_completed + excluded.tasks_completed,
            tasks_failed = u.tasks_failed + excluded.tasks_failed,
            task_duration_ms = u.task_duration_ms + excluded.task_duration_ms;
    END LOOP;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER tasks_usage_rollup AFTER UPDATE OF status ON tasks FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND (OLD.status IN ('completed', 'failed') OR NEW.status IN ('completed', 'failed'))
          AND current_setting('agentplane.tasks_rolled_up', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION usage_tasks_rollup();

CREATE OR REPLACE FUNCTION usage_tools_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH stripes AS MATERIALIZED (
        SELECT tenant_id, usage_stripe(tenant_id) AS stripe
        FROM (SELECT DISTINCT tenant_id FROM new_rows) d
    )
    INSERT INTO usage_daily AS u (tenant_id, day, dimension, key, stripe, tool_calls,
                                  tool_failures)
    SELECT r.tenant_id, usage_utc_day(r.created_at), x.dimension, x.key, s.stripe, count(*),
           count(*) FILTER (WHERE NOT r.success)
    FROM new_rows r
    JOIN stripes s ON s.tenant_id = r.tenant_id
    CROSS JOIN LATERAL (VALUES ('tenant', ''), ('agent', r.agent_id::text),
                               ('tool', r.tool_name)) AS x (dimension, key)
    GROUP BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant_id, dimension, key, day, stripe) DO UPDATE SET
        tool_calls = u.tool_calls + excluded.tool_calls,
        tool_failures = u.tool_failures + excluded.tool_failures;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER tool_executions_usage_rollup AFTER INSERT ON tool_executions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_tools_rollup();

-- Like tasks: a run entering an end state counts on the day it ended, and leaving one (a
-- failed run that runs on after a task is retried by hand) takes the count back.
CREATE OR REPLACE FUNCTION usage_runs_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_stripe smallint := usage_stripe(NEW.tenant_id);
    t record;
BEGIN
    FOR t IN
        SELECT OLD.status AS status, OLD.completed_at AS at, -1 AS sign
        WHERE OLD.status IN ('completed', 'failed', 'cancelled')
        UNION ALL
        SELECT NEW.status, NEW.completed_at, 1
        WHERE NEW.status IN ('completed', 'failed', 'cancelled')
    LOOP
        INSERT INTO usage_daily AS u (tenant_id, day, dimension, key, stripe, runs_completed,
                                      runs_failed, runs_cancelled)
        VALUES (NEW.tenant_id, usage_utc_day(coalesce(t.at, now())), 'tenant', '', v_stripe,
                t.sign * (t.status = 'completed')::int, t.sign * (t.status = 'failed')::int,
                t.sign * (t.status = 'cancelled')::int)
        ON CONFLICT (tenant_id, dimension, key, day, stripe) DO UPDATE SET
            runs_completed = u.runs_completed + excluded.runs_completed,
            runs_failed = u.runs_failed + excluded.runs_failed,
            runs_cancelled = u.runs_cancelled + excluded.runs_cancelled;
    END LOOP;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER runs_usage_rollup AFTER UPDATE OF status ON runs FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND (OLD.status IN ('completed', 'failed', 'cancelled')
               OR NEW.status IN ('completed', 'failed', 'cancelled')))
    EXECUTE FUNCTION usage_runs_rollup();
