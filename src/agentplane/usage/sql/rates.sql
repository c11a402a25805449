-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- Per-minute limits of an API key's LLM calls (api_keys.llm_rpm, llm_tpm; NULL: none),
-- taken by usage_reserve inside the reservation's own statement: no round trip of their
-- own, and a call the budget refuses is not counted (the statement's updates go back
-- with it). One row per key, reset when its minute has passed. A call counts what its
-- reservation holds (its prompt and max_tokens), in the minute it is admitted: a key
-- is never served more than its limits.

ALTER TABLE api_key_rates ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_key_rates FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON api_key_rates;
CREATE POLICY tenant_isolation ON api_key_rates
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON api_key_rates;
CREATE POLICY owner_access ON api_key_rates TO {owner} USING (true) WITH CHECK (true);

-- Count one call of p_tokens on the key's current minute, or raise AP429 (the message
-- ends with the seconds until the minute ends: the Retry-After) or, for a call that
-- could never fit, AP422. Internal: called by usage_reserve, after the key's budget row
-- and before the tenant's (usage_reserve's lock order).
CREATE OR REPLACE FUNCTION usage_rate_take(p_tenant uuid, p_api_key uuid, p_tokens bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_rpm integer;
    v_tpm bigint;
    v_minute timestamptz := date_trunc('minute', now());
    v_wait integer;
    r api_key_rates;
BEGIN
    SELECT llm_rpm, llm_tpm INTO v_rpm, v_tpm FROM api_keys WHERE id = p_api_key;
    IF v_rpm IS NULL AND v_tpm IS NULL THEN
        RETURN;
    END IF;
    IF p_tokens > v_tpm THEN
        RAISE 'this call may use % tokens (its prompt and max_tokens), more than the API '
              'key''s limit of % tokens per minute: lower max_tokens', p_tokens, v_tpm
              USING ERRCODE = 'AP422';
    END IF;
    INSERT INTO api_key_rates AS a (api_key_id, tenant_id, window_start, requests, tokens)
    VALUES (p_api_key, p_tenant, v_minute, 1, p_tokens)
    ON CONFLICT (api_key_id) DO UPDATE SET
        window_start = v_minute,
        requests = CASE WHEN a.window_start = v_minute THEN a.requests ELSE 0 END + 1,
        tokens = CASE WHEN a.window_start = v_minute THEN a.tokens ELSE 0 END + p_tokens
    WHERE a.window_start <> v_minute
       OR ((v_rpm IS NULL OR a.requests < v_rpm)
           AND (v_tpm IS NULL OR a.tokens + p_tokens <= v_tpm))
    RETURNING * INTO r;
    IF NOT FOUND THEN
        SELECT * INTO r FROM api_key_rates WHERE api_key_id = p_api_key;
        v_wait := greatest(1, ceil(extract(epoch FROM v_minute + interval '1 minute' - now())));
        IF v_rpm IS NOT NULL AND r.requests >= v_rpm THEN
            RAISE 'API key rate limit reached: % requests per minute; retry in % s',
                v_rpm, v_wait USING ERRCODE = 'AP429';
        END IF;
        RAISE 'API key rate limit reached: % tokens per minute, % taken, % needed; retry in % s',
            v_tpm, r.tokens, p_tokens, v_wait USING ERRCODE = 'AP429';
    END IF;
END $$;
