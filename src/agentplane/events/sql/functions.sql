-- The current definition of events_append (applied by migration 0013). A run's log
-- closes with its first terminal event: nothing after it is stored; only a run.resumed
-- first in a batch opens it again. Returns 0 for a closed log, NULL for no such run.

CREATE OR REPLACE FUNCTION events_append(p_tenant uuid, p_run uuid, p_n integer, p_rows jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
    v_end integer;
BEGIN
    SELECT min(e.i) INTO v_end FROM jsonb_array_elements(p_rows) WITH ORDINALITY AS e(x, i)
    WHERE e.x->>'type' IN ('run.completed', 'run.failed', 'run.cancelled');
    IF v_end < p_n THEN  -- what follows the terminal event is not stored
        p_rows := (SELECT jsonb_agg(e.x ORDER BY e.i)
                   FROM jsonb_array_elements(p_rows) WITH ORDINALITY AS e(x, i)
                   WHERE e.i <= v_end);
        p_n := v_end;
    END IF;
    WITH counter AS (
        INSERT INTO event_counters AS c (tenant_id, run_id, last_seq, closed)
        SELECT r.tenant_id, r.id, p_n, v_end IS NOT NULL FROM runs r
        WHERE r.id = p_run AND r.tenant_id = p_tenant
        ON CONFLICT (run_id) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq,
                                           closed = EXCLUDED.closed
            WHERE NOT c.closed OR p_rows->0->>'type' = 'run.resumed'
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
               CASE WHEN p_n <= 64 THEN
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
                         CASE WHEN octet_length(carried) <= 7900 THEN carried
                              ELSE 'A ' || head END)
        FROM note
    ) n;
    IF v_last IS NULL AND EXISTS (SELECT 1 FROM event_counters
                                  WHERE run_id = p_run AND tenant_id = p_tenant AND closed) THEN
        RETURN 0;
    END IF;
    RETURN v_last;
END $$;
