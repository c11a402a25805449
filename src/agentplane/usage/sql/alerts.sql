-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- Usage alerts: thresholds on a tenant's, a user's or an API key's usage in a day or a
-- month, checked from the rollup (usage/sql/rollups.sql) as usage is written.

-- In the transaction that wrote usage: each enabled alert of the tenant not fired in its
-- current period is compared with the period's rollup rows (a few rows, never raw ones).
-- A crossing is recorded once (the firing's key), audited, appended as a budget.warning
-- event to the run that made the call (when there is one) and announced by NOTIFY.
CREATE OR REPLACE FUNCTION usage_check_alerts(p_tenant uuid, p_run uuid) RETURNS integer
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
