-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- events has one partition per UTC month (retention drops whole months). Partitions are
-- readable only through the parent: row-level security is evaluated on the table named
-- in the query, so the application role has no privileges on partitions at all.

-- Creates the partition holding `month` (UTC) if missing; idempotent and cheap when
-- present. SECURITY DEFINER so the application may call it; it grants nothing.
CREATE OR REPLACE FUNCTION events_create_partition(month timestamptz) RETURNS text
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
CREATE OR REPLACE FUNCTION events_ensure_partitions(months integer DEFAULT 3) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    SELECT events_create_partition(now() + make_interval(months => m))
    FROM generate_series(0, greatest(months, 0)) AS m;
$$;
