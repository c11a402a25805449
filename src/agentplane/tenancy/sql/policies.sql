-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- Row-level security: the isolation boundary between tenants. A tenant-scoped table is
-- isolated by app.tenant_id, even for its owner, and forced: the owner role keeps access
-- through its own policy (owner_access: migrations, admin paths); any other role sees
-- only the rows of the tenant set for the transaction (tenant_isolation), and none when
-- no tenant is set. The application role never bypasses it (agentplane.db.endpoints
-- refuses a role that can).

-- The tenant of the current transaction, NULL when none is set.
CREATE OR REPLACE FUNCTION app_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.tenant_id', true), '')::uuid $$;

-- Identity. A tenant connection sees its own tenant row only.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON tenants;
CREATE POLICY tenant_isolation ON tenants
    USING (id = app_current_tenant()) WITH CHECK (id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON tenants;
CREATE POLICY owner_access ON tenants TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON memberships;
CREATE POLICY tenant_isolation ON memberships
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON memberships;
CREATE POLICY owner_access ON memberships TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE invitations FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON invitations;
CREATE POLICY tenant_isolation ON invitations
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON invitations;
CREATE POLICY owner_access ON invitations TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE projects FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON projects;
CREATE POLICY tenant_isolation ON projects
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON projects;
CREATE POLICY owner_access ON projects TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE project_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE project_members FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON project_members;
CREATE POLICY tenant_isolation ON project_members
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON project_members;
CREATE POLICY owner_access ON project_members TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON api_keys;
CREATE POLICY tenant_isolation ON api_keys
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON api_keys;
CREATE POLICY owner_access ON api_keys TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE login_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE login_sessions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON login_sessions;
CREATE POLICY tenant_isolation ON login_sessions
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON login_sessions;
CREATE POLICY owner_access ON login_sessions TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE audit_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_logs FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON audit_logs;
CREATE POLICY tenant_isolation ON audit_logs
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON audit_logs;
CREATE POLICY owner_access ON audit_logs TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE rate_limits ENABLE ROW LEVEL SECURITY;
ALTER TABLE rate_limits FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON rate_limits;
CREATE POLICY tenant_isolation ON rate_limits
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON rate_limits;
CREATE POLICY owner_access ON rate_limits TO {owner} USING (true) WITH CHECK (true);

-- A tenant connection sees the users who are members of its tenant. Registration
-- inserts a user before its membership exists (the row is then invisible until the
-- membership is added in the same transaction); users are never deleted by the app.
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_members ON users;
CREATE POLICY tenant_members ON users FOR SELECT USING (EXISTS (
    SELECT 1 FROM memberships m
     WHERE m.user_id = users.id AND m.tenant_id = app_current_tenant()));
DROP POLICY IF EXISTS tenant_members_update ON users;
CREATE POLICY tenant_members_update ON users FOR UPDATE USING (EXISTS (
    SELECT 1 FROM memberships m
     WHERE m.user_id = users.id AND m.tenant_id = app_current_tenant()));
DROP POLICY IF EXISTS registration ON users;
CREATE POLICY registration ON users FOR INSERT WITH CHECK (app_current_tenant() IS NOT NULL);
DROP POLICY IF EXISTS owner_access ON users;
CREATE POLICY owner_access ON users TO {owner} USING (true) WITH CHECK (true);

-- login_failures: no policy for the application role; only the SECURITY DEFINER sign-in
-- functions (auth/sql/lookups.sql) touch it.
ALTER TABLE login_failures ENABLE ROW LEVEL SECURITY;
ALTER TABLE login_failures FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS owner_access ON login_failures;
CREATE POLICY owner_access ON login_failures TO {owner} USING (true) WITH CHECK (true);

-- The queue.
ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobs FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON jobs;
CREATE POLICY tenant_isolation ON jobs
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON jobs;
CREATE POLICY owner_access ON jobs TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE dead_letters ENABLE ROW LEVEL SECURITY;
ALTER TABLE dead_letters FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON dead_letters;
CREATE POLICY tenant_isolation ON dead_letters
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON dead_letters;
CREATE POLICY owner_access ON dead_letters TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE schedules ENABLE ROW LEVEL SECURITY;
ALTER TABLE schedules FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON schedules;
CREATE POLICY tenant_isolation ON schedules
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON schedules;
CREATE POLICY owner_access ON schedules TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE queue_pauses ENABLE ROW LEVEL SECURITY;
ALTER TABLE queue_pauses FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON queue_pauses;
CREATE POLICY tenant_isolation ON queue_pauses
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON queue_pauses;
CREATE POLICY owner_access ON queue_pauses TO {owner} USING (true) WITH CHECK (true);
-- A tenant's enqueue must see the pauses for every tenant too (read-only).
DROP POLICY IF EXISTS pauses_for_all ON queue_pauses;
CREATE POLICY pauses_for_all ON queue_pauses FOR SELECT USING (tenant_id IS NULL);

-- Sessions, budgets, LLM calls and the usage ledger.
ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sessions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON sessions;
CREATE POLICY tenant_isolation ON sessions
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON sessions;
CREATE POLICY owner_access ON sessions TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE api_key_budgets ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_key_budgets FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON api_key_budgets;
CREATE POLICY tenant_isolation ON api_key_budgets
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON api_key_budgets;
CREATE POLICY owner_access ON api_key_budgets TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE budget_reservations ENABLE ROW LEVEL SECURITY;
ALTER TABLE budget_reservations FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON budget_reservations;
CREATE POLICY tenant_isolation ON budget_reservations
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON budget_reservations;
CREATE POLICY owner_access ON budget_reservations TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE llm_calls ENABLE ROW LEVEL SECURITY;
ALTER TABLE llm_calls FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON llm_calls;
CREATE POLICY tenant_isolation ON llm_calls
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON llm_calls;
CREATE POLICY owner_access ON llm_calls TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE usage_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_records FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON usage_records;
CREATE POLICY tenant_isolation ON usage_records
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON usage_records;
CREATE POLICY owner_access ON usage_records TO {owner} USING (true) WITH CHECK (true);

-- Providers, models and prices: built-in rows (tenant_id NULL) that every tenant reads
-- but none may change, and each tenant's own.
ALTER TABLE llm_providers ENABLE ROW LEVEL SECURITY;
ALTER TABLE llm_providers FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_read ON llm_providers;
CREATE POLICY tenant_read ON llm_providers FOR SELECT
    USING (tenant_id IS NULL OR tenant_id = app_current_tenant());
DROP POLICY IF EXISTS tenant_isolation ON llm_providers;
CREATE POLICY tenant_isolation ON llm_providers
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON llm_providers;
CREATE POLICY owner_access ON llm_providers TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE llm_models ENABLE ROW LEVEL SECURITY;
ALTER TABLE llm_models FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_read ON llm_models;
CREATE POLICY tenant_read ON llm_models FOR SELECT
    USING (tenant_id IS NULL OR tenant_id = app_current_tenant());
DROP POLICY IF EXISTS tenant_isolation ON llm_models;
CREATE POLICY tenant_isolation ON llm_models
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON llm_models;
CREATE POLICY owner_access ON llm_models TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE llm_prices ENABLE ROW LEVEL SECURITY;
ALTER TABLE llm_prices FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_read ON llm_prices;
CREATE POLICY tenant_read ON llm_prices FOR SELECT
    USING (tenant_id IS NULL OR tenant_id = app_current_tenant());
DROP POLICY IF EXISTS tenant_isolation ON llm_prices;
CREATE POLICY tenant_isolation ON llm_prices
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON llm_prices;
CREATE POLICY owner_access ON llm_prices TO {owner} USING (true) WITH CHECK (true);

-- Agents, workflows, runs and what happens in them.
ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON agents;
CREATE POLICY tenant_isolation ON agents
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON agents;
CREATE POLICY owner_access ON agents TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE agent_total_deltas ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_total_deltas FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON agent_total_deltas;
CREATE POLICY tenant_isolation ON agent_total_deltas
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON agent_total_deltas;
CREATE POLICY owner_access ON agent_total_deltas TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE agent_instances ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_instances FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON agent_instances;
CREATE POLICY tenant_isolation ON agent_instances
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON agent_instances;
CREATE POLICY owner_access ON agent_instances TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE agent_instance_status_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_instance_status_history FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON agent_instance_status_history;
CREATE POLICY tenant_isolation ON agent_instance_status_history
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON agent_instance_status_history;
CREATE POLICY owner_access ON agent_instance_status_history TO {owner}
    USING (true) WITH CHECK (true);

ALTER TABLE workflows ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflows FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON workflows;
CREATE POLICY tenant_isolation ON workflows
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON workflows;
CREATE POLICY owner_access ON workflows TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE workflow_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE workflow_versions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON workflow_versions;
CREATE POLICY tenant_isolation ON workflow_versions
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON workflow_versions;
CREATE POLICY owner_access ON workflow_versions TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE runs FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON runs;
CREATE POLICY tenant_isolation ON runs
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON runs;
CREATE POLICY owner_access ON runs TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON tasks;
CREATE POLICY tenant_isolation ON tasks
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON tasks;
CREATE POLICY owner_access ON tasks TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE task_dependencies ENABLE ROW LEVEL SECURITY;
ALTER TABLE task_dependencies FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON task_dependencies;
CREATE POLICY tenant_isolation ON task_dependencies
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON task_dependencies;
CREATE POLICY owner_access ON task_dependencies TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE agent_executions ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_executions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON agent_executions;
CREATE POLICY tenant_isolation ON agent_executions
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON agent_executions;
CREATE POLICY owner_access ON agent_executions TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE agent_execution_transitions ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_execution_transitions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON agent_execution_transitions;
CREATE POLICY tenant_isolation ON agent_execution_transitions
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON agent_execution_transitions;
CREATE POLICY owner_access ON agent_execution_transitions TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE tool_executions ENABLE ROW LEVEL SECURITY;
ALTER TABLE tool_executions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON tool_executions;
CREATE POLICY tenant_isolation ON tool_executions
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON tool_executions;
CREATE POLICY owner_access ON tool_executions TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE run_data ENABLE ROW LEVEL SECURITY;
ALTER TABLE run_data FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON run_data;
CREATE POLICY tenant_isolation ON run_data
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON run_data;
CREATE POLICY owner_access ON run_data TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE input_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE input_requests FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON input_requests;
CREATE POLICY tenant_isolation ON input_requests
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON input_requests;
CREATE POLICY owner_access ON input_requests TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE agent_interactions ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_interactions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON agent_interactions;
CREATE POLICY tenant_isolation ON agent_interactions
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON agent_interactions;
CREATE POLICY owner_access ON agent_interactions TO {owner} USING (true) WITH CHECK (true);

-- The event log.
ALTER TABLE event_counters ENABLE ROW LEVEL SECURITY;
ALTER TABLE event_counters FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON event_counters;
CREATE POLICY tenant_isolation ON event_counters
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON event_counters;
CREATE POLICY owner_access ON event_counters TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON events;
CREATE POLICY tenant_isolation ON events
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON events;
CREATE POLICY owner_access ON events TO {owner} USING (true) WITH CHECK (true);

-- Usage analytics.
ALTER TABLE usage_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_daily FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON usage_daily;
CREATE POLICY tenant_isolation ON usage_daily
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON usage_daily;
CREATE POLICY owner_access ON usage_daily TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE billing_periods ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_periods FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON billing_periods;
CREATE POLICY tenant_isolation ON billing_periods
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON billing_periods;
CREATE POLICY owner_access ON billing_periods TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE usage_alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_alerts FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON usage_alerts;
CREATE POLICY tenant_isolation ON usage_alerts
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON usage_alerts;
CREATE POLICY owner_access ON usage_alerts TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE usage_alert_firings ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_alert_firings FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON usage_alert_firings;
CREATE POLICY tenant_isolation ON usage_alert_firings
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON usage_alert_firings;
CREATE POLICY owner_access ON usage_alert_firings TO {owner} USING (true) WITH CHECK (true);
