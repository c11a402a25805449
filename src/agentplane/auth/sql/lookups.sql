-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- Sign-in and API-key checks happen before any tenant is known, so they cannot run on
-- a tenant connection. Rather than hand the API an unrestricted connection, each such
-- lookup is one narrow SECURITY DEFINER function (owned by the owner, fixed
-- search_path, EXECUTE for the application role only) that answers exactly one
-- question about one credential. Everything after "which tenant?" runs under RLS.

-- Rate-limit allowance handed out in blocks: up to p_max requests (at most 0.5% of the
-- limit, at least 1) under one lock of the counter row, never past the limit. A server
-- process spends its block locally; what it leaves unspent when the window ends is
-- lost, so with N processes a subject may be refused up to N * (block - 1) requests
-- early, but is never served more than its limit. Limits under 400 lease one at a time
-- (exact). Internal: called by the definer functions only.
CREATE OR REPLACE FUNCTION auth_lease(p_tenant_id uuid, p_subject_id uuid, p_window timestamptz,
                           p_limit integer, p_max integer,
                           OUT o_granted integer, OUT o_hits integer)
LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
BEGIN
    INSERT INTO rate_limits (tenant_id, subject_id, window_start, hits)
    VALUES (p_tenant_id, p_subject_id, p_window, 0)
    ON CONFLICT ON CONSTRAINT rate_limits_pkey DO NOTHING;
    SELECT r.hits INTO o_hits FROM rate_limits r
     WHERE r.tenant_id = p_tenant_id AND r.subject_id = p_subject_id
       AND r.window_start = p_window
       FOR UPDATE;
    o_granted := least(p_max, greatest(1, p_limit / 200), greatest(0, p_limit - o_hits));
    IF o_granted > 0 THEN
        UPDATE rate_limits r SET hits = r.hits + o_granted
         WHERE r.tenant_id = p_tenant_id AND r.subject_id = p_subject_id
           AND r.window_start = p_window;
        o_hits := o_hits + o_granted;
    END IF;
END $$;

-- The hot path: an API key's principal and, when asked (p_*_max > 0), a block of
-- allowance from the key's and the tenant's counters, in one round trip. Servers
-- cache the principal and call again when a block is spent, the cache entry is old,
-- or a notification (auth/sql/notify.sql) said the key, its owner or its tenant changed.
CREATE OR REPLACE FUNCTION auth_api_key(p_key_hash bytea, p_key_max integer, p_tenant_max integer)
RETURNS TABLE (tenant_id uuid, user_id uuid, api_key_id uuid, role text,
               permissions text[], scopes text[], email text, tenant_slug text,
               expires_at timestamptz, key_limit integer, key_hits integer,
               key_granted integer, tenant_limit integer, tenant_hits integer,
               tenant_granted integer, window_left double precision)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    k record;
    w timestamptz := date_trunc('hour', now());
BEGIN
    SELECT a.id, a.tenant_id, a.user_id, a.scopes, a.rate_limit_per_hour, a.last_used,
           a.expires_at, m.role, m.permissions, u.email, t.slug,
           t.rate_limit_per_hour AS tenant_limit
      INTO k
      FROM api_keys a
      JOIN memberships m ON m.tenant_id = a.tenant_id AND m.user_id = a.user_id
      JOIN users u ON u.id = a.user_id
      JOIN tenants t ON t.id = a.tenant_id
     WHERE a.key_hash = p_key_hash AND a.is_active
       AND (a.expires_at IS NULL OR a.expires_at > now())
       AND u.is_active AND u.deleted_at IS NULL AND t.is_active AND t.deleted_at IS NULL;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    key_granted := 0; tenant_granted := 0;
    IF p_key_max > 0 OR p_tenant_max > 0 THEN
        -- Counters may lose the last few increments in a crash; not worth a flush each.
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    -- Always key row then tenant row: one lock order, no deadlocks.
    IF p_key_max > 0 THEN
        SELECT l.o_granted, l.o_hits INTO key_granted, key_hits
          FROM auth_lease(k.tenant_id, k.id, w, k.rate_limit_per_hour, p_key_max) l;
    END IF;
    IF p_tenant_max > 0 AND (p_key_max = 0 OR key_granted > 0) THEN
        SELECT l.o_granted, l.o_hits INTO tenant_granted, tenant_hits
          FROM auth_lease(k.tenant_id, k.tenant_id, w, k.tenant_limit, p_tenant_max) l;
        IF tenant_granted = 0 AND key_granted > 0 THEN
            -- Refused by the tenant: the key's block goes back, a refusal costs nothing.
            UPDATE rate_limits r SET hits = r.hits - key_granted
             WHERE r.tenant_id = k.tenant_id AND r.subject_id = k.id AND r.window_start = w;
            key_hits := key_hits - key_granted;
            key_granted := 0;
        END IF;
    END IF;
    IF k.last_used IS NULL OR k.last_used < now() - interval '1 minute' THEN
        UPDATE api_keys SET last_used = now() WHERE id = k.id;
    END IF;
    tenant_id := k.tenant_id; user_id := k.user_id; api_key_id := k.id; role := k.role;
    permissions := k.permissions; scopes := k.scopes; email := k.email;
    tenant_slug := k.slug; expires_at := k.expires_at;
    key_limit := k.rate_limit_per_hour; tenant_limit := k.tenant_limit;
    window_left := extract(epoch FROM w + interval '1 hour' - now());
    RETURN NEXT;
END $$;

-- The principal behind a JWT access token: the membership as it is now (a demotion
-- or removal takes effect at once), the login session not revoked, the tenant counter.
CREATE OR REPLACE FUNCTION auth_login_session(p_session_id uuid, p_user_id uuid, p_tenant_id uuid)
RETURNS TABLE (role text, permissions text[], email text, tenant_slug text,
               tenant_limit integer, tenant_hits integer, reset_seconds integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    k record;
    w timestamptz := date_trunc('hour', now());
BEGIN
    SELECT m.role, m.permissions, u.email, t.slug, t.rate_limit_per_hour
      INTO k
      FROM memberships m
      JOIN users u ON u.id = m.user_id
      JOIN tenants t ON t.id = m.tenant_id
     WHERE m.tenant_id = p_tenant_id AND m.user_id = p_user_id
       AND u.is_active AND u.deleted_at IS NULL AND t.is_active AND t.deleted_at IS NULL
       AND EXISTS (SELECT 1 FROM login_sessions s
                    WHERE s.family_id = p_session_id AND s.tenant_id = p_tenant_id
                      AND s.user_id = p_user_id AND s.revoked_at IS NULL);
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO rate_limits AS r (tenant_id, subject_id, window_start, hits)
    VALUES (p_tenant_id, p_tenant_id, w, 1)
    ON CONFLICT ON CONSTRAINT rate_limits_pkey DO UPDATE SET hits = r.hits + 1
    RETURNING r.hits INTO tenant_hits;
    role := k.role; permissions := k.permissions; email := k.email; tenant_slug := k.slug;
    tenant_limit := k.rate_limit_per_hour;
    reset_seconds := ceil(extract(epoch FROM w + interval '1 hour' - now()))::integer;
    RETURN NEXT;
END $$;

-- Sign-in, step 1: the account behind an email (if any), whether it is locked, and its
-- sealed TOTP secret when two-factor sign-in is on.
CREATE OR REPLACE FUNCTION auth_login_lookup(p_email text, p_email_hash bytea)
RETURNS TABLE (user_id uuid, password_hash text, locked_until timestamptz, mfa_secret bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT u.id, u.password_hash,
           (SELECT f.locked_until FROM login_failures f
             WHERE f.email_hash = p_email_hash AND f.locked_until > now()),
           CASE WHEN u.mfa_enabled THEN u.mfa_secret END
      FROM (SELECT 1) one
      LEFT JOIN users u ON u.email = p_email AND u.is_active AND u.deleted_at IS NULL
$$;

-- Sign-in, a failure: count it (15-minute window), lock at p_max, audit it in every
-- tenant of the account (or with no tenant when there is no such account).
CREATE OR REPLACE FUNCTION auth_login_failed(p_email_hash bytea, p_user_id uuid, p_ip inet,
                                  p_user_agent text, p_max integer, p_window interval,
                                  p_cooldown interval)
RETURNS timestamptz
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
DECLARE
    f login_failures;
BEGIN
    INSERT INTO login_failures AS l (email_hash, failures, first_failed_at)
    VALUES (p_email_hash, 1, now())
    ON CONFLICT (email_hash) DO UPDATE SET
        failures = CASE WHEN l.first_failed_at < now() - p_window THEN 1
                        ELSE l.failures + 1 END,
        first_failed_at = CASE WHEN l.first_failed_at < now() - p_window THEN now()
                               ELSE l.first_failed_at END
    RETURNING * INTO f;
    IF f.failures >= p_max AND (f.locked_until IS NULL OR f.locked_until <= now()) THEN
        UPDATE login_failures SET locked_until = now() + p_cooldown,
                                  failures = 0, first_failed_at = now()
         WHERE email_hash = p_email_hash
        RETURNING * INTO f;
    END IF;
    INSERT INTO audit_logs (tenant_id, event_type, user_id, resource_type, resource_id,
                            details, ip_address, user_agent)
    SELECT m.tenant_id, 'login_failed', NULL, 'user', p_user_id::text,
           jsonb_build_object('locked', f.locked_until IS NOT NULL AND f.locked_until > now()),
           p_ip, p_user_agent
      FROM (SELECT p_user_id AS uid) x
      LEFT JOIN memberships m ON m.user_id = x.uid;
    RETURN CASE WHEN f.locked_until > now() THEN f.locked_until END;
END $$;

CREATE OR REPLACE FUNCTION auth_login_succeeded(p_email_hash bytea) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$ DELETE FROM login_failures WHERE email_hash = p_email_hash $$;

-- Sign-in, step 2 (after the password checked out): the account's active tenants.
CREATE OR REPLACE FUNCTION auth_user_tenants(p_user_id uuid)
RETURNS TABLE (tenant_id uuid, slug text, role text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT t.id, t.slug, m.role FROM memberships m JOIN tenants t ON t.id = m.tenant_id
     WHERE m.user_id = p_user_id AND t.is_active AND t.deleted_at IS NULL
     ORDER BY m.created_at, t.slug
$$;

-- The tenant a refresh token or an invitation belongs to; the rest runs under RLS.
CREATE OR REPLACE FUNCTION auth_refresh_tenant(p_token_hash bytea) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT tenant_id FROM login_sessions WHERE token_hash = p_token_hash $$;

CREATE OR REPLACE FUNCTION auth_invitation_tenant(p_token_hash bytea) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT tenant_id FROM invitations WHERE token_hash = p_token_hash $$;

-- "Log out everywhere": every login session of the user, in every tenant.
CREATE OR REPLACE FUNCTION auth_revoke_user_sessions(p_user_id uuid) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    WITH r AS (UPDATE login_sessions SET revoked_at = now(), revoked_reason = 'logout_all'
                WHERE user_id = p_user_id AND revoked_at IS NULL RETURNING 1)
    SELECT count(*)::integer FROM r
$$;
