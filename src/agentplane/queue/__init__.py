"""The durable job queue: jobs, claiming, leases, retries, dead letters, schedules, workers.

Statuses (the seed's set) and their transitions:

    pending      enqueued, not attempted yet; claimable once `scheduled_at` is due
    queued       handed back unrun (worker shutdown) or retried by hand; claimable
    failed       its last attempt failed with a retryable error; claimable again
                 after the backoff (exponential with jitter, in `scheduled_at`)
    stuck        its worker stopped heartbeating and the lease expired; claimable
    running      claimed by a worker that holds a lease (`lease_expires_at`)
    paused       its queue (or type) is paused; back to pending/queued on resume
    completed    the handler returned; `result` holds its value          (final)
    cancelled    cancelled while waiting, or its handler honoured a cancel (final)
    dead_letter  permanent error or attempts exhausted; a dead letter row holds
                 the payload, final error, stack and every attempt's error (final)

    enqueue -> pending | paused (its queue or type is paused)
    pending, queued, failed, stuck -> running (claim: attempts + 1)
    running -> completed (the handler returned, even after a cancel request)
    running -> failed | dead_letter (the handler raised: retryable, or permanent
               or attempts exhausted)
    running -> queued (handed back unrun at shutdown)
    running -> stuck | dead_letter (lease expired, by any live worker)
    running -> cancelled (cancel requested: the handler honoured it, raised, was
               handed back, or its lease expired; a cancelled job never runs again)
    pending, queued, failed, stuck, paused -> cancelled (cancel)
    pending, queued, failed, stuck -> paused (pause)
    paused -> pending (never attempted) | queued (resume, unless another pause holds)
    dead_letter, cancelled, failed, stuck -> queued (retry: now, a fresh set of
               attempts; the dead letter is marked requeued as the job itself)
    dead_letter -> a new job (requeue from the dead letter; the old job then
               cannot be retried)
    completed, cancelled, dead_letter: cancel is refused (409)

Finished jobs stay in `jobs` (one table to read and page through) but out of the
claim's way: the claim reads a partial index on the four claimable statuses and
lease recovery a partial index on `running`, so both indexes hold the live work
only, whatever the history. Moving finished rows to another table would cost a
delete and an insert per job instead of one in-place update; partitioning by
status does the same (row movement). Retention deletes old finished rows.

Fencing: the attempt counter is the fencing token. A completion or failure is
written only where (job, attempt, worker) still match a running job, so a
handler that outlived its lease cannot overwrite what a later attempt wrote.

Workers claim across tenants, so the worker paths are SECURITY DEFINER functions
(queue/sql/jobs.sql) run by the application role: they take ids and attempt numbers,
never SQL, touch only the rows the worker holds (fenced) or that are claimable,
and have a fixed search_path. A worker thus needs no owner credentials and cannot
read or change tenants' rows beyond what those functions do.
"""

from agentplane.queue.models import Job, JobSpec, Limit, Priority, Status
from agentplane.queue.registry import (
    JobCancelled,
    JobContext,
    PermanentError,
    Registry,
    handler,
    registry,
)
from agentplane.queue.service import JobQueue

__all__ = [
    "Job",
    "JobCancelled",
    "JobContext",
    "JobQueue",
    "JobSpec",
    "Limit",
    "PermanentError",
    "Priority",
    "Registry",
    "Status",
    "handler",
    "registry",
]
