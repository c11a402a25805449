-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- The gateway's response cache: a tenant that turns it on (its settings' llm_cache_ttl_s)
-- gets an answer already given to the same normalised request (gateway_cache.key, the
-- sha256 of it) for that many seconds after it was given, recorded as a call of its own
-- that cost nothing (llm_calls.cached). Rows are the tenant's, under row-level security;
-- expired ones are deleted by the system task `gateway_cache`.

ALTER TABLE gateway_cache ENABLE ROW LEVEL SECURITY;
ALTER TABLE gateway_cache FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON gateway_cache;
CREATE POLICY tenant_isolation ON gateway_cache
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON gateway_cache;
CREATE POLICY owner_access ON gateway_cache TO {owner} USING (true) WITH CHECK (true);

-- Every tenant's expired answers; how many were deleted. Run by the system task.
CREATE OR REPLACE FUNCTION gateway_cache_expire() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM gateway_cache WHERE expires_at < now();
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
