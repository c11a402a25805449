"""Nothing is appended to a run after its terminal event.

A run's log closes with its first `run.completed`, `run.failed` or `run.cancelled`:
events after it in the same batch, and every later batch, are not stored (followers end
at the terminal event and would never see them). A task still in flight when its run is
cancelled writes its finish like any other; its usage is recorded, its events are not.
Only a `run.resumed` first in a batch opens a closed log again: a failed run whose task
is retried goes on.

`events_append` returns 0 for a closed log (nothing stored), NULL for no such run.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from agentplane.db.migrations import sql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TERMINAL = ("run.completed", "run.failed", "run.cancelled")

# events_append as this revision makes it.
EVENTS_APPEND = """\
CREATE OR REPLACE FUNCTION events_append(p_tenant uuid, p_run uuid, p_n integer, p_rows jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
    v_end integer;
BEGIN
    SELECT min(e.i) INTO v_end FROM jsonb_array_elements(p_rows) WITH ORDINALITY AS e(x, i)
    WHERE e.x->>'type' IN ('run.completed', 'run.failed', 'run.cancelled');
    IF v_end < p_n THEN  -- what follows the terminal event is not stored
        p_rows := (SELECT jsonb_agg(e.x ORDER BY e.i)
                   FROM jsonb_array_elements(p_rows) WITH ORDINALITY AS e(x, i)
                   WHERE e.i <= v_end);
        p_n := v_end;
    END IF;
    WITH counter AS (
        INSERT INTO event_counters AS c (tenant_id, run_id, last_seq, closed)
        SELECT r.tenant_id, r.id, p_n, v_end IS NOT NULL FROM runs r
        WHERE r.id = p_run AND r.tenant_id = p_tenant
        ON CONFLICT (run_id) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq,
                                           closed = EXCLUDED.closed
            WHERE NOT c.closed OR p_rows->0->>'type' = 'run.resumed'
        RETURNING c.tenant_id, c.last_seq
    ), batch AS NOT MATERIALIZED (
        SELECT * FROM ROWS FROM (
            jsonb_to_recordset(p_rows)
                AS (type text, task_id uuid, agent text, message text, payload jsonb)
        ) WITH ORDINALITY AS e(type, task_id, agent, message, payload, i)
    ), inserted AS (
        INSERT INTO events (tenant_id, run_id, seq, task_id, type, agent, message, payload)
        SELECT counter.tenant_id, p_run, counter.last_seq - p_n + e.i,
               e.task_id, e.type, e.agent, e.message, e.payload
        FROM counter, batch e
    ), note AS (
        SELECT concat_ws(' ', counter.tenant_id, p_run::text,
                         counter.last_seq - p_n + 1, counter.last_seq) AS head,
               CASE WHEN p_n <= 64 THEN
                   'E ' || concat_ws(' ', counter.tenant_id, p_run::text,
                                     counter.last_seq - p_n + 1, counter.last_seq,
                                     to_char(now() AT TIME ZONE 'UTC',
                                             'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                                     p_rows::text)
               END AS carried,
               counter.last_seq
        FROM counter
    )
    SELECT last_seq INTO v_last FROM (
        SELECT last_seq,
               pg_notify('agentplane_events',
                         CASE WHEN octet_length(carried) <= 7900 THEN carried
                              ELSE 'A ' || head END)
        FROM note
    ) n;
    IF v_last IS NULL AND EXISTS (SELECT 1 FROM event_counters
                                  WHERE run_id = p_run AND tenant_id = p_tenant AND closed) THEN
        RETURN 0;
    END IF;
    RETURN v_last;
END $$;"""

# events_append as revision 0009 made it, for the downgrade.
EVENTS_APPEND_0009 = """\
CREATE OR REPLACE FUNCTION events_append(p_tenant uuid, p_run uuid, p_n integer, p_rows jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_last bigint;
BEGIN
    WITH counter AS (
        INSERT INTO event_counters AS c (tenant_id, run_id, last_seq)
        SELECT r.tenant_id, r.id, p_n FROM runs r
        WHERE r.id = p_run AND r.tenant_id = p_tenant
        ON CONFLICT (run_id) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq
        RETURNING c.tenant_id, c.last_seq
    ), batch AS NOT MATERIALIZED (
        SELECT * FROM ROWS FROM (
            jsonb_to_recordset(p_rows)
                AS (type text, task_id uuid, agent text, message text, payload jsonb)
        ) WITH ORDINALITY AS e(type, task_id, agent, message, payload, i)
    ), inserted AS (
        INSERT INTO events (tenant_id, run_id, seq, task_id, type, agent, message, payload)
        SELECT counter.tenant_id, p_run, counter.last_seq - p_n + e.i,
               e.task_id, e.type, e.agent, e.message, e.payload
        FROM counter, batch e
    ), note AS (
        SELECT concat_ws(' ', counter.tenant_id, p_run::text,
                         counter.last_seq - p_n + 1, counter.last_seq) AS head,
               CASE WHEN p_n <= 64 THEN
                   'E ' || concat_ws(' ', counter.tenant_id, p_run::text,
                                     counter.last_seq - p_n + 1, counter.last_seq,
                                     to_char(now() AT TIME ZONE 'UTC',
                                             'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                                     p_rows::text)
               END AS carried,
               counter.last_seq
        FROM counter
    )
    SELECT last_seq INTO v_last FROM (
        SELECT last_seq,
               pg_notify('agentplane_events',
                         CASE WHEN octet_length(carried) <= 7900 THEN carried
                              ELSE 'A ' || head END)
        FROM note
    ) n;
    RETURN v_last;
END $$;"""


def upgrade() -> None:
    sql("ALTER TABLE event_counters ADD COLUMN closed boolean NOT NULL DEFAULT false")
    # Runs that ended before this revision: their logs close at their terminal event.
    sql(f"""UPDATE event_counters c SET closed = true FROM runs r
            WHERE r.id = c.run_id AND r.status IN ('completed', 'failed', 'cancelled')
              AND EXISTS (SELECT 1 FROM events e WHERE e.run_id = c.run_id
                          AND e.type IN ({", ".join(f"'{t}'" for t in TERMINAL)}))""")
    sql(EVENTS_APPEND)


def downgrade() -> None:
    sql(EVENTS_APPEND_0009)
    sql("ALTER TABLE event_counters DROP COLUMN closed")
