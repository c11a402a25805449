"""LLM providers, models and prices, LLM calls, usage records, sessions, budgets.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from agentplane.db.migrations import owner_role, sql, tenant_rls

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Tables with built-in rows (tenant_id NULL) that every tenant reads but none may change.
SHARED = ("llm_providers", "llm_models", "llm_prices")
TENANT = ("sessions", "api_key_budgets", "budget_reservations", "llm_calls", "usage_records")

# Public list prices in USD per million tokens: (provider, model, context window,
# input, output, cached input, cache write). Cache writes cost extra at Anthropic (5-minute
# cache: 1.25 x input); NULL prices them as input, as OpenAI does. Tenants override these
# with rows of their own.
PRICES = [
    ("offline", "offline-1", 32768, "0", "0", "0", "NULL"),
    ("openai", "gpt-4o", 128000, "2.50", "10.00", "1.25", "NULL"),
    ("openai", "gpt-4o-mini", 128000, "0.15", "0.60", "0.075", "NULL"),
    ("openai", "gpt-4.1", 1047576, "2.00", "8.00", "0.50", "NULL"),
    ("openai", "gpt-4.1-mini", 1047576, "0.40", "1.60", "0.10", "NULL"),
    ("openai", "gpt-4.1-nano", 1047576, "0.10", "0.40", "0.025", "NULL"),
    ("openai", "o3-mini", 200000, "1.10", "4.40", "0.55", "NULL"),
    ("openai", "o4-mini", 200000, "1.10", "4.40", "0.275", "NULL"),
    ("anthropic", "claude-opus-4-0", 200000, "15.00", "75.00", "1.50", "18.75"),
    ("anthropic", "claude-sonnet-4-0", 200000, "3.00", "15.00", "0.30", "3.75"),
    ("anthropic", "claude-3-7-sonnet-latest", 200000, "3.00", "15.00", "0.30", "3.75"),
    ("anthropic", "claude-3-5-haiku-latest", 200000, "0.80", "4.00", "0.08", "1.00"),
]


def upgrade() -> None:
    sql("""
    -- Budget bookkeeping on the tenant: reserved tokens and the month monthly_token_usage counts.
    ALTER TABLE tenants
        ADD COLUMN tokens_reserved bigint NOT NULL DEFAULT 0 CHECK (tokens_reserved >= 0),
        ADD COLUMN usage_month date NOT NULL DEFAULT date_trunc('month', now())::date;

    CREATE TABLE llm_providers (
        id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        tenant_id             uuid REFERENCES tenants (id) ON DELETE CASCADE,
        name                  text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
        type                  text NOT NULL
                              CHECK (type IN ('offline', 'openai_compatible', 'anthropic')),
        base_url              text CHECK (base_url ~ '^https?://[^\\s/?#]+[^\\s?#]*$'),
        api_key_ciphertext    bytea,
        model                 text CHECK (length(model) BETWEEN 1 AND 255),
        weight                numeric(5, 2) NOT NULL DEFAULT 1.0 CHECK (weight >= 0),
        enabled               boolean NOT NULL DEFAULT true,
        config                jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
        health_status         text NOT NULL DEFAULT 'unknown'
                              CHECK (health_status IN
                                     ('healthy', 'degraded', 'unhealthy', 'unknown')),
        response_time         bigint NOT NULL DEFAULT 0,
        consecutive_failures  integer NOT NULL DEFAULT 0,
        last_error            text,
        last_checked_at       timestamptz,
        created_at            timestamptz NOT NULL DEFAULT now(),
        updated_at            timestamptz NOT NULL DEFAULT now(),
        CHECK (type = 'offline' OR base_url IS NOT NULL)
    );
    CREATE UNIQUE INDEX llm_providers_builtin_name_key ON llm_providers (name)
        WHERE tenant_id IS NULL;
    CREATE UNIQUE INDEX llm_providers_tenant_name_key ON llm_providers (tenant_id, name)
        WHERE tenant_id IS NOT NULL;
    CREATE TRIGGER llm_providers_updated_at BEFORE UPDATE ON llm_providers
        FOR EACH ROW EXECUTE FUNCTION set_updated_at();

    CREATE TABLE llm_models (
        id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        tenant_id       uuid REFERENCES tenants (id) ON DELETE CASCADE,
        provider        text NOT NULL CHECK (length(provider) BETWEEN 1 AND 63),
        name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
        context_window  integer CHECK (context_window > 0),
        created_at      timestamptz NOT NULL DEFAULT now()
    );
    CREATE UNIQUE INDEX llm_models_builtin_key ON llm_models (provider, name)
        WHERE tenant_id IS NULL;
    CREATE UNIQUE INDEX llm_models_tenant_key ON llm_models (tenant_id, provider, name)
        WHERE tenant_id IS NOT NULL;

    -- Price history: a new price closes the open one, so past calls keep their cost.
    CREATE TABLE llm_prices (
        id                       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        tenant_id                uuid REFERENCES tenants (id) ON DELETE CASCADE,
        model_id                 uuid NOT NULL REFERENCES llm_models (id) ON DELETE CASCADE,
        input_per_mtok           numeric(14, 6) NOT NULL CHECK (input_per_mtok >= 0),
        output_per_mtok          numeric(14, 6) NOT NULL CHECK (output_per_mtok >= 0),
        cached_input_per_mtok    numeric(14, 6) CHECK (cached_input_per_mtok >= 0),
        cache_write_per_mtok     numeric(14, 6) CHECK (cache_write_per_mtok >= 0),
        valid_from               timestamptz NOT NULL DEFAULT now(),
        valid_to                 timestamptz,
        created_at               timestamptz NOT NULL DEFAULT now(),
        CHECK (valid_to IS NULL OR valid_to > valid_from)
    );
    CREATE INDEX llm_prices_model_idx ON llm_prices (model_id, valid_from DESC);
    CREATE UNIQUE INDEX llm_prices_open_key ON llm_prices (model_id) WHERE valid_to IS NULL;

    CREATE FUNCTION llm_prices_no_overlap() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (
            SELECT 1 FROM llm_prices p
            WHERE p.model_id = NEW.model_id AND p.id <> NEW.id
              AND tstzrange(p.valid_from, p.valid_to) && tstzrange(NEW.valid_from, NEW.valid_to)
        ) THEN
            RAISE 'a price for this model is already valid in that period'
                USING ERRCODE = 'AP409';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER llm_prices_no_overlap BEFORE INSERT OR UPDATE ON llm_prices
        FOR EACH ROW EXECUTE FUNCTION llm_prices_no_overlap();

    -- Conversation contexts with a token budget (Shannon sessions, HelixAgent user_sessions).
    CREATE TABLE sessions (
        id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        user_id          uuid REFERENCES users (id) ON DELETE SET NULL,
        external_id      text CHECK (length(external_id) BETWEEN 1 AND 255),
        context          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(context) = 'object'),
        token_budget     bigint NOT NULL DEFAULT 10000 CHECK (token_budget >= 0),
        tokens_used      bigint NOT NULL DEFAULT 0 CHECK (tokens_used >= 0),
        tokens_reserved  bigint NOT NULL DEFAULT 0 CHECK (tokens_reserved >= 0),
        request_count    integer NOT NULL DEFAULT 0,
        memory_id        uuid,
        last_activity    timestamptz NOT NULL DEFAULT now(),
        expires_at       timestamptz,
        created_at       timestamptz NOT NULL DEFAULT now(),
        updated_at       timestamptz NOT NULL DEFAULT now(),
        deleted_at       timestamptz,
        deleted_by       uuid REFERENCES users (id) ON DELETE SET NULL
    );
    CREATE INDEX sessions_tenant_created_idx ON sessions (tenant_id, created_at DESC);
    CREATE INDEX sessions_user_idx ON sessions (tenant_id, user_id);
    CREATE INDEX sessions_expires_at_idx ON sessions (expires_at) WHERE expires_at IS NOT NULL;
    -- An external id names one live session per user (no user: one per tenant).
    CREATE UNIQUE INDEX sessions_user_external_id_key ON sessions
        (tenant_id, coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid), external_id)
        WHERE external_id IS NOT NULL AND deleted_at IS NULL;
    CREATE TRIGGER sessions_updated_at BEFORE UPDATE ON sessions
        FOR EACH ROW EXECUTE FUNCTION set_updated_at();

    -- An optional token budget per API key; no row means no per-key limit.
    CREATE TABLE api_key_budgets (
        api_key_id       uuid PRIMARY KEY,
        tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        token_budget     bigint NOT NULL CHECK (token_budget >= 0),
        tokens_used      bigint NOT NULL DEFAULT 0 CHECK (tokens_used >= 0),
        tokens_reserved  bigint NOT NULL DEFAULT 0 CHECK (tokens_reserved >= 0),
        updated_at       timestamptz NOT NULL DEFAULT now(),
        FOREIGN KEY (tenant_id, api_key_id) REFERENCES api_keys (tenant_id, id) ON DELETE CASCADE
    );
    CREATE INDEX api_key_budgets_tenant_idx ON api_key_budgets (tenant_id);
    CREATE TRIGGER api_key_budgets_updated_at BEFORE UPDATE ON api_key_budgets
        FOR EACH ROW EXECUTE FUNCTION set_updated_at();

    -- Worst-case tokens held by calls in flight; a crashed caller's hold expires. `used`
    -- is written with the call's ledger rows, so the hold can be settled (by the caller,
    -- or by the sweeper after a crash) exactly once and to the right amount.
    CREATE TABLE budget_reservations (
        id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        session_id  uuid REFERENCES sessions (id) ON DELETE CASCADE,
        api_key_id  uuid,
        tokens      bigint NOT NULL CHECK (tokens >= 0),
        used        bigint CHECK (used >= 0),
        created_at  timestamptz NOT NULL DEFAULT now(),
        expires_at  timestamptz NOT NULL
    );
    CREATE INDEX budget_reservations_expires_idx ON budget_reservations (expires_at);

    CREATE TABLE llm_calls (
        id                  uuid NOT NULL DEFAULT gen_random_uuid(),
        tenant_id           uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        user_id             uuid REFERENCES users (id) ON DELETE SET NULL,
        api_key_id          uuid,
        session_id          uuid REFERENCES sessions (id) ON DELETE SET NULL,
        run_id              uuid,
        task_id             uuid,
        agent_execution_id  uuid,
        agent_id            uuid,
        provider_id         uuid REFERENCES llm_providers (id) ON DELETE SET NULL,
        provider            text NOT NULL,
        model               text NOT NULL,
        request             jsonb NOT NULL DEFAULT '{}',
        response_content    text,
        tool_calls          jsonb,
        finish_reason       text,
        prompt_tokens       integer NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
        completion_tokens   integer NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
        cached_tokens       integer NOT NULL DEFAULT 0 CHECK (cached_tokens >= 0),
        cache_write_tokens  integer NOT NULL DEFAULT 0 CHECK (cache_write_tokens >= 0),
        total_tokens        integer GENERATED ALWAYS AS (prompt_tokens + completion_tokens) STORED,
        cost_usd            numeric(20, 10),
        cost_source         text NOT NULL DEFAULT 'unknown'
                            CHECK (cost_source IN ('price', 'provider', 'unknown')),
        reserved_tokens     bigint NOT NULL DEFAULT 0,
        stream              boolean NOT NULL DEFAULT false,
        latency_ms          integer,
        ttft_ms             integer,
        status              text NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'running', 'completed', 'failed')),
        error               text,
        created_at          timestamptz NOT NULL DEFAULT now(),
        completed_at        timestamptz,
        PRIMARY KEY (tenant_id, id)
    );
    CREATE INDEX llm_calls_tenant_created_idx ON llm_calls (tenant_id, created_at DESC);
    CREATE INDEX llm_calls_session_idx ON llm_calls (session_id) WHERE session_id IS NOT NULL;
    CREATE INDEX llm_calls_task_idx ON llm_calls (task_id) WHERE task_id IS NOT NULL;

    -- The usage ledger, one partition per UTC month (retention drops whole months). Keyed
    -- (tenant_id, created_at, id): a partitioned table's key must hold the partition key.
    -- No foreign key to llm_calls: the ledger outlives call bodies removed by retention.
    CREATE TABLE usage_records (
        id                  uuid NOT NULL DEFAULT gen_random_uuid(),
        tenant_id           uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        created_at          timestamptz NOT NULL DEFAULT now(),
        llm_call_id         uuid NOT NULL,
        user_id             uuid,
        api_key_id          uuid,
        session_id          uuid,
        run_id              uuid,
        task_id             uuid,
        agent_id            uuid,
        provider            text NOT NULL,
        model               text NOT NULL,
        prompt_tokens       integer NOT NULL CHECK (prompt_tokens >= 0),
        completion_tokens   integer NOT NULL CHECK (completion_tokens >= 0),
        cached_tokens       integer NOT NULL DEFAULT 0 CHECK (cached_tokens >= 0),
        total_tokens        integer GENERATED ALWAYS AS (prompt_tokens + completion_tokens) STORED,
        cost_usd            numeric(20, 10),
        cost_source         text NOT NULL CHECK (cost_source IN ('price', 'provider', 'unknown')),
        latency_ms          integer CHECK (latency_ms >= 0),
        PRIMARY KEY (tenant_id, created_at, id)
    ) PARTITION BY RANGE (created_at);
    -- What reports from raw rows read: a tenant's time range (the key), per user, per API
    -- key, per model.
    CREATE INDEX usage_records_user_idx ON usage_records (tenant_id, user_id, created_at);
    CREATE INDEX usage_records_key_idx ON usage_records (tenant_id, api_key_id, created_at)
        WHERE api_key_id IS NOT NULL;
    CREATE INDEX usage_records_provider_model_idx ON usage_records
        (tenant_id, provider, model, created_at);
    CREATE INDEX usage_records_task_idx ON usage_records (task_id) WHERE task_id IS NOT NULL;
    CREATE INDEX usage_records_call_idx ON usage_records (tenant_id, llm_call_id);

    -- Creates the partition holding `month` (UTC) if missing. SECURITY DEFINER so the
    -- application may call it; partitions bypass row-level security, so the application
    -- gets no privileges on them (it reads through the parent).
    CREATE FUNCTION usage_records_create_partition(month timestamptz) RETURNS text
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
    DECLARE
        lo timestamp := date_trunc('month', month AT TIME ZONE 'UTC');
        name text := 'usage_records_' || to_char(lo, 'YYYY_MM');
    BEGIN
        IF to_regclass('public.' || name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE public.%I PARTITION OF public.usage_records '
                'FOR VALUES FROM (%L) TO (%L)',
                name, lo AT TIME ZONE 'UTC', (lo + interval '1 month') AT TIME ZONE 'UTC');
            EXECUTE format('REVOKE ALL ON public.%I FROM {app}', name);
        END IF;
        RETURN name;
    END $$;

    -- The current month and `months` ahead (run at start-up and by the partition job).
    CREATE FUNCTION usage_records_ensure_partitions(months integer DEFAULT 3) RETURNS void
        LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
    AS $$
        SELECT usage_records_create_partition(now() + make_interval(months => m))
        FROM generate_series(0, greatest(months, 0)) AS m;
    $$;
    SELECT usage_records_ensure_partitions(3);
    """)
    for table in TENANT:
        sql(tenant_rls(table))
    for table in SHARED:
        sql(f"""
        ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
        ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
        CREATE POLICY tenant_read ON {table} FOR SELECT
            USING (tenant_id IS NULL OR tenant_id = app_current_tenant());
        CREATE POLICY tenant_isolation ON {table}
            USING (tenant_id = app_current_tenant())
            WITH CHECK (tenant_id = app_current_tenant());
        CREATE POLICY owner_access ON {table} TO {owner_role()} USING (true) WITH CHECK (true);
        """)
    sql(BUDGET_FUNCTIONS)
    sql("INSERT INTO llm_providers (name, type, model) VALUES ('offline', 'offline', 'offline-1')")
    for provider, model, window, inp, out, cached, write in PRICES:
        sql(f"""
        WITH m AS (INSERT INTO llm_models (provider, name, context_window)
                   VALUES ('{provider}', '{model}', {window}) RETURNING id)
        INSERT INTO llm_prices (model_id, input_per_mtok, output_per_mtok,
                                cached_input_per_mtok, cache_write_per_mtok, valid_from)
        SELECT id, {inp}, {out}, {cached}, {write}, '2024-01-01T00:00:00Z' FROM m
        """)


# Budgets live in three counters (session, API key, tenant month), always locked in that
# order so concurrent reservations cannot deadlock. Each counter is taken with one
# conditional UPDATE: the row lock serialises concurrent callers and the WHERE re-checks
# the limit against the committed value, so no interleaving can take a total past it.
#
# A call is three short transactions: reserve, journal (with the ledger rows: durable),
# settle. Reserve and settle are single autocommit statements (no lock held across a
# client round trip) and commit asynchronously (synchronous_commit off), so the hot
# tenant row is locked for microseconds rather than for a WAL flush. That is safe: WAL is
# sequential, so the durable journal commit that follows also makes the earlier reserve
# durable; a settle lost in a crash leaves its journaled hold, which the sweeper settles
# to the journaled amount.
BUDGET_FUNCTIONS = """
-- Called as one autocommit statement: it sets its tenant (row-level security applies as
-- on any tenant connection) and its row locks end with the statement.
CREATE FUNCTION llm_reserve(p_tenant uuid, p_session uuid, p_api_key uuid, p_tokens bigint,
                            p_ttl interval, p_lock_timeout text)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_tenant uuid;
    v_month date := date_trunc('month', now())::date;
    v_id uuid;
    s record;
    k record;
    t record;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    v_tenant := app_current_tenant();
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    PERFORM set_config('synchronous_commit', 'off', true);
    IF v_tenant IS NULL THEN
        RAISE 'no tenant is set for this transaction' USING ERRCODE = 'AP422';
    END IF;
    IF p_tokens < 0 THEN
        RAISE 'tokens to reserve must not be negative' USING ERRCODE = 'AP422';
    END IF;
    IF p_session IS NOT NULL THEN
        UPDATE sessions SET tokens_reserved = tokens_reserved + p_tokens
        WHERE id = p_session AND deleted_at IS NULL AND (expires_at IS NULL OR expires_at > now())
          AND tokens_used + tokens_reserved + p_tokens <= token_budget;
        IF NOT FOUND THEN
            SELECT * INTO s FROM sessions WHERE id = p_session;
            IF NOT FOUND THEN
                RAISE 'session % not found', p_session USING ERRCODE = 'AP404';
            ELSIF s.deleted_at IS NOT NULL THEN
                RAISE 'session % is deleted', p_session USING ERRCODE = 'AP409';
            ELSIF s.expires_at <= now() THEN
                RAISE 'session % has expired', p_session USING ERRCODE = 'AP409';
            END IF;
            RAISE 'session token budget exceeded: % used, % reserved, % needed, budget %',
                s.tokens_used, s.tokens_reserved, p_tokens, s.token_budget USING ERRCODE = 'AP402';
        END IF;
    END IF;
    IF p_api_key IS NOT NULL THEN
        UPDATE api_key_budgets SET tokens_reserved = tokens_reserved + p_tokens
        WHERE api_key_id = p_api_key AND tokens_used + tokens_reserved + p_tokens <= token_budget;
        IF NOT FOUND THEN
            SELECT * INTO k FROM api_key_budgets WHERE api_key_id = p_api_key;
            IF FOUND THEN
                RAISE 'api_key token budget exceeded: % used, % reserved, % needed, budget %',
                    k.tokens_used, k.tokens_reserved, p_tokens, k.token_budget
                    USING ERRCODE = 'AP402';
            END IF;
        END IF;
    END IF;
    UPDATE tenants SET
        monthly_token_usage = CASE WHEN usage_month = v_month THEN monthly_token_usage ELSE 0 END,
        usage_month = v_month,
        tokens_reserved = tokens_reserved + p_tokens
    WHERE id = v_tenant
      AND (CASE WHEN usage_month = v_month THEN monthly_token_usage ELSE 0 END)
          + tokens_reserved + p_tokens <= token_limit;
    IF NOT FOUND THEN
        SELECT * INTO t FROM tenants WHERE id = v_tenant;
        IF NOT FOUND THEN
            RAISE 'tenant % not found', v_tenant USING ERRCODE = 'AP404';
        END IF;
        RAISE 'tenant monthly token limit exceeded: % used, % reserved, % needed, limit %',
            t.monthly_token_usage, t.tokens_reserved, p_tokens, t.token_limit
            USING ERRCODE = 'AP402';
    END IF;
    INSERT INTO budget_reservations (tenant_id, session_id, api_key_id, tokens, expires_at)
    VALUES (v_tenant, p_session, p_api_key, p_tokens, now() + p_ttl)
    RETURNING id INTO v_id;
    RETURN v_id;
END $$;

-- In the transaction that writes the call's ledger rows: note what the call used on its
-- hold. Without a hold (fail-open, or swept because the call outlived it) the usage is
-- applied to the counters right here instead.
CREATE FUNCTION llm_journal(p_reservation uuid, p_session uuid, p_api_key uuid, p_used bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_reservation IS NOT NULL THEN
        UPDATE budget_reservations SET used = p_used WHERE id = p_reservation;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    PERFORM llm_apply_usage(app_current_tenant(), p_session, p_api_key, 0, p_used);
END $$;

-- Turns a hold into its journaled use (none journaled: a release). Exactly once: whoever
-- deletes the hold (the caller here, or the sweeper) applies it.
CREATE FUNCTION llm_settle(p_tenant uuid, p_reservation uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    PERFORM set_config('synchronous_commit', 'off', true);
    DELETE FROM budget_reservations WHERE id = p_reservation RETURNING * INTO r;
    IF FOUND THEN
        PERFORM llm_apply_usage(r.tenant_id, r.session_id, r.api_key_id, r.tokens,
                                coalesce(r.used, 0));
    END IF;
END $$;

CREATE FUNCTION llm_apply_usage(p_tenant uuid, p_session uuid, p_api_key uuid,
                                p_held bigint, p_used bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_month date := date_trunc('month', now())::date;
BEGIN
    IF p_session IS NOT NULL THEN
        UPDATE sessions SET tokens_reserved = greatest(tokens_reserved - p_held, 0),
            tokens_used = tokens_used + p_used,
            request_count = request_count + (p_used > 0)::int,
            last_activity = now()
        WHERE id = p_session;
    END IF;
    IF p_api_key IS NOT NULL THEN
        UPDATE api_key_budgets SET tokens_reserved = greatest(tokens_reserved - p_held, 0),
            tokens_used = tokens_used + p_used, updated_at = now()
        WHERE api_key_id = p_api_key;
    END IF;
    UPDATE tenants SET
        monthly_token_usage =
            CASE WHEN usage_month = v_month THEN monthly_token_usage ELSE 0 END + p_used,
        usage_month = v_month,
        tokens_reserved = greatest(tokens_reserved - p_held, 0)
    WHERE id = p_tenant;
END $$;

-- Settles the holds of callers that died mid-call (to their journaled use, if any).
-- Runs as the owner (all tenants).
CREATE FUNCTION llm_release_expired() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN DELETE FROM budget_reservations WHERE expires_at < now() RETURNING * LOOP
        PERFORM llm_apply_usage(r.tenant_id, r.session_id, r.api_key_id, r.tokens,
                                coalesce(r.used, 0));
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
"""


def downgrade() -> None:
    sql("""
    DROP FUNCTION llm_release_expired();
    DROP FUNCTION llm_settle(uuid, uuid);
    DROP FUNCTION llm_journal(uuid, uuid, uuid, bigint);
    DROP FUNCTION llm_apply_usage(uuid, uuid, uuid, bigint, bigint);
    DROP FUNCTION llm_reserve(uuid, uuid, uuid, bigint, interval, text);
    DROP TABLE usage_records;
    DROP FUNCTION usage_records_ensure_partitions(integer);
    DROP FUNCTION usage_records_create_partition(timestamptz);
    DROP TABLE llm_calls;
    DROP TABLE budget_reservations;
    DROP TABLE api_key_budgets;
    DROP TABLE sessions;
    DROP TABLE llm_prices;
    DROP FUNCTION llm_prices_no_overlap();
    DROP TABLE llm_models;
    DROP TABLE llm_providers;
    ALTER TABLE tenants DROP COLUMN usage_month, DROP COLUMN tokens_reserved;
    """)
