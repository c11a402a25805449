-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- AutoSDLC's message tables as views over the bus, named and typed as the seed names
-- them, so that its queries run unchanged; security_invoker, so row-level security
-- applies to the caller. A message's delivery times are its copies' first delivery and
-- last ack (processed_at once every copy is acked); retry_count counts redeliveries.
-- message_queue lists the copies that were delayed, retried or failed (dead), as the
-- seed's table held the deliveries that did not go through at once.

CREATE OR REPLACE VIEW autosdlc.agent_messages WITH (security_invoker = true) AS
SELECT m.id,
       m.id::text::varchar(255) AS message_id,
       m.from_agent_id AS source_agent_id,
       m.to_agent_id AS destination_agent_id,
       (CASE m.to_kind WHEN 'instance' THEN 'agent' ELSE m.to_kind END)::varchar(50)
           AS destination_type,
       m.type::varchar(50) AS message_type,
       m.priority::integer AS priority,
       m.payload,
       m.correlation_id::varchar(255) AS correlation_id,
       m.requires_ack,
       CASE WHEN m.requires_ack THEN d.last_acked END AS ack_received_at,
       m.ttl_s AS ttl,
       coalesce(d.redeliveries, 0)::integer AS retry_count,
       m.max_retries,
       m.created_at,
       d.first_delivered AS delivered_at,
       CASE WHEN d.copies > 0 AND d.copies = d.acked THEN d.last_acked END AS processed_at
FROM messages m
LEFT JOIN LATERAL (
    SELECT count(*) AS copies,
           count(*) FILTER (WHERE md.status = 'acked') AS acked,
           min(md.delivered_at) AS first_delivered,
           max(md.acked_at) AS last_acked,
           sum(greatest(md.attempts - 1, 0)) AS redeliveries
    FROM message_deliveries md
    WHERE md.tenant_id = m.tenant_id AND md.message_id = m.id
) d ON true;

CREATE OR REPLACE VIEW autosdlc.message_queue WITH (security_invoker = true) AS
SELECT d.id,
       d.message_id,
       (CASE d.status WHEN 'dead' THEN 'failed' WHEN 'leased' THEN 'processing'
                      ELSE d.status END)::varchar(50) AS status,
       d.available_at AS scheduled_for,
       d.attempts,
       d.last_error,
       d.created_at
FROM message_deliveries d
WHERE d.status = 'dead' OR d.attempts > 1 OR d.available_at > d.created_at;
