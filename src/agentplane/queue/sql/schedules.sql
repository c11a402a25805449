-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- A tenant's schedules fire as jobs: a worker locks the due ones and enqueues one tick of
-- each (agentplane.queue.schedules).

-- Due schedules, locked for this transaction (SKIP LOCKED: one firing per tick).
CREATE OR REPLACE FUNCTION queue_due_schedules(p_limit integer) RETURNS SETOF schedules
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
SELECT * FROM schedules WHERE enabled AND next_run_at <= now()
ORDER BY next_run_at LIMIT p_limit FOR UPDATE SKIP LOCKED
$$;

-- Enqueues one tick of a locked schedule and moves it to its next tick.
CREATE OR REPLACE FUNCTION queue_fire_schedule(
    p_tenant uuid, p_id uuid, p_tick timestamptz, p_next timestamptz, p_job uuid
) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    s schedules;
    job uuid;
BEGIN
    SELECT * INTO s FROM schedules WHERE tenant_id = p_tenant AND id = p_id FOR UPDATE;
    IF NOT FOUND OR s.next_run_at > p_tick THEN
        RETURN NULL;  -- another worker fired this tick already
    END IF;
    INSERT INTO jobs (tenant_id, id, queue, type, payload, priority, max_attempts,
                      idempotency_key, status)
    VALUES (s.tenant_id, p_job, s.queue, s.type, s.payload, s.priority, s.max_attempts,
            'schedule:' || s.id || ':' || to_char(p_tick AT TIME ZONE 'UTC',
                                                  'YYYY-MM-DD"T"HH24:MI:SS'),
            CASE WHEN EXISTS (SELECT 1 FROM queue_pauses p WHERE p.queue = s.queue
                              AND p.type IN ('*', s.type)
                              AND (p.tenant_id IS NULL OR p.tenant_id = s.tenant_id))
                 THEN 'paused'::job_status ELSE 'pending'::job_status END)
    ON CONFLICT DO NOTHING
    RETURNING id INTO job;
    UPDATE schedules SET next_run_at = p_next, last_run_at = p_tick,
        last_job_id = coalesce(job, last_job_id)
    WHERE tenant_id = p_tenant AND id = p_id;
    PERFORM pg_notify('agentplane_jobs', s.queue);
    RETURN job;
END $$;
