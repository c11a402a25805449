-- Named queries of the queue, loaded once by store.py. Tenant-side queries run
-- on a tenant connection (RLS) or, for the CLI, on the owner connection with an
-- optional tenant filter; worker queries call the SECURITY DEFINER functions.

-- name: enqueue
-- Bulk insert from one JSON array (one document to encode and send, instead of
-- an array per column): queue_enqueue (queue/sql/jobs.sql) skips duplicates of a live
-- idempotency key.
SELECT q.id FROM queue_enqueue(%(tenant_id)s::uuid, %(jobs)s::jsonb) AS q (id);

-- name: live_by_idempotency_key
SELECT idempotency_key, id FROM jobs
WHERE tenant_id = coalesce(%(tenant_id)s::uuid, app_current_tenant())
  AND idempotency_key = ANY(%(keys)s::text[])
  AND status NOT IN ('completed', 'cancelled', 'dead_letter');

-- name: current_tenant
SELECT app_current_tenant() AS tenant_id;

-- name: known_types
SELECT name FROM job_types;

-- name: register_types
INSERT INTO job_types (name) SELECT unnest(%(names)s::text[])
ON CONFLICT (name) DO UPDATE SET last_seen_at = now();

-- name: get_job
SELECT * FROM jobs
WHERE id = %(id)s AND (%(tenant_id)s::uuid IS NULL OR tenant_id = %(tenant_id)s);

-- name: get_jobs
SELECT * FROM jobs WHERE id = ANY(%(ids)s::uuid[])
  AND (%(tenant_id)s::uuid IS NULL OR tenant_id = %(tenant_id)s);

-- name: list_jobs
SELECT * FROM jobs
WHERE (%(tenant_id)s::uuid IS NULL OR tenant_id = %(tenant_id)s)
  AND (%(status)s::job_status IS NULL OR status = %(status)s)
  AND (%(type)s::text IS NULL OR type = %(type)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(lo)s::uuid IS NULL OR id BETWEEN %(lo)s AND %(hi)s)
  AND (%(before_id)s::uuid IS NULL OR id < %(before_id)s)
ORDER BY id DESC  -- UUIDv7: newest first, on the primary key
LIMIT %(limit)s;

-- name: cancel_job
-- Waiting jobs are cancelled at once; a running one is asked to stop (its handler
-- sees the flag at the next heartbeat). Finished jobs are not touched.
UPDATE jobs SET
    status = CASE WHEN status = 'running' THEN status ELSE 'cancelled'::job_status END,
    cancel_requested = (status = 'running'),
    finished_at = CASE WHEN status = 'running' THEN NULL ELSE now() END
WHERE id = %(id)s AND (%(tenant_id)s::uuid IS NULL OR tenant_id = %(tenant_id)s)
  AND status NOT IN ('completed', 'cancelled', 'dead_letter')
RETURNING *;

-- name: retry_job
-- A dead-lettered or cancelled job, or one waiting out a backoff (failed, stuck),
-- is queued at once with a fresh set of attempts. The attempt counter keeps
-- counting, so a stale handler of an earlier attempt stays fenced out. The job's
-- dead letter is marked requeued (as the job itself); a job whose dead letter was
-- requeued as a fresh job is not retried: one of the two runs, not both.
WITH retried AS (
    UPDATE jobs SET status = 'queued', scheduled_at = now(), finished_at = NULL,
        max_attempts = least(attempts + max_attempts, 1000), cancel_requested = false
    WHERE id = %(id)s AND (%(tenant_id)s::uuid IS NULL OR tenant_id = %(tenant_id)s)
      AND status IN ('dead_letter', 'cancelled', 'failed', 'stuck')
      AND NOT EXISTS (SELECT 1 FROM dead_letters d
                      WHERE d.tenant_id = jobs.tenant_id AND d.job_id = jobs.id
                        AND d.requeued_job_id <> jobs.id)
    RETURNING *
), marked AS (
    UPDATE dead_letters d SET requeued_job_id = r.id, requeued_at = now()
    FROM retried r
    WHERE d.tenant_id = r.tenant_id AND d.job_id = r.id AND d.requeued_job_id IS NULL
)
SELECT * FROM retried;

-- name: requeued_as
SELECT requeued_job_id FROM dead_letters
WHERE tenant_id = %(tenant_id)s AND job_id = %(id)s AND requeued_job_id <> job_id
LIMIT 1;

-- name: notify
SELECT pg_notify('agentplane_jobs', %(queue)s);

-- name: notify_stop
-- The worker running the job hears of its cancel request at once (on commit), rather
-- than at its next heartbeat.
SELECT pg_notify('agentplane_jobs', 'stop ' || %(id)s::text);

-- name: ask_to_stop
-- The running jobs of a type whose payload contains `match` are asked to stop, and
-- their workers told at once.
WITH asked AS (
    UPDATE jobs SET cancel_requested = true
    WHERE tenant_id = %(tenant_id)s AND status = 'running' AND type = %(type)s
      AND payload @> %(match)s AND NOT cancel_requested
    RETURNING id
)
SELECT id, pg_notify('agentplane_jobs', 'stop ' || id::text) FROM asked;

-- name: notify_done
SELECT queue_notify_done(ARRAY[%(id)s::uuid]);

-- name: listen_done
LISTEN agentplane_job_done;

-- name: list_dead_letters
SELECT * FROM dead_letters
WHERE (%(tenant_id)s::uuid IS NULL OR tenant_id = %(tenant_id)s)
  AND (%(type)s::text IS NULL OR type = %(type)s)
  AND (%(lo)s::uuid IS NULL OR id BETWEEN %(lo)s AND %(hi)s)
  AND (%(before_at)s::timestamptz IS NULL OR (moved_at, id) < (%(before_at)s, %(before_id)s))
ORDER BY moved_at DESC, id DESC
LIMIT %(limit)s;

-- name: lock_dead_letter
SELECT * FROM dead_letters
WHERE id = %(id)s AND (%(tenant_id)s::uuid IS NULL OR tenant_id = %(tenant_id)s)
FOR UPDATE;

-- name: mark_requeued
UPDATE dead_letters SET requeued_job_id = %(job_id)s, requeued_at = now()
WHERE tenant_id = %(tenant_id)s AND id = %(id)s;

-- name: claim
-- Only what the worker uses: decoding every column (timestamps, errors) of
-- every claimed row costs the worker more than the claim itself. Rows not
-- running were held back by a limit: `due_in` says when to claim them again.
SELECT tenant_id, id, attempts, type, queue, payload::text, timeout_seconds,
       CASE WHEN status <> 'running'
            THEN extract(epoch FROM scheduled_at - now())::float8 END AS due_in
FROM queue_claim(%(worker)s, %(queues)s::text[], %(limit)s::int, %(lease)s::float8,
                          %(start)s::uuid, %(share)s::int, %(tenants)s::int);

-- name: complete
SELECT count(*) AS written FROM queue_complete(%(worker)s, %(tenants)b::uuid[], %(ids)b::uuid[],
                             %(attempts)b::int[], %(results)s::jsonb[]) AS id;

-- name: finish
SELECT queue_finish(%(worker)s, %(tenant_id)s::uuid, %(id)s::uuid, %(attempt)s::int,
                    %(outcome)s, %(error)s, %(stack)s) AS status;

-- name: heartbeat
SELECT * FROM queue_heartbeat(%(worker)s, %(tenants)s::uuid[], %(ids)s::uuid[],
                              %(attempts)s::int[], %(lease)s::float8);

-- name: recover
SELECT queue_recover(%(limit)s::int) AS recovered;

-- name: pause
SELECT queue_pause(%(queue)s, %(type)s, %(tenant_id)s::uuid) AS jobs;

-- name: pauses
-- The pauses that hold a tenant's jobs: its own (RLS) and the operators' for every tenant.
SELECT tenant_id, queue, nullif(type, '*') AS type, paused_at
FROM queue_pauses ORDER BY queue, type, tenant_id NULLS FIRST;

-- name: resume
SELECT queue_resume(%(queue)s, %(type)s, %(tenant_id)s::uuid) AS jobs;

-- name: set_limit
INSERT INTO job_limits (key, max_running, rate_per_second, burst, tokens, running)
VALUES (%(key)s, %(max_running)s, %(rate_per_second)s, %(burst)s, %(burst)s,
        (SELECT count(*) FROM jobs WHERE status = 'running' AND concurrency_key = %(key)s))
ON CONFLICT (key) DO UPDATE SET max_running = excluded.max_running,
    rate_per_second = excluded.rate_per_second, burst = excluded.burst;

-- name: delete_limit
DELETE FROM job_limits WHERE key = %(key)s;

-- name: create_schedule
INSERT INTO schedules (tenant_id, name, cron, timezone, queue, type, payload, priority,
                       max_attempts, next_run_at)
VALUES (coalesce(%(tenant_id)s::uuid, app_current_tenant()), %(name)s, %(cron)s,
        %(timezone)s, %(queue)s, %(type)s, %(payload)s, %(priority)s, %(max_attempts)s,
        %(next_run_at)s)
RETURNING *;

-- name: list_schedules
SELECT * FROM schedules
WHERE (%(tenant_id)s::uuid IS NULL OR tenant_id = %(tenant_id)s)
  AND (%(lo)s::uuid IS NULL OR id BETWEEN %(lo)s AND %(hi)s)
ORDER BY name;

-- name: delete_schedule
DELETE FROM schedules
WHERE id = %(id)s AND (%(tenant_id)s::uuid IS NULL OR tenant_id = %(tenant_id)s)
RETURNING id;

-- name: due_schedules
SELECT * FROM queue_due_schedules(%(limit)s::int);

-- name: fire_schedule
SELECT queue_fire_schedule(%(tenant_id)s::uuid, %(id)s::uuid, %(tick)s::timestamptz,
                           %(next)s::timestamptz, %(job_id)s::uuid) AS job_id;
