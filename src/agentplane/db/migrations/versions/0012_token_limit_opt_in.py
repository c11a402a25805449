"""A tenant's monthly token limit is opt-in (NULL: no limit); higher default rate limits.

New tenants used to get a 10,000-token limit that the free offline provider's calls
consumed, so a new team ran out on its third run; and 1,000 requests an hour, which a
dashboard refreshing every 2 s spends in 30 minutes. Existing rows keep their limits.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from agentplane.db.migrations import sql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# llm_reserve and llm_reserve_many as this revision makes them: a tenant's token_limit
# NULL is no limit (bigint's maximum keeps the compare in bigint).
RESERVING = """\
CREATE OR REPLACE FUNCTION llm_reserve(p_tenant uuid, p_session uuid, p_api_key uuid,
                                       p_tokens bigint, p_ttl interval, p_lock_timeout text)
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
          + tokens_reserved + p_tokens <= coalesce(token_limit, 9223372036854775807);
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

CREATE OR REPLACE FUNCTION llm_reserve_many(p_tenant uuid, p_holds jsonb, p_ttl interval,
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
              + tokens_reserved + v_sum <= coalesce(token_limit, 9223372036854775807);
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
END $$;"""

# As revisions 0005 and 0010 made them, for the downgrade.
LLM_RESERVE_0005 = """\
CREATE OR REPLACE FUNCTION llm_reserve(p_tenant uuid, p_session uuid, p_api_key uuid,
                                       p_tokens bigint, p_ttl interval, p_lock_timeout text)
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
END $$;"""

LLM_RESERVE_MANY_0010 = """\
CREATE OR REPLACE FUNCTION llm_reserve_many(p_tenant uuid, p_holds jsonb, p_ttl interval,
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
END $$;"""


def upgrade() -> None:
    sql(
        "ALTER TABLE tenants ALTER COLUMN token_limit DROP NOT NULL, "
        "ALTER COLUMN token_limit DROP DEFAULT, ALTER COLUMN rate_limit_per_hour SET DEFAULT 100000"
    )
    sql("ALTER TABLE api_keys ALTER COLUMN rate_limit_per_hour SET DEFAULT 10000")
    sql(RESERVING)


def downgrade() -> None:
    sql(LLM_RESERVE_0005)
    sql(LLM_RESERVE_MANY_0010)
    sql("UPDATE tenants SET token_limit = 10000 WHERE token_limit IS NULL")
    sql(
        "ALTER TABLE tenants ALTER COLUMN token_limit SET DEFAULT 10000, "
        "ALTER COLUMN token_limit SET NOT NULL, ALTER COLUMN rate_limit_per_hour SET DEFAULT 1000"
    )
    sql("ALTER TABLE api_keys ALTER COLUMN rate_limit_per_hour SET DEFAULT 1000")
