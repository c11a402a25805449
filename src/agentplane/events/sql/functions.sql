-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- The event log's one insert, shared by the event service (agentplane.events.store) and
-- the runtime's batches. Sequence numbers come from event_counters, one row per run:
-- writers of a run queue on that row, and one that rolls back gives its numbers back,
-- so they are gapless.

-- Store a run's events given as a JSON array of objects with keys type, task_id, agent,
-- message, payload: bump the run's counter (which serialises writers of the run and
-- checks that the run exists in this tenant), insert the batch numbered from it, and
-- queue one notification, delivered only if the transaction commits. An event's number
-- is its place in the array (WITH ORDINALITY). jsonb, not json: each payload is taken out
-- already in binary form, where json would parse it a second time into the column. The
-- note carries the events when they fit (64 events, 7,900 bytes: PostgreSQL refuses
-- payloads of 8,000 bytes or more): the array as given, after the numbers of the first
-- and last and their created_at (`now()`, the transaction's timestamp), from which a
-- follower makes each event whole; otherwise it says where to read them ("A ...").
-- A run's log closes with its first terminal event (run.completed, run.failed or
-- run.cancelled): nothing after it is stored, and only a run.resumed first in a batch
-- opens it again. Returns the run's last sequence number, 0 for a closed log (nothing
-- stored), NULL if no such run.
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
END $$;

-- Events of several runs, given as one array of events with their run_id, in order:
-- each run's appended by events_append, the runs in id order (writers of several runs
-- take their counters in that order, so they never deadlock on them).
CREATE OR REPLACE FUNCTION events_append_runs(p_tenant uuid, p_events jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT e.run_id, count(*)::int AS n,
               jsonb_agg(jsonb_build_object('type', e.type, 'task_id', e.task_id,
                                            'agent', e.agent, 'message', e.message,
                                            'payload', e.payload) ORDER BY e.i) AS rows
        FROM ROWS FROM (jsonb_to_recordset(coalesce(p_events, '[]')) AS (run_id uuid,
                        type text, task_id uuid, agent text, message text, payload jsonb))
             WITH ORDINALITY AS e(run_id, type, task_id, agent, message, payload, i)
        GROUP BY e.run_id ORDER BY e.run_id
    LOOP
        PERFORM events_append(p_tenant, g.run_id, g.n, g.rows);
    END LOOP;
END $$;
