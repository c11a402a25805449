-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- Token budgets: reservations taken before an LLM call and settled after it.
--
-- Budgets live in three counters (session, API key, tenant month), always locked in that
-- order so concurrent reservations cannot deadlock. Each counter is taken with one
-- conditional UPDATE: the row lock serialises concurrent callers and the WHERE re-checks
-- the limit against the committed value, so no interleaving can take a total past it.
-- A tenant's token_limit NULL is no limit (bigint's maximum keeps the compare in bigint).
--
-- A call is three short transactions: reserve, journal (with the ledger rows: durable),
-- settle. Reserve and settle are single autocommit statements (no lock held across a
-- client round trip) and commit asynchronously (synchronous_commit off), so the hot
-- tenant row is locked for microseconds rather than for a WAL flush. That is safe: WAL is
-- sequential, so the durable journal commit that follows also makes the earlier reserve
-- durable; a settle lost in a crash leaves its journaled reservation, which the sweeper settles
-- to the journaled amount.

-- Called as one autocommit statement: it sets its tenant (row-level security applies as
-- on any tenant connection) and its row locks end with the statement.
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
        PERFORM usage_rate_take(v_tenant, p_api_key, p_tokens);  -- usage/sql/rates.sql
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

-- Reservations for many calls of one tenant at once: {"id": reservation} for each, in
-- order, or for a refusal {"code": SQLSTATE, "message": ...}. A batch without sessions or API
-- key budgets that fits the tenant's limit as a whole is one update of the tenant's row
-- and one insert; any other batch is taken one by one (usage_reserve_each).
CREATE OR REPLACE FUNCTION usage_reserve_many(p_tenant uuid, p_reservations jsonb, p_ttl interval,
                                 p_lock_timeout text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_month date := date_trunc('month', now())::date;
    v_n integer := jsonb_array_length(p_reservations);
    v_sum bigint;
    v_plain boolean;
    v_ids uuid[];
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    SELECT sum((x->>'tokens')::bigint),
           bool_and(x->>'session_id' IS NULL AND x->>'api_key_id' IS NULL
                    AND (x->>'tokens')::bigint >= 0)
    INTO v_sum, v_plain FROM jsonb_array_elements(p_reservations) x;
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
            FROM ROWS FROM (jsonb_to_recordset(p_reservations) AS (tokens bigint))
                 WITH ORDINALITY AS x(tokens, i);
            RETURN (SELECT jsonb_agg(jsonb_build_object('id', id) ORDER BY i)
                    FROM unnest(v_ids) WITH ORDINALITY AS u(id, i));
        END IF;
    END IF;
    RETURN usage_reserve_each(p_tenant, p_reservations, p_ttl, p_lock_timeout);
END $$;

-- Reservations for many calls of one tenant, each taken (or refused) as usage_reserve
-- takes it: the result has, in order, {"id": reservation} or {"code": SQLSTATE, "message": ...} for a
-- refusal. The sessions, API key budgets and API key rates are locked first, in id order,
-- before the tenant's row: usage_reserve's order, so that batches and single reservations never deadlock.
-- Each reservation is a subtransaction: a refusal undoes its own updates only.
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
    WHERE api_key_id IN (SELECT (x->>'api_key_id')::uuid FROM jsonb_array_elements(p_reservations) x)
    ORDER BY api_key_id FOR NO KEY UPDATE;
    PERFORM 1 FROM api_key_rates
    WHERE api_key_id IN (SELECT (x->>'api_key_id')::uuid FROM jsonb_array_elements(p_reservations) x)
    ORDER BY api_key_id FOR NO KEY UPDATE;
    FOR h IN SELECT * FROM jsonb_to_recordset(p_reservations)
                 AS x(session_id uuid, api_key_id uuid, tokens bigint)
    LOOP
        BEGIN
            v_id := usage_reserve(p_tenant, h.session_id, h.api_key_id, h.tokens, p_ttl,
                                p_lock_timeout);
            v_out := v_out || jsonb_build_object('id', v_id);
        EXCEPTION WHEN SQLSTATE 'AP402' OR SQLSTATE 'AP404' OR SQLSTATE 'AP409'
                       OR SQLSTATE 'AP422' OR SQLSTATE 'AP429' THEN
            v_out := v_out || jsonb_build_object('code', SQLSTATE, 'message', SQLERRM);
        END;
    END LOOP;
    RETURN v_out;
END $$;

-- In the transaction that writes the call's ledger rows: note what the call used on its
-- reservation. Without one (fail-open, or swept because the call outlived it) the usage is
-- applied to the counters right here instead.
CREATE OR REPLACE FUNCTION usage_journal(p_reservation uuid, p_session uuid, p_api_key uuid,
                                       p_used bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_reservation IS NOT NULL THEN
        UPDATE budget_reservations SET used = p_used WHERE id = p_reservation;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    PERFORM usage_apply(app_current_tenant(), p_session, p_api_key, 0, p_used);
END $$;

-- Turns a reservation into its journaled use (none journaled: a release). Exactly once:
-- whoever deletes the reservation (the caller here, or the sweeper) applies it.
CREATE OR REPLACE FUNCTION usage_settle(p_tenant uuid, p_reservation uuid)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    PERFORM set_config('synchronous_commit', 'off', true);
    DELETE FROM budget_reservations WHERE id = p_reservation RETURNING * INTO r;
    IF FOUND THEN
        PERFORM usage_apply(r.tenant_id, r.session_id, r.api_key_id, r.tokens,
                                coalesce(r.used, 0));
    END IF;
END $$;

-- Settle reservations, each to what its call used (one that is gone, swept or never taken
-- (NULL), has its use applied directly), in the transaction that records the calls.
-- Rows are locked in usage_reserve's order: sessions, API key budgets, then the tenant;
-- each session, API key budget and the tenant is updated once, with the batch's sums
-- (reservations are never negative, so clamping the sum at zero is clamping each step).
CREATE OR REPLACE FUNCTION usage_settle_many(p_ids uuid[], p_sessions uuid[], p_keys uuid[],
                                           p_used bigint[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_tenant uuid := app_current_tenant();
    v_n bigint;
    v_reserved bigint;
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
    SELECT count(*), sum(held)::bigint, sum(used)::bigint INTO v_n, v_reserved, v_used FROM r;
    IF v_n > 0 THEN
        PERFORM usage_apply(v_tenant, NULL, NULL, v_reserved, v_used);  -- the tenant's row
    END IF;
END $$;

-- What a settled reservation (its tokens) and its call's use do to the three counters.
CREATE OR REPLACE FUNCTION usage_apply(p_tenant uuid, p_session uuid, p_api_key uuid,
                                p_reserved bigint, p_used bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_month date := date_trunc('month', now())::date;
BEGIN
    IF p_session IS NOT NULL THEN
        UPDATE sessions SET tokens_reserved = greatest(tokens_reserved - p_reserved, 0),
            tokens_used = tokens_used + p_used,
            request_count = request_count + (p_used > 0)::int,
            last_activity = now()
        WHERE id = p_session;
    END IF;
    IF p_api_key IS NOT NULL THEN
        UPDATE api_key_budgets SET tokens_reserved = greatest(tokens_reserved - p_reserved, 0),
            tokens_used = tokens_used + p_used, updated_at = now()
        WHERE api_key_id = p_api_key;
    END IF;
    UPDATE tenants SET
        monthly_token_usage =
            CASE WHEN usage_month = v_month THEN monthly_token_usage ELSE 0 END + p_used,
        usage_month = v_month,
        tokens_reserved = greatest(tokens_reserved - p_reserved, 0)
    WHERE id = p_tenant;
END $$;

-- Settles the reservations of callers that died mid-call (to their journaled use, if any).
-- Runs as the owner (all tenants).
CREATE OR REPLACE FUNCTION usage_release_expired() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN DELETE FROM budget_reservations WHERE expires_at < now() RETURNING * LOOP
        PERFORM usage_apply(r.tenant_id, r.session_id, r.api_key_id, r.tokens,
                                coalesce(r.used, 0));
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

-- The names of the previous release (llm_*), kept so that its workers keep working beside
-- these during a rolling deploy; a later revision drops them.
CREATE OR REPLACE FUNCTION llm_reserve(p_tenant uuid, p_session uuid, p_api_key uuid,
                                       p_tokens bigint, p_ttl interval, p_lock_timeout text)
RETURNS uuid LANGUAGE sql AS $$
    SELECT usage_reserve(p_tenant, p_session, p_api_key, p_tokens, p_ttl, p_lock_timeout)
$$;
CREATE OR REPLACE FUNCTION llm_reserve_many(p_tenant uuid, p_holds jsonb, p_ttl interval,
                                 p_lock_timeout text)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT usage_reserve_many(p_tenant, p_holds, p_ttl, p_lock_timeout)
$$;
CREATE OR REPLACE FUNCTION llm_reserve_each(p_tenant uuid, p_holds jsonb, p_ttl interval,
                                 p_lock_timeout text)
RETURNS jsonb LANGUAGE sql AS $$
    SELECT usage_reserve_each(p_tenant, p_holds, p_ttl, p_lock_timeout)
$$;
CREATE OR REPLACE FUNCTION llm_journal(p_reservation uuid, p_session uuid, p_api_key uuid,
                                       p_used bigint)
RETURNS void LANGUAGE sql AS $$
    SELECT usage_journal(p_reservation, p_session, p_api_key, p_used)
$$;
CREATE OR REPLACE FUNCTION llm_settle(p_tenant uuid, p_reservation uuid)
RETURNS void LANGUAGE sql AS $$
    SELECT usage_settle(p_tenant, p_reservation)
$$;
CREATE OR REPLACE FUNCTION llm_settle_many(p_ids uuid[], p_sessions uuid[], p_keys uuid[],
                                           p_used bigint[])
RETURNS void LANGUAGE sql AS $$
    SELECT usage_settle_many(p_ids, p_sessions, p_keys, p_used)
$$;
CREATE OR REPLACE FUNCTION llm_apply_usage(p_tenant uuid, p_session uuid, p_api_key uuid,
                                p_held bigint, p_used bigint)
RETURNS void LANGUAGE sql AS $$
    SELECT usage_apply(p_tenant, p_session, p_api_key, p_held, p_used)
$$;
CREATE OR REPLACE FUNCTION llm_release_expired() RETURNS integer LANGUAGE sql AS $$
    SELECT usage_release_expired()
$$;
