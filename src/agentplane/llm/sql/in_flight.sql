-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- Calls in flight per provider, as each process last published them (agentplane.llm.
-- in_flight): a process writes its own rows about once a second while its counts change,
-- never per call; the gateway's `least_in_flight` strategy reads them with its routes.
-- A row older than a few seconds is a process that died or went quiet: not counted.

ALTER TABLE llm_in_flight ENABLE ROW LEVEL SECURITY;
ALTER TABLE llm_in_flight FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON llm_in_flight;
CREATE POLICY tenant_isolation ON llm_in_flight
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON llm_in_flight;
CREATE POLICY owner_access ON llm_in_flight TO {owner} USING (true) WITH CHECK (true);
