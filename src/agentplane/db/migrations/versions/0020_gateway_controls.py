"""The gateway's controls: per-key rate limits.

API keys gain per-minute limits of their LLM calls (`llm_rpm` requests, `llm_tpm`
tokens; NULL: none), counted in `api_key_rates` (one row per key, its current minute)
by usage_reserve, in the reservation's own statement (usage/sql/rates.sql).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03
"""

from agentplane.db.migrations import apply_sql, sql

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

sql_files = {
    "usage/sql/rates.sql": "033f7dd6a77238fe533712d6501e9b130622b6a504e4765811fce42ad7b2cfa6",
    "usage/sql/budgets.sql": "ef1403e0e4269c1375b28beb203272b5747977fb1c54d2b6667bfed8163c3b3c",
}


def upgrade() -> None:
    sql("""
    ALTER TABLE api_keys
        ADD COLUMN llm_rpm integer CHECK (llm_rpm > 0),
        ADD COLUMN llm_tpm bigint CHECK (llm_tpm > 0);

    CREATE TABLE api_key_rates (
        api_key_id    uuid PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
        tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        window_start  timestamptz NOT NULL,
        requests      integer NOT NULL CHECK (requests >= 0),
        tokens        bigint NOT NULL CHECK (tokens >= 0)
    );
    """)
    apply_sql(revision, sql_files)


# What 0020 replaced in usage/sql/budgets.sql (as 0018 applied it).
PREVIOUS = """
CREATE OR REPLACE FUNCTION usage_reserve(p_tenant uuid, p_session uuid, p_api_key uuid,
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

CREATE OR REPLACE FUNCTION usage_reserve_each(p_tenant uuid, p_reservations jsonb, p_ttl interval,
                                 p_lock_timeout text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    h record;
    v_id uuid;
    v_out jsonb := '[]';
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    PERFORM 1 FROM sessions
    WHERE id IN (SELECT (x->>'session_id')::uuid FROM jsonb_array_elements(p_reservations) x)
    ORDER BY id FOR NO KEY UPDATE;
    PERFORM 1 FROM api_key_budgets
    WHERE api_key_id IN (SELECT (x->>'api_key_id')::uuid
                         FROM jsonb_array_elements(p_reservations) x)
    ORDER BY api_key_id FOR NO KEY UPDATE;
    FOR h IN SELECT * FROM jsonb_to_recordset(p_reservations)
                 AS x(session_id uuid, api_key_id uuid, tokens bigint)
    LOOP
        BEGIN
            v_id := usage_reserve(p_tenant, h.session_id, h.api_key_id, h.tokens, p_ttl,
                                p_lock_timeout);
            v_out := v_out || jsonb_build_object('id', v_id);
        EXCEPTION WHEN SQLSTATE 'AP402' OR SQLSTATE 'AP404' OR SQLSTATE 'AP409'
                       OR SQLSTATE 'AP422' THEN
            v_out := v_out || jsonb_build_object('code', SQLSTATE, 'message', SQLERRM);
        END;
    END LOOP;
    RETURN v_out;
END $$;
"""


def downgrade() -> None:
    sql(PREVIOUS)
    sql("""
    DROP FUNCTION usage_rate_take(uuid, uuid, bigint);
    DROP TABLE api_key_rates;
    ALTER TABLE api_keys DROP COLUMN llm_tpm, DROP COLUMN llm_rpm;
    """)
