-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- The gateway's model names. A name resolves, in this order, to:
--   1. an alias of the tenant: a virtual model whose deployments (each a name resolved by
--      rules 2 to 4) are tried in turn, ordered by the alias's strategy;
--   2. provider/model, where provider is a provider's name (the tenant's shadowing a
--      built-in one); a name whose first part names no provider is a model name (model
--      ids such as meta-llama/Llama-3.1-8B hold slashes);
--   3. a provider's name alone: its default model;
--   4. a model name: the enabled provider whose default model it is, else a model the
--      tenant registered under an enabled provider's name, else a built-in model of the
--      vendor an enabled provider pointing at that vendor's own API serves (the tenant's
--      providers first, then by weight).
-- Each resolution is one statement that runs under the caller's row-level security.

ALTER TABLE gateway_aliases ENABLE ROW LEVEL SECURITY;
ALTER TABLE gateway_aliases FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON gateway_aliases;
CREATE POLICY tenant_isolation ON gateway_aliases
    USING (tenant_id = app_current_tenant())
    WITH CHECK (tenant_id = app_current_tenant());
DROP POLICY IF EXISTS owner_access ON gateway_aliases;
CREATE POLICY owner_access ON gateway_aliases TO {owner} USING (true) WITH CHECK (true);

CREATE OR REPLACE TRIGGER gateway_aliases_updated_at BEFORE UPDATE ON gateway_aliases
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- The vendor whose built-in models a provider serves: only one that points at the
-- vendor's own API (an openai_compatible provider may be a local server).
CREATE OR REPLACE FUNCTION gateway_vendor(p_type text, p_base_url text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_type = 'openai_compatible' AND p_base_url ~ '^https://api\.openai\.com(/|$)'
            THEN 'openai'
        WHEN p_type = 'anthropic' AND p_base_url ~ '^https://api\.anthropic\.com(/|$)'
            THEN 'anthropic'
    END
$$;

-- Rules 2 to 4: at most one (provider, model).
CREATE OR REPLACE FUNCTION gateway_target(p_name text)
RETURNS TABLE (provider_id uuid, model text) LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_prefix text := split_part(p_name, '/', 1);
    v_rest text := substr(p_name, length(split_part(p_name, '/', 1)) + 2);
BEGIN
    IF v_rest <> '' THEN
        RETURN QUERY
        SELECT p.id, v_rest FROM llm_providers p WHERE p.name = v_prefix
        ORDER BY p.tenant_id IS NULL LIMIT 1;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    RETURN QUERY
    SELECT p.id, coalesce(p.model, '') FROM llm_providers p
    WHERE p.name = p_name AND strpos(p_name, '/') = 0
    ORDER BY p.tenant_id IS NULL LIMIT 1;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT p.id, p_name FROM llm_providers p
    WHERE p.enabled AND p.model = p_name
      AND NOT EXISTS (SELECT 1 FROM llm_providers s WHERE s.name = p.name
                      AND s.tenant_id IS NOT NULL AND p.tenant_id IS NULL)
    ORDER BY p.tenant_id IS NULL, p.weight DESC, p.name LIMIT 1;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT p.id, p_name FROM llm_models m
    JOIN llm_providers p ON p.name = m.provider AND p.enabled AND p.tenant_id IS NOT NULL
    WHERE m.name = p_name AND m.tenant_id IS NOT NULL
    ORDER BY p.weight DESC, p.name LIMIT 1;
    IF FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT p.id, p_name FROM llm_models m
    JOIN llm_providers p ON gateway_vendor(p.type, p.base_url) = m.provider
                        AND p.enabled AND p.tenant_id IS NOT NULL
    WHERE m.name = p_name AND m.tenant_id IS NULL
    ORDER BY p.weight DESC, p.name LIMIT 1;
END $$;

-- The deployments of p_name: one row, or an alias's deployments as listed, with their
-- weight and the alias's strategy (the caller draws the order: routing.py). `alias`
-- names the alias (NULL for a plain name); `deployment` is the name the deployment gave.
-- Deployments of weight 0 are left out.
CREATE OR REPLACE FUNCTION gateway_route(p_name text)
RETURNS TABLE (provider_id uuid, model text, alias text, deployment text, weight numeric,
               strategy text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    a gateway_aliases;
BEGIN
    SELECT * INTO a FROM gateway_aliases WHERE name = p_name;
    IF NOT FOUND THEN
        RETURN QUERY
        SELECT t.provider_id, t.model, NULL::text, p_name, 1::numeric, NULL::text
        FROM gateway_target(p_name) t;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT t.provider_id, t.model, a.name, d.name, coalesce(d.weight, 1), a.strategy
    FROM ROWS FROM (jsonb_to_recordset(a.deployments) AS (name text, weight numeric))
         WITH ORDINALITY AS d(name, weight, n)
    CROSS JOIN LATERAL gateway_target(d.name) t
    WHERE coalesce(d.weight, 1) > 0
    ORDER BY d.n;
END $$;

-- The models a tenant's callers may name: each enabled provider's default model, the
-- models the tenant registered under its providers' names, the built-in models of the
-- vendors its providers point at, and its aliases. `created`: when the row was made.
CREATE OR REPLACE FUNCTION gateway_models()
RETURNS TABLE (id text, owned_by text, created timestamptz) LANGUAGE sql STABLE AS $$
    WITH providers AS (
        SELECT p.* FROM llm_providers p
        WHERE p.enabled AND NOT EXISTS (
            SELECT 1 FROM llm_providers s WHERE s.name = p.name
              AND s.tenant_id IS NOT NULL AND p.tenant_id IS NULL)
    ), found AS (
        SELECT p.name || '/' || p.model AS id, p.name AS owned_by, p.created_at AS created
        FROM providers p WHERE p.model IS NOT NULL
        UNION ALL
        SELECT p.name || '/' || m.name, p.name, m.created_at
        FROM providers p JOIN llm_models m ON m.provider = p.name AND m.tenant_id IS NOT NULL
        UNION ALL
        SELECT p.name || '/' || m.name, p.name, m.created_at
        FROM providers p JOIN llm_models m
          ON m.provider = gateway_vendor(p.type, p.base_url) AND m.tenant_id IS NULL
        UNION ALL
        SELECT a.name, 'agentplane', a.created_at FROM gateway_aliases a
    )
    SELECT DISTINCT ON (id) id, owned_by, created FROM found ORDER BY id, created
$$;
