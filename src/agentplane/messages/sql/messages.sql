-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- The message bus. A message is stored once (messages) and delivered as copies
-- (message_deliveries): one for a message to an agent (any of its live instances may
-- take it) or to an instance (that one while it is live, else any instance of its
-- agent), one per live instance for a broadcast or a topic (`fanout`: that instance's
-- own copy, acked by it alone). A copy is leased to one receiver at a time; an ack ends
-- it, a nack or an expired lease puts it back until its retries are spent (then it is
-- dead), and one whose time to live passes is expired, never delivered. Every function
-- runs under the caller's row-level security: app.tenant_id is set.

ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON messages;
CREATE POLICY tenant_isolation ON messages
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON messages;
CREATE POLICY owner_access ON messages TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE message_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE message_deliveries FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON message_deliveries;
CREATE POLICY tenant_isolation ON message_deliveries
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON message_deliveries;
CREATE POLICY owner_access ON message_deliveries TO {owner} USING (true) WITH CHECK (true);

ALTER TABLE message_subscriptions ENABLE ROW LEVEL SECURITY;
ALTER TABLE message_subscriptions FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON message_subscriptions;
CREATE POLICY tenant_isolation ON message_subscriptions
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON message_subscriptions;
CREATE POLICY owner_access ON message_subscriptions TO {owner} USING (true) WITH CHECK (true);

-- Send: `p_messages` is a JSON array of messages whose ids, destinations and senders the
-- caller has checked. Their copies are made here, and each receiving agent is woken by a
-- NOTIFY, which PostgreSQL sends only if the transaction commits: a message sent in a
-- transaction that rolls back was never sent. The time to live counts from when a
-- message is due (after its delay). Copies of one sender to one destination under one
-- correlation id share an order key: they are delivered one after another, in send order.
CREATE OR REPLACE FUNCTION messages_send(p_messages jsonb)
RETURNS TABLE (id uuid, deliveries integer) LANGUAGE plpgsql AS $$
DECLARE
    t uuid := app_current_tenant();
    ids uuid[];
BEGIN
    INSERT INTO messages (tenant_id, id, project_id, from_agent_id, from_instance_id,
                          to_kind, to_agent_id, to_instance_id, topic, type, priority,
                          payload, correlation_id, reply_to, requires_ack, ttl_s,
                          max_retries, run_id, task_id, available_at, expires_at)
    SELECT t, r.id, r.project_id, r.from_agent_id, r.from_instance_id, r.to_kind,
           r.to_agent_id, r.to_instance_id, r.topic, r.type, r.priority,
           coalesce(r.payload, '{}'), r.correlation_id, r.reply_to, r.requires_ack,
           r.ttl_s, r.max_retries, r.run_id, r.task_id,
           now() + make_interval(secs => r.delay_s),
           now() + make_interval(secs => r.delay_s + r.ttl_s)
    FROM jsonb_to_recordset(p_messages) AS r(
        id uuid, project_id uuid, from_agent_id uuid, from_instance_id uuid,
        to_kind text, to_agent_id uuid, to_instance_id uuid, topic text, type text,
        priority smallint, payload jsonb, correlation_id text, reply_to uuid,
        requires_ack boolean, ttl_s integer, max_retries integer, run_id uuid,
        task_id uuid, delay_s double precision);
    SELECT array_agg((e ->> 'id')::uuid ORDER BY n) INTO ids
    FROM jsonb_array_elements(p_messages) WITH ORDINALITY AS x(e, n);

    INSERT INTO message_deliveries (tenant_id, message_id, agent_id, instance_id, fanout,
                                    priority, requires_ack, correlation_id, order_key,
                                    available_at, expires_at, max_retries)
    SELECT t, m.id, c.agent_id, c.instance_id, c.fanout, m.priority, m.requires_ack,
           m.correlation_id,
           CASE WHEN m.correlation_id IS NOT NULL THEN hashtextextended(concat_ws('|',
               coalesce(m.from_instance_id, m.from_agent_id)::text, m.to_kind,
               coalesce(m.to_instance_id, m.to_agent_id)::text, m.topic,
               c.instance_id::text, m.correlation_id), 0) END,
           m.available_at, m.expires_at, m.max_retries
    FROM messages m
    CROSS JOIN LATERAL (
        -- to an agent: any instance; to an instance: that one while it is live
        SELECT m.to_agent_id AS agent_id,
               (SELECT i.id FROM agent_instances i
                WHERE i.id = m.to_instance_id AND i.status IN ('starting', 'idle', 'busy'))
                   AS instance_id,
               false AS fanout
        WHERE m.to_kind IN ('agent', 'instance')
        UNION ALL
        SELECT i.agent_id, i.id, true
        FROM agent_instances i
        JOIN agents a ON a.tenant_id = i.tenant_id AND a.id = i.agent_id
        WHERE m.to_kind = 'broadcast' AND i.status IN ('starting', 'idle', 'busy')
          AND (m.project_id IS NULL OR a.project_id = m.project_id)
        UNION ALL
        SELECT i.agent_id, i.id, true
        FROM message_subscriptions s
        JOIN agent_instances i ON i.tenant_id = s.tenant_id AND i.id = s.instance_id
        WHERE m.to_kind = 'topic' AND s.topic = m.topic
          AND i.status IN ('starting', 'idle', 'busy')
    ) c
    WHERE m.id = ANY (ids)
    ORDER BY array_position(ids, m.id), c.instance_id;

    PERFORM pg_notify('agentplane_messages', t::text || ' ' || d.agent_id::text)
    FROM (SELECT DISTINCT md.agent_id FROM message_deliveries md
          WHERE md.message_id = ANY (ids)) d;

    RETURN QUERY
    SELECT u.id, (SELECT count(*)::integer FROM message_deliveries md
                  WHERE md.message_id = u.id)
    FROM unnest(ids) AS u(id);
END $$;

-- Receive: lease up to p_limit ready copies to instance p_instance of agent p_agent
-- (those of a correlation id only, given one) for p_lease_s seconds. A copy whose lease
-- passed is taken back (its history says so); one past its time to live is marked
-- expired, one whose last attempt's lease passed is dead; neither is returned. A copy
-- that needs no ack is acked as it is delivered. Receiving counts as a heartbeat.
CREATE OR REPLACE FUNCTION messages_receive(p_agent uuid, p_instance uuid, p_limit integer,
                                            p_lease_s real, p_correlation text)
RETURNS TABLE (delivery_id uuid, message_id uuid, attempt integer, lease_until timestamptz,
               status text)
LANGUAGE plpgsql AS $$
DECLARE
    t uuid := app_current_tenant();
    taken uuid[];
    rounds integer := 0;
    got integer;
BEGIN
    UPDATE agent_instances i
    SET heartbeat_at = now(), status = CASE WHEN i.status = 'offline' THEN 'idle' ELSE i.status END
    WHERE i.id = p_instance AND (i.heartbeat_at IS NULL OR i.heartbeat_at < now() - interval '1 second'
                                 OR i.status = 'offline');
    LOOP
        SELECT array_agg(c.id) INTO taken FROM (
            SELECT d.id FROM message_deliveries d
            WHERE d.tenant_id = t AND d.agent_id = p_agent
              AND d.status IN ('pending', 'leased')
              AND (d.instance_id IS NULL OR d.instance_id = p_instance)
              AND CASE WHEN d.status = 'pending' THEN d.available_at <= now()
                       ELSE d.lease_until <= now() END
              AND (p_correlation IS NULL OR d.correlation_id = p_correlation)
              AND (d.order_key IS NULL OR NOT EXISTS (
                  SELECT 1 FROM message_deliveries e
                  WHERE e.tenant_id = t AND e.agent_id = d.agent_id
                    AND e.order_key = d.order_key AND e.seq < d.seq
                    AND e.status IN ('pending', 'leased')))
            ORDER BY d.priority DESC, d.seq
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        ) c;
        IF taken IS NULL THEN
            RETURN;
        END IF;
        -- Those that may not be delivered again: past their time to live, or spent.
        UPDATE message_deliveries d
        SET status = CASE WHEN d.expires_at <= now() THEN 'expired' ELSE 'dead' END,
            lease_until = NULL,
            last_error = CASE WHEN d.expires_at <= now() THEN d.last_error
                              ELSE 'lease expired' END,
            history = d.history || CASE WHEN d.status = 'leased' THEN jsonb_build_array(
                jsonb_build_object('at', now(), 'instance', d.leased_to,
                                   'error', 'lease expired')) ELSE '[]' END
        WHERE d.tenant_id = t AND d.id = ANY (taken)
          AND (d.expires_at <= now() OR (d.status = 'leased' AND d.attempts > d.max_retries));
        RETURN QUERY
        UPDATE message_deliveries d
        SET status = CASE WHEN d.requires_ack THEN 'leased' ELSE 'acked' END,
            lease_until = CASE WHEN d.requires_ack
                               THEN now() + make_interval(secs => p_lease_s) END,
            acked_at = CASE WHEN d.requires_ack THEN NULL ELSE now() END,
            history = d.history || CASE WHEN d.status = 'leased' THEN jsonb_build_array(
                jsonb_build_object('at', now(), 'instance', d.leased_to,
                                   'error', 'lease expired')) ELSE '[]' END,
            leased_to = p_instance,
            attempts = d.attempts + 1,
            delivered_at = coalesce(d.delivered_at, now())
        WHERE d.tenant_id = t AND d.id = ANY (taken) AND d.status IN ('pending', 'leased')
        RETURNING d.id, d.message_id, d.attempts, d.lease_until, d.status;
        GET DIAGNOSTICS got = ROW_COUNT;
        rounds := rounds + 1;
        EXIT WHEN got > 0 OR rounds >= 10;
    END LOOP;
END $$;

-- Ack: the copies of p_messages leased to p_instance are processed. Returns the
-- messages acked; one not returned was not leased to p_instance (the caller says why).
CREATE OR REPLACE FUNCTION messages_ack(p_messages uuid[], p_instance uuid)
RETURNS TABLE (message_id uuid) LANGUAGE sql AS $$
    UPDATE message_deliveries d
    SET status = 'acked', acked_at = now(), lease_until = NULL
    WHERE d.tenant_id = app_current_tenant() AND d.message_id = ANY (p_messages)
      AND d.leased_to = p_instance AND d.status = 'leased'
    RETURNING d.message_id
$$;

-- Nack: the copy leased to p_instance goes back, due again after p_delay_s (NULL: a
-- backoff doubling from half a second to a minute), or is dead when that was its last
-- attempt. Returns its new status (NULL: not leased to it).
CREATE OR REPLACE FUNCTION messages_nack(p_message uuid, p_instance uuid, p_error text,
                                         p_delay_s real)
RETURNS text LANGUAGE sql AS $$
    UPDATE message_deliveries d
    SET status = CASE WHEN d.attempts > d.max_retries THEN 'dead' ELSE 'pending' END,
        available_at = now() + make_interval(secs => coalesce(
            p_delay_s, least(60, 0.5 * 2 ^ (d.attempts - 1)))),
        lease_until = NULL,
        last_error = p_error,
        history = d.history || jsonb_build_array(jsonb_build_object(
            'at', now(), 'instance', p_instance, 'error', p_error))
    WHERE d.tenant_id = app_current_tenant() AND d.message_id = p_message
      AND d.leased_to = p_instance AND d.status = 'leased'
    RETURNING d.status
$$;

-- Presence: live instances silent for p_stale_s seconds are marked offline (their status
-- history says why), and the copies addressed to them alone that are not their own
-- (a message to that instance, not a broadcast's or a topic's copy) go to any instance
-- of their agent; copies whose time to live passed are expired. Returns the instances
-- marked offline.
CREATE OR REPLACE FUNCTION messages_presence(p_stale_s real)
RETURNS TABLE (instance_id uuid) LANGUAGE plpgsql AS $$
DECLARE
    gone uuid[];
BEGIN
    PERFORM set_config('app.status_reason', 'no heartbeat', true);
    WITH marked AS (
        UPDATE agent_instances i SET status = 'offline'
        WHERE i.status IN ('starting', 'idle', 'busy')
          AND coalesce(i.heartbeat_at, i.started_at) < now() - make_interval(secs => p_stale_s)
        RETURNING i.id
    )
    SELECT array_agg(marked.id) INTO gone FROM marked;
    PERFORM set_config('app.status_reason', '', true);
    -- Copies past their time to live that no receiver will look at again (an offline
    -- instance's own copies): expired, so that they are counted.
    UPDATE message_deliveries d SET status = 'expired', lease_until = NULL
    WHERE d.tenant_id = app_current_tenant() AND d.status IN ('pending', 'leased')
      AND d.expires_at <= now() AND (d.status = 'pending' OR d.lease_until <= now());
    IF gone IS NULL THEN
        RETURN;
    END IF;
    UPDATE message_deliveries d SET instance_id = NULL
    WHERE d.tenant_id = app_current_tenant() AND d.instance_id = ANY (gone) AND NOT d.fanout
      AND d.status IN ('pending', 'leased');
    PERFORM pg_notify('agentplane_messages', app_current_tenant()::text || ' ' || a.agent_id::text)
    FROM (SELECT DISTINCT i.agent_id FROM agent_instances i WHERE i.id = ANY (gone)) a;
    RETURN QUERY SELECT unnest(gone);
END $$;

-- Requeue a dead copy: due now, its attempts and time to live counted afresh.
CREATE OR REPLACE FUNCTION messages_requeue(p_delivery uuid)
RETURNS TABLE (message_id uuid, agent_id uuid) LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    UPDATE message_deliveries d
    SET status = 'pending', attempts = 0, available_at = now(), leased_to = NULL,
        expires_at = now() + make_interval(secs => m.ttl_s),
        history = d.history || jsonb_build_array(jsonb_build_object('at', now(),
                                                                    'error', 'requeued'))
    FROM messages m
    WHERE d.tenant_id = app_current_tenant() AND d.id = p_delivery AND d.status = 'dead'
      AND m.tenant_id = d.tenant_id AND m.id = d.message_id
    RETURNING d.message_id, d.agent_id;
    IF FOUND THEN
        PERFORM pg_notify('agentplane_messages', app_current_tenant()::text || ' '
                          || (SELECT md.agent_id FROM message_deliveries md
                              WHERE md.tenant_id = app_current_tenant()
                                AND md.id = p_delivery)::text);
    END IF;
END $$;
