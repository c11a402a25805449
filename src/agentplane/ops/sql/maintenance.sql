-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- Maintenance, as the owner (SECURITY DEFINER: workers connect as the application role
-- and run these through the system tasks below). None takes an argument a caller could
-- use to retire data early: each applies the operators' settings as of now().

-- A partitioned table's partitions with their bounds, from the catalog.
CREATE OR REPLACE FUNCTION ops_partitions(p_table text)
    RETURNS TABLE (partition text, range_from timestamptz, range_to timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT c.relname::text, b[1]::timestamptz, b[2]::timestamptz
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                    'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)') AS b
    WHERE i.inhparent = to_regclass('public.' || quote_ident(p_table))
    ORDER BY 2
$$;

-- The current month and `months` ahead of every partitioned table; the partitions' names.
CREATE OR REPLACE FUNCTION ops_ensure_partitions(p_months integer) RETURNS text[]
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
CREATE OR REPLACE FUNCTION ops_run_retention() RETURNS jsonb
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
CREATE OR REPLACE FUNCTION ops_close_billing_periods() RETURNS integer
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

-- Refreshes the `analytics` schema's materialized views (see usage/sql/views.sql).
CREATE OR REPLACE FUNCTION ops_refresh_views() RETURNS text[]
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY analytics.agent_performance_daily;
    REFRESH MATERIALIZED VIEW CONCURRENTLY analytics.project_task_stats;
    RETURN ARRAY['analytics.agent_performance_daily', 'analytics.project_task_stats'];
END $$;

-- The installation's own periodic work (system_tasks), beside the tenants' queue
-- schedules: every worker's maintenance loop (agentplane.ops.maintenance) claims the
-- tasks that are due with one UPDATE, so each due run goes to exactly one worker, and
-- runs them. A claim moves next_run_at on at once; a failed run is retried within 5
-- minutes. The claim also says how long until the next one is due, so the caller need
-- not ask again before then.
CREATE OR REPLACE FUNCTION system_tasks_claim(OUT names text[], OUT wait_seconds double precision)
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

CREATE OR REPLACE FUNCTION system_task_finish(p_name text, p_result jsonb, p_error text)
    RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    UPDATE system_tasks SET running_since = NULL, last_finished_at = now(),
        last_result = p_result, last_error = p_error,
        next_run_at = CASE WHEN p_error IS NULL THEN next_run_at
                           ELSE least(next_run_at, now() + interval '5 minutes') END
    WHERE name = p_name
$$;
