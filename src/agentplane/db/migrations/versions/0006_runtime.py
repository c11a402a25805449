"""Agents, workflows, runs, tasks, agent and tool executions, run data, input requests.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24

Every table is tenant-scoped and keyed (tenant_id, ...) so the schema can later be
distributed by tenant. Statuses are CHECK domains. Run data is immutable (no UPDATE
grant, a key written twice is a unique violation). An agent instance's status
history is written by a trigger, so no code path can change a status unrecorded.
"""

from agentplane.db.migrations import sql, tenant_rls

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TABLES = (
    "agents",
    "agent_total_deltas",
    "agent_instances",
    "agent_instance_status_history",
    "workflows",
    "workflow_versions",
    "runs",
    "tasks",
    "task_dependencies",
    "agent_executions",
    "agent_execution_transitions",
    "tool_executions",
    "run_data",
    "input_requests",
    "agent_interactions",
)

STATES = (
    "'IDLE', 'ANALYZING', 'PLANNING', 'RETRIEVING', 'EXECUTING', 'VALIDATING', "
    "'SYNTHESIZING', 'COMPLETED', 'FAILED'"
)

UPGRADE = """
CREATE TABLE agents (
    tenant_id              uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                     uuid NOT NULL DEFAULT gen_random_uuid(),
    slug                   text NOT NULL CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,49}$'),
    project_id             uuid REFERENCES projects (id) ON DELETE SET NULL,
    name                   text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role                   text NOT NULL CHECK (length(role) BETWEEN 1 AND 200),
    model                  text NOT NULL CHECK (length(model) BETWEEN 1 AND 200),
    specialties            text[] NOT NULL DEFAULT '{}',
    instructions           text NOT NULL DEFAULT '' CHECK (length(instructions) <= 100000),
    personality_emoji      text CHECK (length(personality_emoji) <= 10),
    tools                  text[] NOT NULL DEFAULT '{}',
    status                 text NOT NULL DEFAULT 'active'
                           CHECK (status IN ('active', 'inactive', 'maintenance')),
    version                integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    -- Totals folded in from agent_total_deltas; readers add the deltas not folded yet.
    total_tasks_completed  integer NOT NULL DEFAULT 0,
    total_tasks_failed     integer NOT NULL DEFAULT 0,
    total_tokens_used      bigint NOT NULL DEFAULT 0,
    total_cost_usd         numeric(20, 10) NOT NULL DEFAULT 0,
    total_latency_ms       bigint NOT NULL DEFAULT 0,
    average_latency_ms     double precision NOT NULL GENERATED ALWAYS AS (
        total_latency_ms::float8 / greatest(total_tasks_completed + total_tasks_failed, 1)
    ) STORED,
    success_rate           double precision NOT NULL GENERATED ALWAYS AS (
        CASE WHEN total_tasks_completed + total_tasks_failed = 0 THEN 100.0
             ELSE 100.0 * total_tasks_completed / (total_tasks_completed + total_tasks_failed)
        END
    ) STORED,
    metadata               jsonb NOT NULL DEFAULT '{}',
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, slug)
);
CREATE INDEX agents_status_idx ON agents (tenant_id, status);
CREATE TRIGGER agents_updated_at BEFORE UPDATE ON agents
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- What each finished task adds to its agent's totals. Appended by the task's finish
-- transaction and folded into the agent's row when a run ends, so concurrent tasks of
-- one agent never queue on that row (its lock would serialise every task of the agent).
CREATE TABLE agent_total_deltas (
    tenant_id   uuid NOT NULL,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    agent_id    uuid NOT NULL,
    completed   integer NOT NULL CHECK (completed >= 0),
    failed      integer NOT NULL CHECK (failed >= 0),
    tokens      bigint NOT NULL CHECK (tokens >= 0),
    cost_usd    numeric(20, 10) NOT NULL,
    latency_ms  bigint NOT NULL CHECK (latency_ms >= 0),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX agent_total_deltas_agent_idx ON agent_total_deltas (tenant_id, agent_id);

-- A live worker of an agent (AutoSDLC's instance half of `agents`).
CREATE TABLE agent_instances (
    tenant_id     uuid NOT NULL,
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    agent_id      uuid NOT NULL,
    instance_key  text NOT NULL CHECK (length(instance_key) BETWEEN 1 AND 255),
    status        text NOT NULL DEFAULT 'starting'
                  CHECK (status IN ('starting', 'idle', 'busy', 'stopping', 'stopped', 'failed')),
    capabilities  text[] NOT NULL DEFAULT '{}',
    metadata      jsonb NOT NULL DEFAULT '{}',
    heartbeat_at  timestamptz,
    started_at    timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, instance_key),
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX agent_instances_agent_idx ON agent_instances (tenant_id, agent_id);
CREATE TRIGGER agent_instances_updated_at BEFORE UPDATE ON agent_instances
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE agent_instance_status_history (
    tenant_id    uuid NOT NULL,
    id           bigint GENERATED ALWAYS AS IDENTITY,
    instance_id  uuid NOT NULL,
    status       text NOT NULL,
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, instance_id) REFERENCES agent_instances (tenant_id, id)
        ON DELETE CASCADE
);
CREATE INDEX agent_instance_status_history_idx
    ON agent_instance_status_history (tenant_id, instance_id, created_at);

-- The reason of a change travels in the transaction setting app.status_reason.
CREATE FUNCTION agent_instance_status_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO agent_instance_status_history (tenant_id, instance_id, status, reason)
        VALUES (NEW.tenant_id, NEW.id, NEW.status,
                nullif(current_setting('app.status_reason', true), ''));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER agent_instances_status_log AFTER INSERT OR UPDATE OF status ON agent_instances
    FOR EACH ROW EXECUTE FUNCTION agent_instance_status_log();

CREATE TABLE workflows (
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id              uuid NOT NULL DEFAULT gen_random_uuid(),
    name            text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,99}$'),
    description     text CHECK (length(description) <= 10000),
    latest_version  integer NOT NULL DEFAULT 1 CHECK (latest_version >= 1),
    created_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);
CREATE TRIGGER workflows_updated_at BEFORE UPDATE ON workflows
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Versions are never changed: an edit is a new version; runs keep theirs.
CREATE TABLE workflow_versions (
    tenant_id    uuid NOT NULL,
    workflow_id  uuid NOT NULL,
    version      integer NOT NULL CHECK (version >= 1),
    definition   jsonb NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
    source       text NOT NULL,
    format       text NOT NULL CHECK (format IN ('yaml', 'json')),
    created_by   uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, workflow_id, version),
    FOREIGN KEY (tenant_id, workflow_id) REFERENCES workflows (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE runs (
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id                 uuid NOT NULL DEFAULT gen_random_uuid(),
    workflow_id        uuid,
    workflow_version   integer,
    kind               text NOT NULL CHECK (kind IN ('workflow', 'query')),
    mode               text CHECK (mode IN ('SIMPLE', 'STANDARD', 'COMPLEX')),
    query              text CHECK (length(query) <= 100000),
    inputs             jsonb NOT NULL DEFAULT '{}',
    status             text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'running', 'paused', 'completed',
                                         'failed', 'cancelled')),
    total_tasks        integer NOT NULL DEFAULT 0 CHECK (total_tasks >= 0),
    completed_tasks    integer NOT NULL DEFAULT 0 CHECK (completed_tasks >= 0),
    failed_tasks       integer NOT NULL DEFAULT 0 CHECK (failed_tasks >= 0),
    prompt_tokens      bigint NOT NULL DEFAULT 0,
    completion_tokens  bigint NOT NULL DEFAULT 0,
    total_tokens       bigint NOT NULL DEFAULT 0,
    total_cost_usd     numeric(20, 10) NOT NULL DEFAULT 0,
    duration_ms        integer,
    agents_used        integer NOT NULL DEFAULT 0,
    tools_invoked      integer NOT NULL DEFAULT 0,
    cache_hits         integer NOT NULL DEFAULT 0,
    complexity_score   numeric(3, 2) CHECK (complexity_score BETWEEN 0 AND 1),
    result             text,
    response           jsonb NOT NULL DEFAULT '{}',
    error              text,
    parent_run_id      uuid,
    call_stack         text[] NOT NULL DEFAULT '{}',
    session_id         uuid,
    user_id            uuid,
    api_key_id         uuid,
    metadata           jsonb NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    completed_at       timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    -- event_counters (0007) refers to runs by id alone.
    CONSTRAINT runs_id_key UNIQUE (id),
    FOREIGN KEY (tenant_id, workflow_id, workflow_version)
        REFERENCES workflow_versions (tenant_id, workflow_id, version),
    CHECK ((kind = 'workflow') = (workflow_id IS NOT NULL)),
    CHECK (completed_tasks + failed_tasks <= total_tasks)
);
-- Nested runs (Shaman's parent_run_id); added once the key it refers to exists.
ALTER TABLE runs ADD FOREIGN KEY (tenant_id, parent_run_id) REFERENCES runs (tenant_id, id)
    ON DELETE CASCADE;
CREATE INDEX runs_list_idx ON runs (tenant_id, created_at DESC, id DESC);
CREATE INDEX runs_status_idx ON runs (tenant_id, status, created_at DESC);
CREATE INDEX runs_workflow_idx ON runs (tenant_id, workflow_id) WHERE workflow_id IS NOT NULL;
CREATE INDEX runs_session_idx ON runs (tenant_id, session_id) WHERE session_id IS NOT NULL;
CREATE INDEX runs_parent_idx ON runs (tenant_id, parent_run_id) WHERE parent_run_id IS NOT NULL;
CREATE TRIGGER runs_updated_at BEFORE UPDATE ON runs
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- pending: waits on dependencies; queued: a job is (or will be) on the queue;
-- waiting: a person was asked for input. `dispatch` fences jobs: a job carries the
-- dispatch it was enqueued for and is a no-op once the task was dispatched again.
CREATE TABLE tasks (
    tenant_id         uuid NOT NULL,
    id                uuid NOT NULL DEFAULT gen_random_uuid(),
    run_id            uuid NOT NULL,
    node              text NOT NULL CHECK (length(node) BETWEEN 1 AND 200),
    agent_id          uuid NOT NULL,
    parent_task_id    uuid,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'queued', 'running', 'waiting',
                                        'completed', 'failed', 'cancelled')),
    instruction       text NOT NULL DEFAULT '',
    input             jsonb NOT NULL DEFAULT '{}',
    output            jsonb,
    error             text,
    pending_deps      integer NOT NULL DEFAULT 0 CHECK (pending_deps >= 0),
    dispatch          integer NOT NULL DEFAULT 0,
    retry_count       integer NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    max_retries       integer NOT NULL DEFAULT 0 CHECK (max_retries BETWEEN 0 AND 100),
    retry_delay_s     real NOT NULL DEFAULT 1 CHECK (retry_delay_s >= 0),
    timeout_s         real CHECK (timeout_s > 0),
    deadline_at       timestamptz,
    prompt_tokens     integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    tokens_used       integer NOT NULL DEFAULT 0,
    cost_usd          numeric(20, 10) NOT NULL DEFAULT 0,
    metadata          jsonb NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    completed_at      timestamptz,
    duration_ms       integer,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, run_id, node),
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
);
ALTER TABLE tasks ADD FOREIGN KEY (tenant_id, parent_task_id) REFERENCES tasks (tenant_id, id)
    ON DELETE CASCADE;
CREATE INDEX tasks_run_idx ON tasks (tenant_id, run_id, created_at);
CREATE INDEX tasks_agent_idx ON tasks (tenant_id, agent_id, status, created_at DESC);
CREATE INDEX tasks_parent_idx ON tasks (tenant_id, parent_task_id)
    WHERE parent_task_id IS NOT NULL;
CREATE TRIGGER tasks_updated_at BEFORE UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE task_dependencies (
    tenant_id           uuid NOT NULL,
    run_id              uuid NOT NULL,
    task_id             uuid NOT NULL,
    depends_on_task_id  uuid NOT NULL,
    dependency_type     text NOT NULL DEFAULT 'finish_to_start'
                        CHECK (dependency_type IN ('finish_to_start')),
    PRIMARY KEY (tenant_id, task_id, depends_on_task_id),
    FOREIGN KEY (tenant_id, task_id) REFERENCES tasks (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, depends_on_task_id) REFERENCES tasks (tenant_id, id)
        ON DELETE CASCADE,
    CHECK (task_id <> depends_on_task_id)
);
CREATE INDEX task_dependencies_upstream_idx ON task_dependencies (tenant_id, depends_on_task_id);

CREATE TABLE agent_executions (
    tenant_id          uuid NOT NULL,
    id                 uuid NOT NULL DEFAULT gen_random_uuid(),
    run_id             uuid NOT NULL,
    task_id            uuid NOT NULL,
    agent_id           uuid NOT NULL,
    attempt            integer NOT NULL DEFAULT 1,
    state              text NOT NULL DEFAULT 'IDLE' CHECK (state IN ({states})),
    strategy           text,
    model_used         text,
    input              text NOT NULL DEFAULT '',
    output             text,
    messages           jsonb NOT NULL DEFAULT '[]',
    prompt_tokens      integer NOT NULL DEFAULT 0,
    completion_tokens  integer NOT NULL DEFAULT 0,
    tokens_used        integer NOT NULL DEFAULT 0,
    cost_usd           numeric(20, 10) NOT NULL DEFAULT 0,
    llm_calls          integer NOT NULL DEFAULT 0,
    duration_ms        integer,
    error_message      text,
    metadata           jsonb NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, task_id) REFERENCES tasks (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, agent_id) REFERENCES agents (tenant_id, id)
);
CREATE INDEX agent_executions_run_idx ON agent_executions (tenant_id, run_id, created_at);
CREATE INDEX agent_executions_task_idx ON agent_executions (tenant_id, task_id);
CREATE TRIGGER agent_executions_updated_at BEFORE UPDATE ON agent_executions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Every FSM transition, with the time it happened (written in batches by the runtime).
CREATE TABLE agent_execution_transitions (
    tenant_id           uuid NOT NULL,
    agent_execution_id  uuid NOT NULL,
    seq                 integer NOT NULL,
    from_state          text CHECK (from_state IN ({states})),
    to_state            text NOT NULL CHECK (to_state IN ({states})),
    note                text,
    at                  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, agent_execution_id, seq),
    FOREIGN KEY (tenant_id, agent_execution_id) REFERENCES agent_executions (tenant_id, id)
        ON DELETE CASCADE
);

CREATE TABLE tool_executions (
    tenant_id           uuid NOT NULL,
    id                  uuid NOT NULL DEFAULT gen_random_uuid(),
    run_id              uuid NOT NULL,
    task_id             uuid NOT NULL,
    agent_execution_id  uuid NOT NULL,
    agent_id            uuid NOT NULL,
    tool_name           text NOT NULL CHECK (length(tool_name) BETWEEN 1 AND 255),
    call_id             text,
    input_params        jsonb NOT NULL DEFAULT '{}',
    output              text,
    success             boolean NOT NULL DEFAULT true,
    error               text,
    duration_ms         integer,
    tokens_consumed     integer NOT NULL DEFAULT 0,
    metadata            jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, agent_execution_id) REFERENCES agent_executions (tenant_id, id)
        ON DELETE CASCADE
);
CREATE INDEX tool_executions_run_idx ON tool_executions (tenant_id, run_id, created_at);
CREATE INDEX tool_executions_name_idx ON tool_executions (tenant_id, tool_name, created_at DESC);

-- Shaman's workflow_data: facts shared by the agents of a run, written once.
CREATE TABLE run_data (
    tenant_id         uuid NOT NULL,
    run_id            uuid NOT NULL,
    key               text NOT NULL CHECK (key ~ '^[A-Za-z0-9_.:/-]{1,255}$'),
    value             jsonb NOT NULL,
    data_type         text NOT NULL DEFAULT 'json' CHECK (length(data_type) <= 50),
    tags              text[] NOT NULL DEFAULT '{}',
    task_id           uuid,
    created_by_agent  uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, run_id, key),
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs (tenant_id, id) ON DELETE CASCADE
);
REVOKE UPDATE ON run_data FROM {app};

CREATE TABLE input_requests (
    tenant_id           uuid NOT NULL,
    id                  uuid NOT NULL DEFAULT gen_random_uuid(),
    run_id              uuid NOT NULL,
    task_id             uuid NOT NULL,
    agent_execution_id  uuid,
    request_type        text NOT NULL DEFAULT 'text' CHECK (length(request_type) <= 50),
    prompt              text NOT NULL CHECK (length(prompt) BETWEEN 1 AND 10000),
    schema              jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(schema) = 'object'),
    call_id             text,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'answered', 'cancelled')),
    response            jsonb,
    responded_by        uuid,
    requested_at        timestamptz NOT NULL DEFAULT now(),
    responded_at        timestamptz,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, task_id) REFERENCES tasks (tenant_id, id) ON DELETE CASCADE,
    CHECK ((status = 'answered') = (responded_at IS NOT NULL))
);
CREATE INDEX input_requests_run_idx ON input_requests (tenant_id, run_id);
CREATE INDEX input_requests_pending_idx ON input_requests (tenant_id, requested_at)
    WHERE status = 'pending';

CREATE TABLE agent_interactions (
    tenant_id         uuid NOT NULL,
    id                uuid NOT NULL DEFAULT gen_random_uuid(),
    run_id            uuid NOT NULL,
    task_id           uuid,
    from_agent_id     uuid NOT NULL,
    to_agent_id       uuid NOT NULL,
    interaction_type  text NOT NULL
                      CHECK (interaction_type IN ('handoff', 'collaboration', 'review',
                                                  'feedback')),
    message           text,
    payload           jsonb NOT NULL DEFAULT '{}',
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, run_id) REFERENCES runs (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, from_agent_id) REFERENCES agents (tenant_id, id),
    FOREIGN KEY (tenant_id, to_agent_id) REFERENCES agents (tenant_id, id)
);
CREATE INDEX agent_interactions_run_idx ON agent_interactions (tenant_id, run_id, created_at);
CREATE INDEX agent_interactions_agents_idx
    ON agent_interactions (tenant_id, from_agent_id, to_agent_id);
"""


def upgrade() -> None:
    sql(UPGRADE.replace("{states}", STATES))
    for table in TABLES:
        sql(tenant_rls(table))


def downgrade() -> None:
    sql("DROP TABLE " + ", ".join(reversed(TABLES)))
    sql("DROP FUNCTION agent_instance_status_log()")
