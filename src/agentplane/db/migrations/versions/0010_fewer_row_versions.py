"""Fewer row versions per task, and the batch rollup by key.

Each LLM call's budget hold updated the tenant's row twice (taken, settled), one row
version each, and every hold of a batch waited on that row in turn. Now:

- `llm_reserve_many` takes a batch of holds without sessions or API key budgets that fits
  the tenant's limit as a whole with one update of the tenant's row and one insert; a batch
  that does not fit, or has other budgets, is taken hold by hold (each admitted or refused
  on its own) by 0009's function, renamed `llm_reserve_each`.
- `llm_settle_many` applies a batch's holds with one update per session, per API key
  budget and of the tenant, their sums (holds are never negative, so clamping the sum at
  zero is clamping each step).

`runtime_complete` (0009's, with one statement changed) rolls up its batch looking up each
task's run and agent by key, where a join let the plan read all the agent's tasks.

A task's status changes on every step of its life; with `status` out of `tasks_agent_idx`
(which finds an agent's tasks; nothing looks them up by status there), and room left on
each page of tasks, agent executions and runs (a run's counters change with every batch of
its tasks), those updates are HOT: no new entry in each index per update.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24
"""

import importlib
import re

from agentplane.db.migrations import sql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UPGRADE = """
-- 0009's function, which takes holds one by one, is what a batch falls back to.
ALTER FUNCTION llm_reserve_many(uuid, jsonb, interval, text) RENAME TO llm_reserve_each;

CREATE FUNCTION llm_reserve_many(p_tenant uuid, p_holds jsonb, p_ttl interval,
                                 p_lock_timeout text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_month date := date_trunc('month', now())::date;
    v_n integer := jsonb_array_length(p_holds);
    v_sum bigint;
    v_plain boolean;
    v_ids uuid[];
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    SELECT sum((x->>'tokens')::bigint),
           bool_and(x->>'session_id' IS NULL AND x->>'api_key_id' IS NULL
                    AND (x->>'tokens')::bigint >= 0)
    INTO v_sum, v_plain FROM jsonb_array_elements(p_holds) x;
    IF v_plain AND app_current_tenant() IS NOT NULL THEN
        -- The tenant's limit only: if the whole batch fits, it is one update and one insert.
        PERFORM set_config('synchronous_commit', 'off', true);
        UPDATE tenants SET
            monthly_token_usage =
                CASE WHEN usage_month = v_month THEN monthly_token_usage ELSE 0 END,
            usage_month = v_month,
            tokens_reserved = tokens_reserved + v_sum
        WHERE id = p_tenant
          AND (CASE WHEN usage_month = v_month THEN monthly_token_usage ELSE 0 END)
              + tokens_reserved + v_sum <= token_limit;
        IF FOUND THEN
            v_ids := ARRAY(SELECT gen_random_uuid() FROM generate_series(1, v_n));
            INSERT INTO budget_reservations (id, tenant_id, tokens, expires_at)
            SELECT v_ids[x.i], p_tenant, x.tokens, now() + p_ttl
            FROM ROWS FROM (jsonb_to_recordset(p_holds) AS (tokens bigint))
                 WITH ORDINALITY AS x(tokens, i);
            RETURN (SELECT jsonb_agg(jsonb_build_object('id', id) ORDER BY i)
                    FROM unnest(v_ids) WITH ORDINALITY AS u(id, i));
        END IF;
    END IF;
    RETURN llm_reserve_each(p_tenant, p_holds, p_ttl, p_lock_timeout);
END $$;

CREATE OR REPLACE FUNCTION llm_settle_many(p_ids uuid[], p_sessions uuid[], p_keys uuid[],
                                           p_used bigint[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_tenant uuid := app_current_tenant();
    v_n bigint;
    v_held bigint;
    v_used bigint;
BEGIN
    PERFORM 1 FROM sessions WHERE id = ANY(p_sessions) ORDER BY id FOR NO KEY UPDATE;
    PERFORM 1 FROM api_key_budgets WHERE api_key_id = ANY(p_keys)
        ORDER BY api_key_id FOR NO KEY UPDATE;
    WITH x AS (
        SELECT * FROM unnest(p_ids, p_sessions, p_keys, p_used)
            AS x(id, session_id, api_key_id, used)
    ), held AS (
        DELETE FROM budget_reservations b USING x WHERE b.id = x.id
        RETURNING b.id, b.tokens
    ), r AS (
        SELECT x.session_id, x.api_key_id, coalesce(held.tokens, 0) AS held, x.used
        FROM x LEFT JOIN held ON held.id = x.id
    ), s AS (
        UPDATE sessions s SET tokens_reserved = greatest(s.tokens_reserved - g.held, 0),
            tokens_used = s.tokens_used + g.used, request_count = s.request_count + g.n,
            last_activity = now()
        FROM (SELECT session_id, sum(held)::bigint AS held, sum(used)::bigint AS used,
                     count(*) FILTER (WHERE used > 0)::int AS n
              FROM r WHERE session_id IS NOT NULL GROUP BY session_id) g
        WHERE s.id = g.session_id
    ), k AS (
        UPDATE api_key_budgets k SET tokens_reserved = greatest(k.tokens_reserved - g.held, 0),
            tokens_used = k.tokens_used + g.used, updated_at = now()
        FROM (SELECT api_key_id, sum(held)::bigint AS held, sum(used)::bigint AS used
              FROM r WHERE api_key_id IS NOT NULL GROUP BY api_key_id) g
        WHERE k.api_key_id = g.api_key_id
    )
    SELECT count(*), sum(held)::bigint, sum(used)::bigint INTO v_n, v_held, v_used FROM r;
    IF v_n > 0 THEN
        PERFORM llm_apply_usage(v_tenant, NULL, NULL, v_held, v_used);  -- the tenant's row
    END IF;
END $$;

DROP INDEX tasks_agent_idx;
CREATE INDEX tasks_agent_idx ON tasks (tenant_id, agent_id, created_at DESC);
ALTER TABLE tasks SET (fillfactor = 80);
ALTER TABLE agent_executions SET (fillfactor = 80);
ALTER TABLE runs SET (fillfactor = 80);
"""


def _earlier(name: str) -> str:
    """The function `name` as revision 0009 created it."""
    text = importlib.import_module("agentplane.db.migrations.versions.0009_finish_batches")
    found = re.search(rf"CREATE FUNCTION {name}\(.*?\nEND \$\$;", text.UPGRADE, re.S)
    assert found is not None, name
    return found.group(0).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


# runtime_complete's rollup joined the batch's tasks to runs and agents: its generic plan
# may then start from the agent's tasks (all of them) or the tenant's runs, a cost that
# grows with the tables. The run and the agent of each task are now looked up by key.
ROLLUP_JOINED = """
    FROM tasks t
    JOIN runs r ON r.tenant_id = t.tenant_id AND r.id = t.run_id
    JOIN agents a ON a.tenant_id = t.tenant_id AND a.id = t.agent_id
    CROSS JOIN LATERAL (VALUES ('tenant', ''), ('agent', t.agent_id::text),
                               ('user', r.user_id::text), ('api_key', r.api_key_id::text),
                               ('project', a.project_id::text)) AS x (dimension, key)
"""
ROLLUP_BY_KEY = """
    FROM tasks t
    CROSS JOIN LATERAL (VALUES ('tenant', ''), ('agent', t.agent_id::text),
        ('user', (SELECT r.user_id::text FROM runs r WHERE r.id = t.run_id)),
        ('api_key', (SELECT r.api_key_id::text FROM runs r WHERE r.id = t.run_id)),
        ('project', (SELECT a.project_id::text FROM agents a WHERE a.id = t.agent_id)))
        AS x (dimension, key)
"""


def upgrade() -> None:
    sql(UPGRADE)
    earlier = _earlier("runtime_complete")
    assert ROLLUP_JOINED in earlier
    sql(earlier.replace(ROLLUP_JOINED, ROLLUP_BY_KEY))


def downgrade() -> None:
    sql(_earlier("runtime_complete"))
    sql(_earlier("llm_settle_many"))
    sql("""
    DROP FUNCTION llm_reserve_many(uuid, jsonb, interval, text);
    ALTER FUNCTION llm_reserve_each(uuid, jsonb, interval, text) RENAME TO llm_reserve_many;
    ALTER TABLE runs RESET (fillfactor);
    ALTER TABLE agent_executions RESET (fillfactor);
    ALTER TABLE tasks RESET (fillfactor);
    DROP INDEX tasks_agent_idx;
    CREATE INDEX tasks_agent_idx ON tasks (tenant_id, agent_id, status, created_at DESC);
    """)
