-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- Limits per concurrency key, across all workers (job_limits). `running` is kept by the
-- claim (queue_acquire, an increment) and by a trigger on jobs (a decrement when a job
-- leaves running).

CREATE OR REPLACE FUNCTION job_limits_release() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
BEGIN
    UPDATE job_limits SET running = greatest(running - 1, 0) WHERE key = OLD.concurrency_key;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER jobs_release_limit AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (OLD.concurrency_key IS NOT NULL AND OLD.status = 'running'
          AND NEW.status <> 'running')
    EXECUTE FUNCTION job_limits_release();

CREATE OR REPLACE TRIGGER jobs_release_limit_delete AFTER DELETE ON jobs FOR EACH ROW
    WHEN (OLD.concurrency_key IS NOT NULL AND OLD.status = 'running')
    EXECUTE FUNCTION job_limits_release();

-- Takes up to `wanted` slots of a key: how many it got, and for the jobs it could
-- not grant, when to try again: the first in `retry_after` seconds, each next one
-- `step` later (the rate's token interval), so held-back jobs come due as the
-- tokens do. Held by max_running only: in 200 ms. Unknown key: all granted.
CREATE OR REPLACE FUNCTION queue_acquire(
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
