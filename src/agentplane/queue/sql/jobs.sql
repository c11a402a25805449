-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- The life of a job. Workers claim across tenants, so the worker paths are SECURITY
-- DEFINER functions with a fixed search_path, run by the application role: they take
-- ids and attempt numbers, never SQL, and touch only the rows the worker holds or that
-- are claimable (see agentplane.queue for the statuses and their transitions). Fencing:
-- a completion or failure is written only where (job, attempt, worker) still match a
-- running job, so a handler that outlived its lease cannot overwrite a later attempt.

-- Time-ordered job ids, as the queue makes them in Python (queue.service.uuid7): the
-- first 48 bits are the Unix time in milliseconds, then version 7 and the variant.
CREATE OR REPLACE FUNCTION queue_uuid7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING
        substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
        FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;

-- Bulk insert from one JSON array of jobs (columns as queue.service.job_columns gives
-- them, with their ids): duplicates of a live idempotency key are skipped; the queues
-- with a job due now are woken. Returns the ids inserted.
CREATE OR REPLACE FUNCTION queue_enqueue(p_tenant uuid, p_jobs jsonb) RETURNS SETOF uuid
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH ins AS (
        INSERT INTO jobs (tenant_id, id, queue, type, payload, priority, scheduled_at,
                          max_attempts, backoff_base, backoff_max, timeout_seconds,
                          idempotency_key, concurrency_key, status)
        SELECT coalesce(p_tenant, app_current_tenant()), u.id, u.queue, u.type,
               coalesce(u.payload, 'null'), u.priority, now() + make_interval(secs => u.delay),
               u.max_attempts, u.backoff_base, u.backoff_max, u.timeout, u.idempotency_key,
               u.concurrency_key,
               CASE WHEN EXISTS (SELECT 1 FROM queue_pauses p
                                 WHERE p.queue = u.queue AND p.type IN ('*', u.type)
                                   AND (p.tenant_id IS NULL OR p.tenant_id
                                        = coalesce(p_tenant, app_current_tenant())))
                    THEN 'paused'::job_status ELSE 'pending'::job_status END
        FROM jsonb_to_recordset(p_jobs)
             AS u (id uuid, queue text, type text, payload jsonb, priority job_priority,
                   delay float8, max_attempts int, backoff_base real, backoff_max real,
                   timeout real, idempotency_key text, concurrency_key text)
        ON CONFLICT (tenant_id, idempotency_key)
            WHERE idempotency_key IS NOT NULL
              AND status NOT IN ('completed', 'cancelled', 'dead_letter')
            DO NOTHING
        RETURNING jobs.id, jobs.queue, jobs.scheduled_at
    ), woken AS (
        SELECT pg_notify('agentplane_jobs', q.queue)
        FROM (SELECT DISTINCT ins.queue FROM ins WHERE ins.scheduled_at <= now()) q
    )
    SELECT ins.id FROM ins WHERE (SELECT count(*) FROM woken) >= 0;
END $$;

-- The claim. Fairness: up to p_tenants tenants with jobs due in the worker's
-- queues are visited, in tenant order from a random start (p_start; at most
-- 500 tenants with waiting jobs are looked at on each side of it), and each
-- may fill only its share of the batch
-- (p_limit / tenants visited, at least p_share), so a tenant with 100,000 waiting
-- jobs takes half of each claim while one other tenant has ready jobs, instead
-- of all of them until its backlog is gone. Within the batch: priority, then
-- schedule time. A worker claims again at once while claims fill its free slots.
-- The shares are a floor, not a cap: when they leave part of the batch unfilled
-- (a visited tenant had fewer jobs, or none due in these queues) while some
-- tenant did fill its share, a second pass gives the rest to whoever is next by
-- priority and schedule time. Otherwise the worker, seeing fewer jobs than it
-- asked for, would take the queue for empty and wait for its next poll.
-- Fast path: when the first and last tenant with waiting jobs are the same
-- there is nobody to be fair to, and the tenant walk is skipped (two index
-- probes instead of one per tenant and lap).
-- PL/pgSQL with a forced generic plan: planned once per connection. A SQL
-- function's statement, or a custom plan, is planned on every call, and
-- planning this statement costs more than running it.
CREATE OR REPLACE FUNCTION queue_claim(
    p_worker text, p_queues text[], p_limit integer, p_lease_seconds double precision,
    p_start uuid, p_share integer, p_tenants integer
) RETURNS SETOF jobs
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
    SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    lone uuid;
    last uuid;
    v_limit integer := p_limit;
    v_share integer := p_share;
    taken integer;
BEGIN
    -- (No min/max for uuid: two one-row scans of the claim index instead.)
    lone := (SELECT tenant_id FROM jobs WHERE status IN ('pending', 'queued', 'failed', 'stuck')
             ORDER BY tenant_id LIMIT 1);
    last := (SELECT tenant_id FROM jobs WHERE status IN ('pending', 'queued', 'failed', 'stuck')
             ORDER BY tenant_id DESC LIMIT 1);
    IF lone IS NULL THEN
        RETURN;  -- nothing waiting at all
    END IF;
    IF lone <> last THEN
        lone := NULL;
    END IF;
    FOR pass IN 1..2 LOOP
    RETURN QUERY
WITH RECURSIVE after_start AS (
    (SELECT tenant_id, 1 AS steps FROM jobs
     WHERE status IN ('pending', 'queued', 'failed', 'stuck') AND tenant_id >= p_start ORDER BY tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT j.tenant_id FROM jobs j
            WHERE j.status IN ('pending', 'queued', 'failed', 'stuck') AND j.tenant_id > a.tenant_id
            ORDER BY j.tenant_id LIMIT 1), a.steps + 1
    FROM after_start a WHERE a.tenant_id IS NOT NULL AND a.steps < 500
), before_start AS (
    (SELECT tenant_id, 1 AS steps FROM jobs
     WHERE status IN ('pending', 'queued', 'failed', 'stuck') AND tenant_id < p_start ORDER BY tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT j.tenant_id FROM jobs j
            WHERE j.status IN ('pending', 'queued', 'failed', 'stuck') AND j.tenant_id > b.tenant_id
              AND j.tenant_id < p_start
            ORDER BY j.tenant_id LIMIT 1), b.steps + 1
    FROM before_start b WHERE b.tenant_id IS NOT NULL AND b.steps < 500
), tenant_ids AS (
    SELECT lone AS tenant_id WHERE lone IS NOT NULL
    UNION ALL
    -- Only tenants with a job due in these queues count: the others (jobs in
    -- other queues, or not due yet) would take a share and slots of the walk.
    SELECT tenant_id FROM (
        SELECT tenant_id FROM after_start WHERE tenant_id IS NOT NULL
        UNION ALL
        SELECT tenant_id FROM before_start WHERE tenant_id IS NOT NULL
    ) t WHERE lone IS NULL AND EXISTS (
        SELECT 1 FROM jobs e
        WHERE e.tenant_id = t.tenant_id AND e.queue = ANY(p_queues)
          AND e.status IN ('pending', 'queued', 'failed', 'stuck') AND e.scheduled_at <= now())
    LIMIT p_tenants
), candidates AS (
    SELECT c.* FROM tenant_ids t CROSS JOIN unnest(p_queues) AS q (name)
    CROSS JOIN LATERAL (
        SELECT j.tenant_id, j.id, j.priority, j.scheduled_at, j.concurrency_key
        FROM jobs j
        WHERE j.tenant_id = t.tenant_id AND j.queue = q.name
          AND j.status IN ('pending', 'queued', 'failed', 'stuck') AND j.scheduled_at <= now()
          AND NOT EXISTS (SELECT 1 FROM queue_pauses p
                          WHERE p.queue = j.queue AND p.type IN ('*', j.type)
                            AND (p.tenant_id IS NULL OR p.tenant_id = j.tenant_id))
        ORDER BY j.priority, j.scheduled_at
        LIMIT greatest(v_share, ceil(v_limit::numeric / (SELECT count(*) FROM tenant_ids)))
        FOR UPDATE SKIP LOCKED
    ) c
    ORDER BY c.priority, c.scheduled_at
    LIMIT v_limit
), ranked AS (
    SELECT c.*, row_number() OVER (PARTITION BY c.concurrency_key
                                   ORDER BY c.priority, c.scheduled_at) AS rank
    FROM candidates c
), granted AS (
    SELECT w.key, a.got, a.retry_after, a.step
    FROM (SELECT concurrency_key AS key, count(*)::integer AS wanted FROM candidates
          WHERE concurrency_key IS NOT NULL GROUP BY 1) w
    CROSS JOIN LATERAL queue_acquire(w.key, w.wanted) a
), chosen AS (
    SELECT r.tenant_id, r.id, r.concurrency_key IS NULL OR r.rank <= g.got AS ok,
           g.retry_after + (r.rank - g.got - 1) * g.step AS wait
    FROM ranked r LEFT JOIN granted g ON g.key = r.concurrency_key
), deferred AS (
    -- Jobs held back by a limit step aside until their key may have room again,
    -- so they do not block the head meanwhile.
    UPDATE jobs j SET scheduled_at = now() + make_interval(secs => c.wait)
    FROM chosen c WHERE NOT c.ok AND j.tenant_id = c.tenant_id AND j.id = c.id
    RETURNING j.*
), started AS (
    UPDATE jobs j SET status = 'running', attempts = j.attempts + 1, worker_id = p_worker,
        started_at = now(), heartbeat_at = now(), cancel_requested = false,
        lease_expires_at = now() + make_interval(secs => p_lease_seconds)
    FROM chosen c
    WHERE c.ok AND j.tenant_id = c.tenant_id AND j.id = c.id
    RETURNING j.*
)
-- The held-back jobs come back too (not running): the worker claims again when
-- the first of them is due.
SELECT * FROM started UNION ALL SELECT * FROM deferred;
    GET DIAGNOSTICS taken = ROW_COUNT;
    -- Unfilled but not empty: the shares held jobs back. (This pass's rows are
    -- running or deferred now, so the next pass does not see them again.)
    EXIT WHEN lone IS NOT NULL OR taken = 0 OR taken >= v_limit;
    v_limit := v_limit - taken;
    v_share := v_limit;
    END LOOP;
END $$;

-- Finished jobs are announced on `agentplane_job_done` (ids, comma-separated, at
-- most 200 per notification to stay under the 8,000-byte payload limit) so
-- `wait_for_result` wakes at once instead of polling. Ids only: nothing of a
-- tenant's data goes out on the shared channel.
CREATE OR REPLACE FUNCTION queue_notify_done(p_ids uuid[]) RETURNS void
    LANGUAGE sql SET search_path = pg_catalog, public
AS $$
SELECT pg_notify('agentplane_job_done', string_agg(id::text, ','))
FROM unnest(p_ids) WITH ORDINALITY AS u (id, n)
GROUP BY (n - 1) / 200
$$;

-- Completions in a batch, fenced: only the attempt this worker holds is written.
CREATE OR REPLACE FUNCTION queue_complete(
    p_worker text, p_tenants uuid[], p_ids uuid[], p_attempts integer[], p_results jsonb[]
) RETURNS SETOF uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
    SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    done uuid[];
BEGIN
    WITH written AS (
        UPDATE jobs j SET status = 'completed', result = u.result, finished_at = now(),
            lease_expires_at = NULL
        FROM unnest(p_tenants, p_ids, p_attempts, p_results)
             AS u (tenant_id, id, attempt, result)
        WHERE j.tenant_id = u.tenant_id AND j.id = u.id AND j.attempts = u.attempt
          AND j.worker_id = p_worker AND j.status = 'running'
        RETURNING j.id
    )
    SELECT array_agg(id) INTO done FROM written;
    PERFORM queue_notify_done(done);
    RETURN QUERY SELECT unnest(done);
END $$;

-- A failed attempt of a locked running job: retry later, or dead letter; or
-- cancelled when a cancel was requested (the request outlives the attempt).
CREATE OR REPLACE FUNCTION queue_fail_row(
    j jobs, p_error text, p_stack text, p_permanent boolean, p_retry_status job_status
) RETURNS job_status
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    history jsonb := j.errors || jsonb_build_array(jsonb_build_object(
        'attempt', j.attempts, 'error', p_error, 'at', now(), 'worker', j.worker_id));
    final boolean := p_permanent OR j.attempts >= j.max_attempts;
BEGIN
    IF j.cancel_requested THEN
        UPDATE jobs SET status = 'cancelled', errors = history, last_error = p_error,
            lease_expires_at = NULL, finished_at = now()
        WHERE tenant_id = j.tenant_id AND id = j.id;
        PERFORM queue_notify_done(ARRAY[j.id]);
        RETURN 'cancelled';
    END IF;
    UPDATE jobs SET
        status = CASE WHEN final THEN 'dead_letter'::job_status ELSE p_retry_status END,
        errors = history, last_error = p_error, lease_expires_at = NULL,
        finished_at = CASE WHEN final THEN now() END,
        scheduled_at = CASE WHEN final THEN scheduled_at
                       ELSE now() + queue_backoff(j.attempts, j.backoff_base, j.backoff_max) END
    WHERE tenant_id = j.tenant_id AND id = j.id;
    IF final THEN
        INSERT INTO dead_letters (tenant_id, job_id, queue, type, payload, priority, attempts,
                                  error, error_stack, retry_history)
        VALUES (j.tenant_id, j.id, j.queue, j.type, j.payload, j.priority, j.attempts,
                p_error, p_stack, history);
        PERFORM queue_notify_done(ARRAY[j.id]);
        RETURN 'dead_letter';
    END IF;
    RETURN p_retry_status;
END $$;

-- Delay before attempt n+1: exponential, capped, with jitter in [50%, 100%].
CREATE OR REPLACE FUNCTION queue_backoff(p_attempts integer, p_base real, p_max real)
    RETURNS interval
    LANGUAGE sql VOLATILE
AS $$
    SELECT make_interval(secs => least(p_max, p_base * power(2, greatest(p_attempts - 1, 0)))
                                 * (0.5 + random() / 2))
$$;

-- The end of an attempt other than success, fenced like completion.
-- p_outcome: 'error' (retry or dead letter), 'permanent' (dead letter),
-- 'cancelled' (the handler honoured a cancel), 'released' (handed back unrun).
CREATE OR REPLACE FUNCTION queue_finish(
    p_worker text, p_tenant uuid, p_id uuid, p_attempt integer, p_outcome text,
    p_error text, p_stack text
) RETURNS job_status
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    j jobs;
BEGIN
    SELECT * INTO j FROM jobs
    WHERE tenant_id = p_tenant AND id = p_id AND attempts = p_attempt
      AND worker_id = p_worker AND status = 'running'
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;  -- fenced: a later attempt or the lease recovery owns the job now
    END IF;
    IF p_outcome = 'cancelled' OR (p_outcome = 'released' AND j.cancel_requested) THEN
        UPDATE jobs SET status = 'cancelled', finished_at = now(), lease_expires_at = NULL,
            last_error = p_error
        WHERE tenant_id = p_tenant AND id = p_id;
        PERFORM queue_notify_done(ARRAY[p_id]);
        RETURN 'cancelled';
    ELSIF p_outcome = 'released' THEN
        UPDATE jobs SET status = 'queued', lease_expires_at = NULL, scheduled_at = now()
        WHERE tenant_id = p_tenant AND id = p_id;
        RETURN 'queued';
    END IF;
    RETURN queue_fail_row(j, p_error, p_stack, p_outcome = 'permanent', 'failed');
END $$;

-- Extends the leases of the jobs a worker holds; returns those still held, with
-- their cancel flags. A job missing from the answer is lost: stop its handler.
CREATE OR REPLACE FUNCTION queue_heartbeat(
    p_worker text, p_tenants uuid[], p_ids uuid[], p_attempts integer[],
    p_lease_seconds double precision
) RETURNS TABLE (id uuid, cancel_requested boolean)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
UPDATE jobs j SET heartbeat_at = now(),
    lease_expires_at = now() + make_interval(secs => p_lease_seconds)
FROM unnest(p_tenants, p_ids, p_attempts) AS u (tenant_id, id, attempt)
WHERE j.tenant_id = u.tenant_id AND j.id = u.id AND j.attempts = u.attempt
  AND j.worker_id = p_worker AND j.status = 'running'
RETURNING j.id, j.cancel_requested
$$;

-- Jobs whose lease expired (worker killed, machine lost) go back to the queue as
-- `stuck`, or to dead letters when that was their last attempt. Any worker runs it.
CREATE OR REPLACE FUNCTION queue_recover(p_limit integer) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    j jobs;
    n integer := 0;
BEGIN
    FOR j IN SELECT * FROM jobs WHERE status = 'running' AND lease_expires_at < now()
             ORDER BY lease_expires_at LIMIT p_limit FOR UPDATE SKIP LOCKED LOOP
        PERFORM queue_fail_row(j, 'lease expired: worker ' || coalesce(j.worker_id, '?')
                               || ' stopped heartbeating', NULL, false, 'stuck');
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

-- Pause/resume: matching waiting jobs show `paused`; the claim also skips paused
-- queues, which covers jobs enqueued while the pause was being committed.
-- p_tenant NULL: every tenant's jobs; otherwise that tenant's only.
CREATE OR REPLACE FUNCTION queue_pause(p_queue text, p_type text, p_tenant uuid) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    n integer;
BEGIN
    INSERT INTO queue_pauses (tenant_id, queue, type)
    VALUES (p_tenant, p_queue, coalesce(p_type, '*'))
    ON CONFLICT DO NOTHING;
    UPDATE jobs SET status = 'paused'
    WHERE queue = p_queue AND (p_type IS NULL OR type = p_type) AND status IN ('pending', 'queued', 'failed', 'stuck')
      AND (p_tenant IS NULL OR tenant_id = p_tenant);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Lifts one pause; jobs still covered by another (a tenant's own, or one for
-- every tenant) stay paused.
CREATE OR REPLACE FUNCTION queue_resume(p_queue text, p_type text, p_tenant uuid) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM queue_pauses WHERE queue = p_queue AND type = coalesce(p_type, '*')
        AND tenant_id IS NOT DISTINCT FROM p_tenant;
    UPDATE jobs SET status = CASE WHEN attempts = 0 THEN 'pending'::job_status
                                  ELSE 'queued'::job_status END
    WHERE queue = p_queue AND (p_type IS NULL OR type = p_type) AND status = 'paused'
      AND (p_tenant IS NULL OR tenant_id = p_tenant)
      AND NOT EXISTS (SELECT 1 FROM queue_pauses p
                      WHERE p.queue = jobs.queue AND p.type IN ('*', jobs.type)
                        AND (p.tenant_id IS NULL OR p.tenant_id = jobs.tenant_id));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
