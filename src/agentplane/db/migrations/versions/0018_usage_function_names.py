"""Budget functions are named for the package they belong to: usage_reserve,
usage_reserve_many, usage_reserve_each, usage_journal, usage_settle, usage_settle_many,
usage_apply and usage_release_expired (were llm_*). The llm_* names stay, as wrappers of
the new ones, for the workers of the previous release during a rolling deploy.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02
"""

from agentplane.db.migrations import apply_sql, sql

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

sql_files = {
    "usage/sql/budgets.sql": "950b663bd1ad106ec5b8671d1dc3019397b69252d34a9f100f66f32ea4151628",
}


def upgrade() -> None:
    apply_sql(revision, sql_files)


# usage/sql/budgets.sql as 0015 applied it (its statements).
PREVIOUS = """
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
END $$;
CREATE OR REPLACE FUNCTION llm_reserve_each(p_tenant uuid, p_holds jsonb, p_ttl interval,
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
    WHERE id IN (SELECT (x->>'session_id')::uuid FROM jsonb_array_elements(p_holds) x)
    ORDER BY id FOR NO KEY UPDATE;
    PERFORM 1 FROM api_key_budgets
    WHERE api_key_id IN (SELECT (x->>'api_key_id')::uuid FROM jsonb_array_elements(p_holds) x)
    ORDER BY api_key_id FOR NO KEY UPDATE;
    FOR h IN SELECT * FROM jsonb_to_recordset(p_holds)
                 AS x(session_id uuid, api_key_id uuid, tokens bigint)
    LOOP
        BEGIN
            v_id := llm_reserve(p_tenant, h.session_id, h.api_key_id, h.tokens, p_ttl,
                                p_lock_timeout);
            v_out := v_out || jsonb_build_object('id', v_id);
        EXCEPTION WHEN SQLSTATE 'AP402' OR SQLSTATE 'AP404' OR SQLSTATE 'AP409'
                       OR SQLSTATE 'AP422' THEN
            v_out := v_out || jsonb_build_object('code', SQLSTATE, 'message', SQLERRM);
        END;
    END LOOP;
    RETURN v_out;
END $$;
CREATE OR REPLACE FUNCTION llm_journal(p_reservation uuid, p_session uuid, p_api_key uuid,
                                       p_used bigint)
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
CREATE OR REPLACE FUNCTION llm_settle(p_tenant uuid, p_reservation uuid)
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
CREATE OR REPLACE FUNCTION llm_apply_usage(p_tenant uuid, p_session uuid, p_api_key uuid,
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
CREATE OR REPLACE FUNCTION llm_release_expired() RETURNS integer LANGUAGE plpgsql AS $$
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
    sql(PREVIOUS)  # the llm_* functions whole again, in place of the wrappers
    sql("""
    DROP FUNCTION usage_release_expired();
    DROP FUNCTION usage_settle_many(uuid[], uuid[], uuid[], bigint[]);
    DROP FUNCTION usage_settle(uuid, uuid);
    DROP FUNCTION usage_journal(uuid, uuid, uuid, bigint);
    DROP FUNCTION usage_reserve_each(uuid, jsonb, interval, text);
    DROP FUNCTION usage_reserve_many(uuid, jsonb, interval, text);
    DROP FUNCTION usage_reserve(uuid, uuid, uuid, bigint, interval, text);
    DROP FUNCTION usage_apply(uuid, uuid, uuid, bigint, bigint);
    """)
