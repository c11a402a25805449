"""Agent-to-agent messages (AutoSDLC's agent_messages and message_queue).

`messages` holds what was sent, once; `message_deliveries` holds each receiver's copy
(one for a message to an agent or an instance, one per live instance for a broadcast
or a topic): its status, lease, attempts and history. `message_subscriptions` are the
topics an instance listens to. Agent instances gain the status `offline` (no heartbeat).
The `autosdlc` schema holds the seed's own tables as views (messages/sql/views.sql).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03
"""

from agentplane.db.migrations import apply_sql, sql

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

sql_files = {
    "messages/sql/messages.sql": "1e8f314d3fd53e85c263e5853b157787ca93560345890ad83fabfb69167ec89a",
    "messages/sql/views.sql": "d0a90eb5a7cda5f2d3289c8d24cd825933b9190b085c86357173eedf39e178b2",
}

STATES = "'starting', 'idle', 'busy', 'stopping', 'stopped', 'failed'"


def upgrade() -> None:
    sql(f"""
    ALTER TABLE agent_instances
        DROP CONSTRAINT agent_instances_status_check,
        ADD CONSTRAINT agent_instances_status_check
            CHECK (status IN ({STATES}, 'offline'));

    CREATE TABLE messages (
        tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        id                uuid NOT NULL,
        project_id        uuid,
        from_agent_id     uuid,
        from_instance_id  uuid,
        to_kind           text NOT NULL
                          CHECK (to_kind IN ('agent', 'instance', 'topic', 'broadcast')),
        to_agent_id       uuid,
        to_instance_id    uuid,
        topic             text CHECK (topic ~ '^[A-Za-z0-9][A-Za-z0-9_.:/-]{{0,127}}$'),
        type              text NOT NULL CHECK (length(type) BETWEEN 1 AND 64),
        priority          smallint NOT NULL DEFAULT 1 CHECK (priority BETWEEN 0 AND 9),
        payload           jsonb NOT NULL DEFAULT '{{}}',
        correlation_id    text CHECK (length(correlation_id) BETWEEN 1 AND 255),
        reply_to          uuid,
        requires_ack      boolean NOT NULL DEFAULT true,
        ttl_s             integer CHECK (ttl_s > 0),
        max_retries       integer NOT NULL DEFAULT 3 CHECK (max_retries BETWEEN 0 AND 100),
        run_id            uuid,
        task_id           uuid,
        available_at      timestamptz NOT NULL DEFAULT now(),
        expires_at        timestamptz,
        created_at        timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, id),
        FOREIGN KEY (tenant_id, from_agent_id) REFERENCES agents (tenant_id, id)
            ON DELETE SET NULL (from_agent_id),
        FOREIGN KEY (tenant_id, to_agent_id) REFERENCES agents (tenant_id, id)
            ON DELETE CASCADE,
        FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE,
        FOREIGN KEY (tenant_id, run_id) REFERENCES runs (tenant_id, id) ON DELETE SET NULL (run_id),
        CHECK ((to_kind IN ('agent', 'instance')) = (to_agent_id IS NOT NULL)),
        CHECK ((to_kind = 'instance') = (to_instance_id IS NOT NULL)),
        CHECK ((to_kind = 'topic') = (topic IS NOT NULL))
    );
    CREATE INDEX messages_created_idx ON messages (tenant_id, created_at DESC, id DESC);
    CREATE INDEX messages_correlation_idx ON messages (tenant_id, correlation_id)
        WHERE correlation_id IS NOT NULL;

    CREATE TABLE message_deliveries (
        tenant_id       uuid NOT NULL,
        id              uuid NOT NULL DEFAULT gen_random_uuid(),
        seq             bigint GENERATED ALWAYS AS IDENTITY,
        message_id      uuid NOT NULL,
        agent_id        uuid NOT NULL,
        instance_id     uuid,
        fanout          boolean NOT NULL DEFAULT false,
        status          text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'leased', 'acked', 'dead', 'expired')),
        priority        smallint NOT NULL,
        requires_ack    boolean NOT NULL,
        correlation_id  text,
        order_key       bigint,
        available_at    timestamptz NOT NULL,
        expires_at      timestamptz,
        leased_to       uuid,
        lease_until     timestamptz,
        attempts        integer NOT NULL DEFAULT 0,
        max_retries     integer NOT NULL,
        last_error      text,
        history         jsonb NOT NULL DEFAULT '[]',
        created_at      timestamptz NOT NULL DEFAULT now(),
        delivered_at    timestamptz,
        acked_at        timestamptz,
        PRIMARY KEY (tenant_id, id),
        FOREIGN KEY (tenant_id, message_id) REFERENCES messages (tenant_id, id)
            ON DELETE CASCADE,
        FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE,
        CHECK ((status = 'leased') = (lease_until IS NOT NULL))
    );
    -- What a receiver claims: the ready copies of its agent, by priority then send order.
    CREATE INDEX message_deliveries_ready_idx
        ON message_deliveries (tenant_id, agent_id, priority DESC, seq)
        WHERE status IN ('pending', 'leased');
    CREATE INDEX message_deliveries_order_idx
        ON message_deliveries (tenant_id, agent_id, order_key, seq)
        WHERE order_key IS NOT NULL AND status IN ('pending', 'leased');
    CREATE INDEX message_deliveries_message_idx ON message_deliveries (tenant_id, message_id);
    CREATE INDEX message_deliveries_dead_idx ON message_deliveries (tenant_id, created_at DESC)
        WHERE status = 'dead';
    CREATE INDEX message_deliveries_instance_idx ON message_deliveries (tenant_id, instance_id)
        WHERE instance_id IS NOT NULL AND status IN ('pending', 'leased');

    CREATE TABLE message_subscriptions (
        tenant_id    uuid NOT NULL,
        instance_id  uuid NOT NULL,
        topic        text NOT NULL CHECK (topic ~ '^[A-Za-z0-9][A-Za-z0-9_.:/-]{{0,127}}$'),
        created_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, instance_id, topic),
        FOREIGN KEY (tenant_id, instance_id) REFERENCES agent_instances (tenant_id, id)
            ON DELETE CASCADE
    );
    CREATE INDEX message_subscriptions_topic_idx ON message_subscriptions (tenant_id, topic);

    -- The seed's tables, as views (created by messages/sql/views.sql and later files).
    CREATE SCHEMA autosdlc;
    GRANT USAGE ON SCHEMA autosdlc TO {{app}};
    ALTER DEFAULT PRIVILEGES IN SCHEMA autosdlc GRANT SELECT ON TABLES TO {{app}};
    """)
    apply_sql(revision, sql_files)


def downgrade() -> None:
    sql(f"""
    ALTER DEFAULT PRIVILEGES IN SCHEMA autosdlc REVOKE SELECT ON TABLES FROM {{app}};
    DROP SCHEMA autosdlc CASCADE;
    DROP FUNCTION messages_send(jsonb), messages_receive(uuid, uuid, integer, real, text),
        messages_ack(uuid[], uuid), messages_nack(uuid, uuid, text, real),
        messages_presence(real), messages_requeue(uuid);
    DROP TABLE message_subscriptions, message_deliveries, messages;
    UPDATE agent_instances SET status = 'stopped' WHERE status = 'offline';
    ALTER TABLE agent_instances
        DROP CONSTRAINT agent_instances_status_check,
        ADD CONSTRAINT agent_instances_status_check CHECK (status IN ({STATES}));
    """)
