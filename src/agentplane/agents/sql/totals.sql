-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- An agent's totals. Each finished task appends what it adds to them as a row of
-- agent_total_deltas (in its finish transaction), so concurrent tasks of one agent never
-- queue on the agent's row; runtime_complete folds the deltas in when a run ends, and
-- readers add those not folded yet.

-- Moves the tenant's committed deltas into their agents' rows, skipping agents whose row
-- another transaction holds (their deltas wait for the next fold). Exact under
-- concurrency: a delta is deleted, and so added, by one fold only. NO KEY UPDATE does
-- not block the key-share locks that inserting deltas takes on the agent.
CREATE OR REPLACE FUNCTION agents_fold_totals() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    WITH a AS (
        SELECT tenant_id, id FROM agents
        WHERE id IN (SELECT agent_id FROM agent_total_deltas)
        ORDER BY id FOR NO KEY UPDATE SKIP LOCKED
    ), d AS (
        DELETE FROM agent_total_deltas d USING a
        WHERE d.tenant_id = a.tenant_id AND d.agent_id = a.id
        RETURNING d.*
    ), s AS (
        SELECT tenant_id, agent_id, sum(completed) AS completed, sum(failed) AS failed,
               sum(tokens) AS tokens, sum(cost_usd) AS cost, sum(latency_ms) AS latency
        FROM d GROUP BY tenant_id, agent_id
    )
    UPDATE agents g SET total_tasks_completed = g.total_tasks_completed + s.completed,
        total_tasks_failed = g.total_tasks_failed + s.failed,
        total_tokens_used = g.total_tokens_used + s.tokens,
        total_cost_usd = g.total_cost_usd + s.cost,
        total_latency_ms = g.total_latency_ms + s.latency
    FROM s WHERE g.tenant_id = s.tenant_id AND g.id = s.agent_id;
END $$;
