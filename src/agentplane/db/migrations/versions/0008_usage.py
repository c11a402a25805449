"""Usage analytics: daily aggregates, billing periods, alerts, materialized views,
retention policies and the archive schema.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24

`usage_daily` is the one rollup every report reads: per tenant and UTC day, one row per
dimension value (the tenant itself, a user, an API key, an agent, a project, a model as
`provider/model`, a tool). Triggers keep it in the transaction that writes the fact
(Shannon's semantics): usage records (statement triggers, so a COPY of many rows makes one
upsert per key), a task entering or leaving completed/failed, tool executions, a run
entering or leaving an end state. Nothing ever rescans raw rows.

Hot rows are striped: concurrent writers of one tenant would otherwise queue on the
tenant's row of the day until they commit. A transaction takes a free stripe of its
tenant (a transaction-level advisory lock, tried from 0 up, so a quiet tenant uses one
stripe) and only ever writes rows of that stripe: writers never wait on each other's rows
and cannot deadlock on them. Readers sum the stripes.

Materialized views cannot carry row-level security, so they live in the `analytics`
schema, which the application role cannot read; it reads them through security-barrier
views in `public` filtered on the tenant. `archive` holds what retention archived; the
application role has no access to it either.

Maintenance (partitions ahead, retention, billing period close, view refresh) is a set of
SECURITY DEFINER functions that `system_tasks` schedules: every queue worker claims the
due ones (agentplane.ops.maintenance), so an installation maintains itself.
"""

from agentplane.db.migrations import sql, tenant_rls

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

STRIPES = 64
TABLES = ("usage_daily", "billing_periods", "usage_alerts", "usage_alert_firings")

UPGRADE = """
CREATE TABLE usage_daily (
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day                date NOT NULL,
    dimension          text NOT NULL CHECK (dimension IN ('tenant', 'user', 'api_key', 'agent',
                                                          'project', 'model', 'tool')),
    key                text NOT NULL,
    stripe             smallint NOT NULL,
    calls              bigint NOT NULL DEFAULT 0,
    prompt_tokens      bigint NOT NULL DEFAULT 0,
    completion_tokens  bigint NOT NULL DEFAULT 0,
    cached_tokens      bigint NOT NULL DEFAULT 0,
    cost_usd           numeric(24, 10) NOT NULL DEFAULT 0,
    unpriced_calls     bigint NOT NULL DEFAULT 0,
    llm_latency_ms     bigint NOT NULL DEFAULT 0,
    tasks_completed    bigint NOT NULL DEFAULT 0,
    tasks_failed       bigint NOT NULL DEFAULT 0,
    task_duration_ms   bigint NOT NULL DEFAULT 0,
    tool_calls         bigint NOT NULL DEFAULT 0,
    tool_failures      bigint NOT NULL DEFAULT 0,
    runs_completed     bigint NOT NULL DEFAULT 0,
    runs_failed        bigint NOT NULL DEFAULT 0,
    runs_cancelled     bigint NOT NULL DEFAULT 0,
    -- dimension first: every report reads one dimension of one tenant over a day range.
    PRIMARY KEY (tenant_id, dimension, key, day, stripe)
);
CREATE INDEX usage_daily_day_idx ON usage_daily (tenant_id, dimension, day);

-- This transaction's stripe of the tenant's rollup rows (see the revision's notes).
CREATE FUNCTION usage_stripe(p_tenant uuid) RETURNS smallint LANGUAGE plpgsql AS $$
DECLARE
    setting text := 'agentplane_stripe.t' || replace(p_tenant::text, '-', '');
    held text := current_setting(setting, true);
    lock_key integer := hashtext('agentplane.usage_daily:' || p_tenant::text);
    s integer;
BEGIN
    IF held IS NOT NULL AND held <> '' THEN
        RETURN held::smallint;
    END IF;
    FOR s IN 0..{stripes} - 1 LOOP
        IF pg_try_advisory_xact_lock(lock_key, s) THEN
            PERFORM set_config(setting, s::text, true);
            RETURN s;
        END IF;
    END LOOP;
    -- More concurrent writers than stripes: wait for one.
    s := pg_backend_pid() % {stripes};
    PERFORM pg_advisory_xact_lock(lock_key, s);
    PERFORM set_config(setting, s::text, true);
    RETURN s;
END $$;

CREATE FUNCTION usage_utc_day(t timestamptz) RETURNS date
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT (t AT TIME ZONE 'UTC')::date $$;

-- Usage records -> usage_daily, then alerts of the tenants written to.
CREATE FUNCTION usage_records_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER usage_records_rollup AFTER INSERT ON usage_records
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_records_rollup();

-- A task entering completed/failed counts on the day it ended; leaving it (a failed task
-- retried by hand) takes the count back, so the rollup always equals the tasks' states.
CREATE FUNCTION usage_tasks_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER tasks_usage_rollup AFTER UPDATE OF status ON tasks FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND (OLD.status IN ('completed', 'failed') OR NEW.status IN ('completed', 'failed')))
    EXECUTE FUNCTION usage_tasks_rollup();

CREATE FUNCTION usage_tools_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER tool_executions_usage_rollup AFTER INSERT ON tool_executions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_tools_rollup();

-- Like tasks: a run entering an end state counts on the day it ended, and leaving one (a
-- failed run that runs on after a task is retried by hand) takes the count back.
CREATE FUNCTION usage_runs_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER runs_usage_rollup AFTER UPDATE OF status ON runs FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND (OLD.status IN ('completed', 'failed', 'cancelled')
               OR NEW.status IN ('completed', 'failed', 'cancelled')))
    EXECUTE FUNCTION usage_runs_rollup();

-- One row per tenant and closed month (Shaman's organization_usage per billing period).
-- The open period is read live from usage_daily; the close job freezes it at period end.
CREATE TABLE billing_periods (
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    period_start       date NOT NULL,
    period_end         date NOT NULL,
    status             text NOT NULL DEFAULT 'closed' CHECK (status IN ('open', 'closed')),
    runs_completed     bigint NOT NULL DEFAULT 0,
    runs_failed        bigint NOT NULL DEFAULT 0,
    runs_cancelled     bigint NOT NULL DEFAULT 0,
    calls              bigint NOT NULL DEFAULT 0,
    prompt_tokens      bigint NOT NULL DEFAULT 0,
    completion_tokens  bigint NOT NULL DEFAULT 0,
    cached_tokens      bigint NOT NULL DEFAULT 0,
    cost_usd           numeric(24, 10) NOT NULL DEFAULT 0,
    token_limit        bigint,
    closed_at          timestamptz,
    PRIMARY KEY (tenant_id, period_start),
    CHECK (period_end > period_start)
);

-- Thresholds on a tenant's, a user's or an API key's usage in a day or a month: absolute
-- (tokens or USD), or a percentage of the budget (the tenant's monthly token limit, the
-- key's token budget). Fired at most once per period (usage_alert_firings' key).
CREATE TABLE usage_alerts (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    scope       text NOT NULL CHECK (scope IN ('tenant', 'user', 'api_key')),
    subject_id  uuid,
    metric      text NOT NULL CHECK (metric IN ('tokens', 'cost_usd')),
    period      text NOT NULL CHECK (period IN ('day', 'month')),
    threshold   numeric(24, 6) NOT NULL CHECK (threshold > 0),
    unit        text NOT NULL DEFAULT 'absolute' CHECK (unit IN ('absolute', 'percent')),
    enabled     boolean NOT NULL DEFAULT true,
    created_by  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name),
    CHECK ((scope = 'tenant') = (subject_id IS NULL)),
    CHECK (unit = 'absolute' OR (metric = 'tokens' AND scope <> 'user'))
);
CREATE INDEX usage_alerts_enabled_idx ON usage_alerts (tenant_id) WHERE enabled;
CREATE TRIGGER usage_alerts_updated_at BEFORE UPDATE ON usage_alerts
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE usage_alert_firings (
    tenant_id     uuid NOT NULL,
    alert_id      uuid NOT NULL,
    period_start  date NOT NULL,
    value         numeric(24, 10) NOT NULL,
    threshold     numeric(24, 10) NOT NULL,
    run_id        uuid,
    fired_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, alert_id, period_start),
    FOREIGN KEY (tenant_id, alert_id) REFERENCES usage_alerts (tenant_id, id) ON DELETE CASCADE
);

-- In the transaction that wrote usage: each enabled alert of the tenant not fired in its
-- current period is compared with the period's rollup rows (a few rows, never raw ones).
-- A crossing is recorded once (the firing's key), audited, appended as a budget.warning
-- event to the run that made the call (when there is one) and announced by NOTIFY.
CREATE FUNCTION usage_check_alerts(p_tenant uuid, p_run uuid) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    a record;
    v_today date := usage_utc_day(now());
    v_since date;
    v_value numeric;
    v_budget numeric;
    v_limit numeric;
    v_fired integer := 0;
    v_seq bigint;
    v_payload jsonb;
BEGIN
    FOR a IN SELECT * FROM usage_alerts WHERE tenant_id = p_tenant AND enabled LOOP
        v_since := CASE a.period WHEN 'day' THEN v_today
                   ELSE date_trunc('month', v_today)::date END;
        CONTINUE WHEN EXISTS (SELECT 1 FROM usage_alert_firings f WHERE f.tenant_id = p_tenant
                              AND f.alert_id = a.id AND f.period_start = v_since);
        SELECT coalesce(sum(CASE a.metric WHEN 'tokens' THEN d.prompt_tokens + d.completion_tokens
                                 ELSE d.cost_usd END), 0)
        INTO v_value FROM usage_daily d
        WHERE d.tenant_id = p_tenant AND d.dimension = a.scope
          AND d.key = coalesce(a.subject_id::text, '') AND d.day BETWEEN v_since AND v_today;
        IF a.unit = 'percent' THEN
            v_budget := CASE a.scope
                WHEN 'tenant' THEN (SELECT token_limit FROM tenants WHERE id = p_tenant)
                ELSE (SELECT token_budget FROM api_key_budgets
                      WHERE tenant_id = p_tenant AND api_key_id = a.subject_id) END;
            CONTINUE WHEN v_budget IS NULL OR v_budget <= 0;
            v_limit := v_budget * a.threshold / 100;
        ELSE
            v_limit := a.threshold;
        END IF;
        CONTINUE WHEN v_value < v_limit;
        INSERT INTO usage_alert_firings (tenant_id, alert_id, period_start, value, threshold,
                                         run_id)
        VALUES (p_tenant, a.id, v_since, v_value, v_limit, p_run)
        ON CONFLICT DO NOTHING;
        CONTINUE WHEN NOT FOUND;
        v_fired := v_fired + 1;
        v_payload := jsonb_build_object(
            'alert_id', a.id, 'name', a.name, 'scope', a.scope, 'subject_id', a.subject_id,
            'metric', a.metric, 'period', a.period, 'period_start', v_since,
            'unit', a.unit, 'threshold', a.threshold, 'limit', v_limit, 'value', v_value);
        INSERT INTO audit_logs (tenant_id, event_type, resource_type, resource_id, details)
        VALUES (p_tenant, 'budget_warning', 'usage_alert', a.id::text, v_payload);
        IF p_run IS NOT NULL AND EXISTS (SELECT 1 FROM runs WHERE tenant_id = p_tenant
                                         AND id = p_run) THEN
            INSERT INTO event_counters AS c (tenant_id, run_id, last_seq)
            VALUES (p_tenant, p_run, 1)
            ON CONFLICT (run_id) DO UPDATE SET last_seq = c.last_seq + 1
            RETURNING c.last_seq INTO v_seq;
            INSERT INTO events (tenant_id, run_id, seq, type, message, payload)
            VALUES (p_tenant, p_run, v_seq, 'budget.warning',
                    format('alert %s: %s %s of %s', a.name, v_value, a.metric, v_limit),
                    v_payload);
            -- The event log's note for "read the table" (see agentplane.events.store).
            PERFORM pg_notify('agentplane_events',
                              concat_ws(' ', 'A', p_tenant, p_run, v_seq, v_seq));
        END IF;
        PERFORM pg_notify('agentplane_usage_alerts',
                          (jsonb_build_object('tenant_id', p_tenant) || v_payload)::text);
    END LOOP;
    RETURN v_fired;
END $$;

-- Retention: per table, how long rows stay and what happens after (archive: moved to the
-- `archive` schema; delete: dropped). Operators' table: the application cannot touch it.
CREATE TABLE retention_policies (
    table_name      text PRIMARY KEY
                    CHECK (table_name IN ('usage_records', 'events', 'llm_calls')),
    retention_days  integer NOT NULL CHECK (retention_days >= 1),
    action          text NOT NULL CHECK (action IN ('archive', 'delete')),
    enabled         boolean NOT NULL DEFAULT true,
    last_run_at     timestamptz,
    last_result     jsonb,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO retention_policies (table_name, retention_days, action) VALUES
    ('usage_records', 730, 'archive'), ('events', 365, 'archive'), ('llm_calls', 180, 'archive');
REVOKE ALL ON retention_policies FROM {app};

CREATE SCHEMA archive;
REVOKE ALL ON SCHEMA archive FROM PUBLIC;

CREATE SCHEMA analytics;
REVOKE ALL ON SCHEMA analytics FROM PUBLIC;

-- Tokyo-IA / AutoSDLC agent_performance_daily, from the rollup (refresh reads no raw rows).
CREATE MATERIALIZED VIEW analytics.agent_performance_daily AS
SELECT d.tenant_id, d.key::uuid AS agent_id, a.slug AS agent, d.day,
       sum(d.tasks_completed)::bigint AS tasks_completed,
       sum(d.tasks_failed)::bigint AS tasks_failed,
       CASE WHEN sum(d.tasks_completed + d.tasks_failed) = 0 THEN NULL
            ELSE round(100.0 * sum(d.tasks_completed) / sum(d.tasks_completed + d.tasks_failed), 2)
       END AS success_rate,
       CASE WHEN sum(d.tasks_completed + d.tasks_failed) = 0 THEN NULL
            ELSE round(sum(d.task_duration_ms)::numeric / sum(d.tasks_completed + d.tasks_failed))
       END AS avg_duration_ms,
       sum(d.calls)::bigint AS llm_calls,
       sum(d.prompt_tokens + d.completion_tokens)::bigint AS tokens,
       sum(d.cost_usd) AS cost_usd,
       sum(d.tool_calls)::bigint AS tool_calls
FROM usage_daily d
LEFT JOIN agents a ON a.tenant_id = d.tenant_id AND a.id = d.key::uuid
WHERE d.dimension = 'agent'
GROUP BY d.tenant_id, d.key, a.slug, d.day;
CREATE UNIQUE INDEX agent_performance_daily_key
    ON analytics.agent_performance_daily (tenant_id, agent_id, day);

CREATE MATERIALIZED VIEW analytics.project_task_stats AS
SELECT d.tenant_id, d.key::uuid AS project_id, p.name AS project,
       sum(d.tasks_completed + d.tasks_failed)::bigint AS total_tasks,
       sum(d.tasks_completed)::bigint AS completed_tasks,
       sum(d.tasks_failed)::bigint AS failed_tasks,
       CASE WHEN sum(d.tasks_completed + d.tasks_failed) = 0 THEN NULL
            ELSE round(100.0 * sum(d.tasks_completed) / sum(d.tasks_completed + d.tasks_failed), 2)
       END AS success_rate,
       CASE WHEN sum(d.tasks_completed + d.tasks_failed) = 0 THEN NULL
            ELSE round(sum(d.task_duration_ms)::numeric / sum(d.tasks_completed + d.tasks_failed))
       END AS avg_duration_ms,
       sum(d.prompt_tokens + d.completion_tokens)::bigint AS tokens,
       sum(d.cost_usd) AS cost_usd,
       min(d.day) AS first_day, max(d.day) AS last_day
FROM usage_daily d
LEFT JOIN projects p ON p.tenant_id = d.tenant_id AND p.id = d.key::uuid
WHERE d.dimension = 'project'
GROUP BY d.tenant_id, d.key, p.name;
CREATE UNIQUE INDEX project_task_stats_key ON analytics.project_task_stats (tenant_id, project_id);

CREATE VIEW agent_performance_daily WITH (security_barrier) AS
SELECT * FROM analytics.agent_performance_daily WHERE tenant_id = app_current_tenant();
CREATE VIEW project_task_stats WITH (security_barrier) AS
SELECT * FROM analytics.project_task_stats WHERE tenant_id = app_current_tenant();
REVOKE ALL ON agent_performance_daily, project_task_stats FROM {app};
GRANT SELECT ON agent_performance_daily, project_task_stats TO {app};

-- Maintenance, as the owner (SECURITY DEFINER: workers connect as the application role
-- and run these through the system tasks below). None takes an argument a caller could
-- use to retire data early: each applies the operators' settings as of now().

-- A partitioned table's partitions with their bounds, from the catalog.
CREATE FUNCTION ops_partitions(p_table text)
    RETURNS TABLE (partition text, range_from timestamptz, range_to timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT c.relname::text, b[1]::timestamptz, b[2]::timestamptz
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                    'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)') AS b
    WHERE i.inhparent = to_regclass('public.' || quote_ident(p_table))
    ORDER BY 2
$$;

-- The current month and `months` ahead of every partitioned table; the partitions' names.
CREATE FUNCTION ops_ensure_partitions(p_months integer) RETURNS text[]
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT array_agg(name ORDER BY name) FROM (
        SELECT usage_records_create_partition(now() + make_interval(months => m)) AS name
        FROM generate_series(0, least(greatest(p_months, 0), 120)) AS m
        UNION ALL
        SELECT events_create_partition(now() + make_interval(months => m))
        FROM generate_series(0, least(greatest(p_months, 0), 120)) AS m
    ) x
$$;

-- Retention: each enabled policy. Partitioned tables lose whole months whose end is
-- older than the policy's days (archive: detached into the `archive` schema, no row
-- copied; delete: dropped), which leaves no dead tuples. llm_calls rows are deleted (or
-- moved). What each did is returned and kept on the policy.
CREATE FUNCTION ops_run_retention() RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    p record;
    part record;
    names text[];
    n bigint;
    result jsonb;
    done jsonb := '{}';
BEGIN
    -- Retiring a partition locks its parent: give up rather than queue writers behind us.
    PERFORM set_config('lock_timeout', '5s', true);
    FOR p IN SELECT * FROM retention_policies WHERE enabled ORDER BY table_name LOOP
        result := jsonb_build_object('action', p.action, 'retention_days', p.retention_days);
        IF p.table_name = 'llm_calls' THEN
            IF p.action = 'archive' THEN
                CREATE TABLE IF NOT EXISTS archive.llm_calls (LIKE public.llm_calls);
                WITH moved AS (
                    DELETE FROM public.llm_calls
                    WHERE created_at < now() - make_interval(days => p.retention_days)
                    RETURNING *)
                INSERT INTO archive.llm_calls SELECT * FROM moved;
            ELSE
                DELETE FROM public.llm_calls
                WHERE created_at < now() - make_interval(days => p.retention_days);
            END IF;
            GET DIAGNOSTICS n = ROW_COUNT;
            result := result || jsonb_build_object('rows', n);
        ELSE
            names := '{}';
            FOR part IN SELECT * FROM ops_partitions(p.table_name)
                        WHERE range_to <= now() - make_interval(days => p.retention_days)
            LOOP
                IF p.action = 'archive' THEN
                    EXECUTE format('ALTER TABLE public.%I DETACH PARTITION public.%I',
                                   p.table_name, part.partition);
                    EXECUTE format('ALTER TABLE public.%I SET SCHEMA archive', part.partition);
                ELSE
                    EXECUTE format('DROP TABLE public.%I', part.partition);
                END IF;
                names := names || part.partition;
            END LOOP;
            result := result || jsonb_build_object('partitions', to_jsonb(names));
        END IF;
        UPDATE retention_policies SET last_run_at = now(), last_result = result
        WHERE table_name = p.table_name;
        done := done || jsonb_build_object(p.table_name, result);
    END LOOP;
    RETURN done;
END $$;

-- Freezes every tenant's months that ended (from the rollup); how many closed.
CREATE FUNCTION ops_close_billing_periods() RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    n integer;
BEGIN
    INSERT INTO billing_periods (tenant_id, period_start, period_end, status,
        runs_completed, runs_failed, runs_cancelled, calls, prompt_tokens,
        completion_tokens, cached_tokens, cost_usd, token_limit, closed_at)
    SELECT d.tenant_id, m.start, (m.start + interval '1 month')::date, 'closed',
           sum(d.runs_completed), sum(d.runs_failed), sum(d.runs_cancelled), sum(d.calls),
           sum(d.prompt_tokens), sum(d.completion_tokens), sum(d.cached_tokens),
           sum(d.cost_usd), t.token_limit, now()
    FROM usage_daily d
    JOIN tenants t ON t.id = d.tenant_id
    CROSS JOIN LATERAL (SELECT date_trunc('month', d.day)::date AS start) m
    WHERE d.dimension = 'tenant'
      AND d.day < date_trunc('month', usage_utc_day(now()))::date
      AND NOT EXISTS (SELECT 1 FROM billing_periods b
                      WHERE b.tenant_id = d.tenant_id AND b.period_start = m.start)
    GROUP BY d.tenant_id, m.start, t.token_limit
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

CREATE FUNCTION ops_refresh_views() RETURNS text[]
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY analytics.agent_performance_daily;
    REFRESH MATERIALIZED VIEW CONCURRENTLY analytics.project_task_stats;
    RETURN ARRAY['analytics.agent_performance_daily', 'analytics.project_task_stats'];
END $$;

-- The installation's own periodic work, beside the tenants' queue schedules (which
-- belong to a tenant): every worker's maintenance loop claims the tasks that are due
-- with one UPDATE, so each due run goes to exactly one worker, and runs them. A claim
-- moves next_run_at on at once; a failed run is retried within 5 minutes.
CREATE TABLE system_tasks (
    name              text PRIMARY KEY,
    every             interval NOT NULL CHECK (every >= interval '1 second'),
    next_run_at       timestamptz NOT NULL DEFAULT now(),
    running_since     timestamptz,
    last_finished_at  timestamptz,
    last_result       jsonb,
    last_error        text
);
INSERT INTO system_tasks (name, every) VALUES
    ('partitions', '1 hour'), ('billing_periods', '1 hour'), ('retention', '1 day'),
    ('refresh_views', '5 minutes');
REVOKE ALL ON system_tasks FROM {app};

-- Claims the due tasks; also says how long until the next one is due, so the caller
-- need not ask again before then.
CREATE FUNCTION system_tasks_claim(OUT names text[], OUT wait_seconds double precision)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    WITH claimed AS (
        UPDATE system_tasks SET next_run_at = now() + every, running_since = now()
        WHERE next_run_at <= now()
        RETURNING name, next_run_at
    ), next AS (
        SELECT next_run_at FROM claimed
        UNION ALL
        SELECT next_run_at FROM system_tasks WHERE name NOT IN (SELECT name FROM claimed)
    )
    SELECT (SELECT coalesce(array_agg(name ORDER BY name), '{}') FROM claimed),
           greatest(extract(epoch FROM (SELECT min(next_run_at) FROM next) - now()), 0)::float8
$$;

CREATE FUNCTION system_task_finish(p_name text, p_result jsonb, p_error text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    UPDATE system_tasks SET running_since = NULL, last_finished_at = now(),
        last_result = p_result, last_error = p_error,
        next_run_at = CASE WHEN p_error IS NULL THEN next_run_at
                           ELSE least(next_run_at, now() + interval '5 minutes') END
    WHERE name = p_name
$$;
"""

FUNCTIONS = (
    "system_task_finish(text, jsonb, text)",
    "system_tasks_claim()",
    "ops_refresh_views()",
    "ops_close_billing_periods()",
    "ops_run_retention()",
    "ops_ensure_partitions(integer)",
    "ops_partitions(text)",
    "usage_check_alerts(uuid, uuid)",
    "usage_runs_rollup()",
    "usage_tools_rollup()",
    "usage_tasks_rollup()",
    "usage_records_rollup()",
    "usage_utc_day(timestamptz)",
    "usage_stripe(uuid)",
)


def upgrade() -> None:
    sql(UPGRADE.replace("{stripes}", str(STRIPES)))
    for table in TABLES:
        sql(tenant_rls(table))


def downgrade() -> None:
    sql("""
    DROP VIEW project_task_stats, agent_performance_daily;
    DROP SCHEMA analytics CASCADE;
    DROP SCHEMA archive CASCADE;
    DROP TABLE system_tasks;
    DROP TABLE retention_policies;
    DROP TRIGGER runs_usage_rollup ON runs;
    DROP TRIGGER tool_executions_usage_rollup ON tool_executions;
    DROP TRIGGER tasks_usage_rollup ON tasks;
    DROP TRIGGER usage_records_rollup ON usage_records;
    DROP TABLE usage_alert_firings, usage_alerts, billing_periods, usage_daily;
    """)
    sql("\n".join(f"DROP FUNCTION {f};" for f in FUNCTIONS))
