"""Event log: per-run numbered events, partitioned by month.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24

`events` is range-partitioned by `created_at` (one partition per UTC month) so that
retention drops partitions instead of deleting rows. Sequence numbers come from
`event_counters`, one row per run, bumped with INSERT .. ON CONFLICT DO UPDATE ..
RETURNING: concurrent writers of one run queue on that row, and a writer that rolls
back gives its numbers back with it, so numbers are gapless (a SEQUENCE would leave
holes). A unique key on a partitioned table must contain the partition key, so
(run_id, seq) is unique by construction (the counter), not by an index alone.

No foreign key from `events` to `runs`: an FK trigger per row would halve batched
append throughput, and events outlive their run until retention drops the month
(partitions are dropped, never cascaded into). The counter row does reference the
run, which checks the run once per batch and cleans up when a run is deleted.

Partitions are readable only through the parent: row-level security is evaluated on
the table named in the query, so a partition read directly would show every tenant.
The application role therefore has no privileges on partitions at all.
"""

from agentplane.db.migrations import sql, tenant_rls

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

MONTHS_AHEAD = 3

UPGRADE = """
CREATE TABLE event_counters (
    tenant_id  uuid NOT NULL,
    run_id     uuid PRIMARY KEY,
    last_seq   bigint NOT NULL CHECK (last_seq >= 0),
    -- the run's own tenant: a counter (hence events) can never cross tenants.
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs (tenant_id, id) ON DELETE CASCADE
);
{rls_counters}

CREATE TABLE events (
    tenant_id   uuid NOT NULL,
    run_id      uuid NOT NULL,
    seq         bigint NOT NULL CHECK (seq > 0),
    task_id     uuid,
    type        text NOT NULL CHECK (type ~ '^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)+$'
                                     AND length(type) <= 100),
    agent       text CHECK (length(agent) <= 255),
    message     text,
    payload     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- tenant first: the key a later distribution by tenant needs; run, seq: every read.
    PRIMARY KEY (tenant_id, run_id, seq, created_at)
) PARTITION BY RANGE (created_at);
{rls_events}

-- Creates the partition holding `month` (UTC) if missing; idempotent and cheap when
-- present. SECURITY DEFINER so the application may call it; it grants nothing.
CREATE FUNCTION events_create_partition(month timestamptz) RETURNS text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    lo timestamp := date_trunc('month', month AT TIME ZONE 'UTC');
    name text := 'events_' || to_char(lo, 'YYYY_MM');
BEGIN
    IF to_regclass('public.' || name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE public.%I PARTITION OF public.events FOR VALUES FROM (%L) TO (%L)',
            name, lo AT TIME ZONE 'UTC', (lo + interval '1 month') AT TIME ZONE 'UTC');
        -- Default privileges granted the app role everything; partitions bypass RLS.
        EXECUTE format('REVOKE ALL ON public.%I FROM {app}', name);
    END IF;
    RETURN name;
END $$;

-- The current month and `months` ahead; run at start-up and by the partition job.
CREATE FUNCTION events_ensure_partitions(months integer DEFAULT {ahead}) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT events_create_partition(now() + make_interval(months => m))
    FROM generate_series(0, greatest(months, 0)) AS m;
$$;

SELECT events_ensure_partitions({ahead});
"""


def upgrade() -> None:
    sql(
        UPGRADE.replace("{rls_counters}", tenant_rls("event_counters"))
        .replace("{rls_events}", tenant_rls("events"))
        .replace("{ahead}", str(MONTHS_AHEAD))
    )


def downgrade() -> None:
    sql("""
    DROP FUNCTION events_ensure_partitions(integer);
    DROP FUNCTION events_create_partition(timestamptz);
    DROP TABLE events;
    DROP TABLE event_counters;
    """)
