-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- Materialized views cannot carry row-level security, so they live in the `analytics`
-- schema, which the application role cannot read; it reads them through these
-- security-barrier views, filtered on the tenant. (The materialized views themselves,
-- which hold data, are made by revisions like tables; ops_refresh_views refreshes them.)

CREATE OR REPLACE VIEW agent_performance_daily WITH (security_barrier) AS
SELECT * FROM analytics.agent_performance_daily WHERE tenant_id = app_current_tenant();

CREATE OR REPLACE VIEW project_task_stats WITH (security_barrier) AS
SELECT * FROM analytics.project_task_stats WHERE tenant_id = app_current_tenant();
