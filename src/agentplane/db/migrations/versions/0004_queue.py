"""Durable job queue: jobs, dead letters, schedules, limits, pauses.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

Finished jobs stay in `jobs` but out of every index the claim reads: the claim
index is partial on the claimable statuses and the lease index partial on
`running`, so their size follows the live work, not the history. See
agentplane/queue/__init__.py for the statuses and their transitions, and why
the worker functions are SECURITY DEFINER.
"""

from agentplane.db.migrations import sql, tenant_rls

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CLAIMABLE = "('pending', 'queued', 'failed', 'stuck')"
WALK = "500"  # tenants with waiting jobs one claim looks at, on each side of its start

UPGRADE = """
CREATE TYPE job_status AS ENUM (
    'pending', 'queued', 'running', 'paused',
    'completed', 'failed', 'stuck', 'cancelled', 'dead_letter'
);
CREATE TYPE job_priority AS ENUM ('critical', 'high', 'normal', 'low', 'background');

CREATE TABLE jobs (
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                uuid NOT NULL DEFAULT gen_random_uuid(),
    queue             text NOT NULL DEFAULT 'default'
                      CHECK (queue ~ '^[A-Za-z0-9_.:-]{1,100}$'),
    type              text NOT NULL CHECK (length(type) BETWEEN 1 AND 200),
    payload           jsonb NOT NULL DEFAULT '{}',
    status            job_status NOT NULL DEFAULT 'pending',
    priority          job_priority NOT NULL DEFAULT 'normal',
    scheduled_at      timestamptz NOT NULL DEFAULT now(),
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts      integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 1000),
    backoff_base      real NOT NULL DEFAULT 1 CHECK (backoff_base >= 0),
    backoff_max       real NOT NULL DEFAULT 300 CHECK (backoff_max >= backoff_base),
    timeout_seconds   real CHECK (timeout_seconds > 0),
    worker_id         text,
    heartbeat_at      timestamptz,
    lease_expires_at  timestamptz,
    cancel_requested  boolean NOT NULL DEFAULT false,
    idempotency_key   text CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    concurrency_key   text CHECK (length(concurrency_key) BETWEEN 1 AND 255),
    result            jsonb,
    last_error        text,
    errors            jsonb NOT NULL DEFAULT '[]',
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    PRIMARY KEY (tenant_id, id)
);
-- The claim: tenant first so the claim can walk tenants round-robin (fairness).
CREATE INDEX jobs_claim ON jobs (tenant_id, queue, priority, scheduled_at)
    WHERE status IN {claimable};
-- Lease recovery and per-key running counts look at running jobs only.
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status = 'running';
-- Listing (API, CLI) needs no index of its own: job ids are UUIDv7 (time-ordered,
-- made by the queue), so the primary key (tenant_id, id) lists a tenant's jobs
-- newest first. One index fewer to write on each of the three writes a job costs.
-- One live job per idempotency key and tenant; a finished job frees its key.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL
      AND status NOT IN ('completed', 'cancelled', 'dead_letter');
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.01,
                      autovacuum_analyze_scale_factor = 0.02);
{rls_jobs}

CREATE TABLE dead_letters (
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    job_id           uuid NOT NULL,
    queue            text NOT NULL,
    type             text NOT NULL,
    payload          jsonb NOT NULL,
    priority         job_priority NOT NULL,
    attempts         integer NOT NULL,
    error            text NOT NULL,
    error_stack      text,
    retry_history    jsonb NOT NULL DEFAULT '[]',
    moved_at         timestamptz NOT NULL DEFAULT now(),
    requeued_job_id  uuid,
    requeued_at      timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX dead_letters_list ON dead_letters (tenant_id, moved_at DESC, id DESC);
CREATE INDEX dead_letters_job ON dead_letters (tenant_id, job_id);
{rls_dead_letters}

CREATE TABLE schedules (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    cron          text NOT NULL CHECK (length(cron) BETWEEN 1 AND 200),
    timezone      text NOT NULL DEFAULT 'UTC',
    queue         text NOT NULL DEFAULT 'default',
    type          text NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}',
    priority      job_priority NOT NULL DEFAULT 'normal',
    max_attempts  integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 1000),
    enabled       boolean NOT NULL DEFAULT true,
    next_run_at   timestamptz NOT NULL,
    last_run_at   timestamptz,
    last_job_id   uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE enabled;
CREATE TRIGGER schedules_updated_at BEFORE UPDATE ON schedules
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
{rls_schedules}

-- Job types some worker has a handler for: enqueue refuses others unless told.
CREATE TABLE job_types (
    name          text PRIMARY KEY,
    registered_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now()
);

-- Paused queues, or types within a queue (type '*': the whole queue), for one
-- tenant (a tenant's admins over HTTP) or for all (tenant_id NULL: operators).
CREATE TABLE queue_pauses (
    tenant_id  uuid REFERENCES tenants (id) ON DELETE CASCADE,
    queue      text NOT NULL,
    type       text NOT NULL DEFAULT '*',
    paused_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (tenant_id, queue, type)
);
{rls_queue_pauses}
-- A tenant's enqueue must see the pauses for every tenant too (read-only).
CREATE POLICY pauses_for_all ON queue_pauses FOR SELECT USING (tenant_id IS NULL);

-- Limits per concurrency key, across all workers. `running` is kept by the claim
-- (increment) and by a trigger on jobs (decrement when a job leaves running).
CREATE TABLE job_limits (
    key              text PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 255),
    max_running      integer CHECK (max_running >= 0),
    rate_per_second  double precision CHECK (rate_per_second > 0),
    burst            double precision NOT NULL DEFAULT 1 CHECK (burst >= 1),
    running          integer NOT NULL DEFAULT 0,
    tokens           double precision NOT NULL DEFAULT 1,
    refilled_at      timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON job_limits, queue_pauses FROM {app};
GRANT SELECT ON job_limits, queue_pauses TO {app};

CREATE FUNCTION job_limits_release() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
BEGIN
    UPDATE job_limits SET running = greatest(running - 1, 0) WHERE key = OLD.concurrency_key;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_release_limit AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (OLD.concurrency_key IS NOT NULL AND OLD.status = 'running'
          AND NEW.status <> 'running')
    EXECUTE FUNCTION job_limits_release();
CREATE TRIGGER jobs_release_limit_delete AFTER DELETE ON jobs FOR EACH ROW
    WHEN (OLD.concurrency_key IS NOT NULL AND OLD.status = 'running')
    EXECUTE FUNCTION job_limits_release();

-- Takes up to `wanted` slots of a key: how many it got, and for the jobs it could
-- not grant, when to try again: the first in `retry_after` seconds, each next one
-- `step` later (the rate's token interval), so held-back jobs come due as the
-- tokens do. Held by max_running only: in 200 ms. Unknown key: all granted.
CREATE FUNCTION queue_acquire(
    p_key text, p_wanted integer,
    OUT got integer, OUT retry_after double precision, OUT step double precision
)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    l job_limits;
    avail double precision;
BEGIN
    retry_after := 0.2;
    step := 0;
    SELECT * INTO l FROM job_limits WHERE key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        got := p_wanted;
        RETURN;
    END IF;
    avail := least(l.burst, l.tokens + coalesce(l.rate_per_second, 0)
                   * extract(epoch FROM clock_timestamp() - l.refilled_at));
    got := p_wanted;
    IF l.max_running IS NOT NULL THEN
        got := least(got, greatest(l.max_running - l.running, 0));
    END IF;
    IF l.rate_per_second IS NOT NULL AND floor(avail) < got THEN
        got := floor(avail)::integer;
        retry_after := (1 - (avail - got)) / l.rate_per_second;
        step := 1 / l.rate_per_second;
    END IF;
    UPDATE job_limits SET running = running + got,
        tokens = CASE WHEN rate_per_second IS NULL THEN tokens ELSE avail - got END,
        refilled_at = clock_timestamp()
    WHERE key = p_key;
END $$;

-- Delay before attempt n+1: exponential, capped, with jitter in [50%, 100%].
CREATE FUNCTION queue_backoff(p_attempts integer, p_base real, p_max real) RETURNS interval
    LANGUAGE sql VOLATILE
AS $$
    SELECT make_interval(secs => least(p_max, p_base * power(2, greatest(p_attempts - 1, 0)))
                                 * (0.5 + random() / 2))
$$;

-- The claim. Fairness: up to p_tenants tenants with jobs due in the worker's
-- queues are visited, in tenant order from a random start (p_start; at most
-- WALK tenants with waiting jobs are looked at on each side of it), and each
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
CREATE FUNCTION queue_claim(
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
    lone := (SELECT tenant_id FROM jobs WHERE status IN {claimable}
             ORDER BY tenant_id LIMIT 1);
    last := (SELECT tenant_id FROM jobs WHERE status IN {claimable}
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
     WHERE status IN {claimable} AND tenant_id >= p_start ORDER BY tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT j.tenant_id FROM jobs j
            WHERE j.status IN {claimable} AND j.tenant_id > a.tenant_id
            ORDER BY j.tenant_id LIMIT 1), a.steps + 1
    FROM after_start a WHERE a.tenant_id IS NOT NULL AND a.steps < {walk}
), before_start AS (
    (SELECT tenant_id, 1 AS steps FROM jobs
     WHERE status IN {claimable} AND tenant_id < p_start ORDER BY tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT j.tenant_id FROM jobs j
            WHERE j.status IN {claimable} AND j.tenant_id > b.tenant_id
              AND j.tenant_id < p_start
            ORDER BY j.tenant_id LIMIT 1), b.steps + 1
    FROM before_start b WHERE b.tenant_id IS NOT NULL AND b.steps < {walk}
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
          AND e.status IN {claimable} AND e.scheduled_at <= now())
    LIMIT p_tenants
), candidates AS (
    SELECT c.* FROM tenant_ids t CROSS JOIN unnest(p_queues) AS q (name)
    CROSS JOIN LATERAL (
        SELECT j.tenant_id, j.id, j.priority, j.scheduled_at, j.concurrency_key
        FROM jobs j
        WHERE j.tenant_id = t.tenant_id AND j.queue = q.name
          AND j.status IN {claimable} AND j.scheduled_at <= now()
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
CREATE FUNCTION queue_notify_done(p_ids uuid[]) RETURNS void
    LANGUAGE sql SET search_path = pg_catalog, public
AS $$
SELECT pg_notify('agentplane_job_done', string_agg(id::text, ','))
FROM unnest(p_ids) WITH ORDINALITY AS u (id, n)
GROUP BY (n - 1) / 200
$$;

-- Completions in a batch, fenced: only the attempt this worker holds is written.
CREATE FUNCTION queue_complete(
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
CREATE FUNCTION queue_fail_row(
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

-- The end of an attempt other than success, fenced like completion.
-- p_outcome: 'error' (retry or dead letter), 'permanent' (dead letter),
-- 'cancelled' (the handler honoured a cancel), 'released' (handed back unrun).
CREATE FUNCTION queue_finish(
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
CREATE FUNCTION queue_heartbeat(
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
CREATE FUNCTION queue_recover(p_limit integer) RETURNS integer
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
CREATE FUNCTION queue_pause(p_queue text, p_type text, p_tenant uuid) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    n integer;
BEGIN
    INSERT INTO queue_pauses (tenant_id, queue, type)
    VALUES (p_tenant, p_queue, coalesce(p_type, '*'))
    ON CONFLICT DO NOTHING;
    UPDATE jobs SET status = 'paused'
    WHERE queue = p_queue AND (p_type IS NULL OR type = p_type) AND status IN {claimable}
      AND (p_tenant IS NULL OR tenant_id = p_tenant);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Lifts one pause; jobs still covered by another (a tenant's own, or one for
-- every tenant) stay paused.
CREATE FUNCTION queue_resume(p_queue text, p_type text, p_tenant uuid) RETURNS integer
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

-- Due schedules, locked for this transaction (SKIP LOCKED: one firing per tick).
CREATE FUNCTION queue_due_schedules(p_limit integer) RETURNS SETOF schedules
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
SELECT * FROM schedules WHERE enabled AND next_run_at <= now()
ORDER BY next_run_at LIMIT p_limit FOR UPDATE SKIP LOCKED
$$;

-- Enqueues one tick of a locked schedule and moves it to its next tick.
CREATE FUNCTION queue_fire_schedule(
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
"""

FUNCTIONS = (
    "queue_fire_schedule(uuid, uuid, timestamptz, timestamptz, uuid)",
    "queue_due_schedules(integer)",
    "queue_resume(text, text, uuid)",
    "queue_pause(text, text, uuid)",
    "queue_recover(integer)",
    "queue_heartbeat(text, uuid[], uuid[], integer[], double precision)",
    "queue_finish(text, uuid, uuid, integer, text, text, text)",
    "queue_fail_row(jobs, text, text, boolean, job_status)",
    "queue_complete(text, uuid[], uuid[], integer[], jsonb[])",
    "queue_claim(text, text[], integer, double precision, uuid, integer, integer)",
    "queue_notify_done(uuid[])",
    "queue_backoff(integer, real, real)",
    "queue_acquire(text, integer)",  # OUT parameters are not part of the signature
)


def upgrade() -> None:
    sql(
        UPGRADE.replace("{claimable}", CLAIMABLE)
        .replace("{walk}", WALK)
        .replace("{rls_jobs}", tenant_rls("jobs"))
        .replace("{rls_dead_letters}", tenant_rls("dead_letters"))
        .replace("{rls_schedules}", tenant_rls("schedules"))
        .replace("{rls_queue_pauses}", tenant_rls("queue_pauses"))
    )


def downgrade() -> None:
    drops = "\n".join(f"DROP FUNCTION {f};" for f in FUNCTIONS)
    sql(
        drops
        + """
    DROP TABLE job_limits, queue_pauses, job_types, schedules, dead_letters;
    DROP TABLE jobs;
    DROP FUNCTION job_limits_release();
    DROP TYPE job_priority;
    DROP TYPE job_status;
    """
    )
