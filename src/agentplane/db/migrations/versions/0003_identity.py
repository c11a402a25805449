"""Identity: users, memberships, projects, API keys, login sessions, audit log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from agentplane.db.migrations import owner_role, sql, tenant_rls

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SLUG = r"'^[a-z0-9][a-z0-9-]{0,98}[a-z0-9]?$'"
EMAIL = r"'^[^@\s]+@[^@\s]+\.[^@\s]+$'"

TABLES = """
-- A person. Users are global (one login, several tenants); emails and usernames are
-- stored lower-cased so that the unique constraints are case-insensitive.
CREATE TABLE users (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email              text NOT NULL CHECK (email = lower(email) AND length(email) <= 254
                                            AND email ~ {EMAIL}),
    username           text NOT NULL CHECK (username = lower(username)
                                            AND length(username) BETWEEN 1 AND 254),
    password_hash      text,          -- argon2id; NULL: this user cannot sign in with a password
    full_name          text CHECK (length(full_name) <= 255),
    is_active          boolean NOT NULL DEFAULT true,
    is_verified        boolean NOT NULL DEFAULT false,
    email_verified_at  timestamptz,
    last_login         timestamptz,
    mfa_enabled        boolean NOT NULL DEFAULT false,
    mfa_secret         bytea,         -- TOTP secret sealed with AES-GCM, never plaintext
    mfa_last_step      bigint,        -- the last TOTP step used: a code works only once
    metadata           jsonb NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    deleted_at         timestamptz,
    CONSTRAINT users_email_key UNIQUE (email),
    CONSTRAINT users_username_key UNIQUE (username)
);
CREATE TRIGGER users_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- A user's role in a tenant; `permissions` are extra scopes on top of the role's.
CREATE TABLE memberships (
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role         text NOT NULL DEFAULT 'viewer'
                 CHECK (role IN ('owner', 'admin', 'developer', 'viewer')),
    permissions  text[] NOT NULL DEFAULT '{}',
    invited_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user_id_idx ON memberships (user_id);
CREATE TRIGGER memberships_updated_at BEFORE UPDATE ON memberships
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE invitations (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email        text NOT NULL CHECK (email = lower(email) AND email ~ {EMAIL}),
    role         text NOT NULL CHECK (role IN ('admin', 'developer', 'viewer')),
    token_hash   bytea NOT NULL CHECK (length(token_hash) = 32),
    invited_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    expires_at   timestamptz NOT NULL,
    accepted_at  timestamptz,
    accepted_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT invitations_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX invitations_tenant_id_idx ON invitations (tenant_id, created_at DESC);

CREATE TABLE projects (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    slug         text NOT NULL CHECK (slug ~ {SLUG}),
    description  text CHECK (length(description) <= 10000),
    settings     jsonb NOT NULL DEFAULT '{}',
    created_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    archived_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT projects_tenant_slug_key UNIQUE (tenant_id, slug),
    -- Target of composite foreign keys that keep children in their project's tenant.
    CONSTRAINT projects_tenant_id_id_key UNIQUE (tenant_id, id)
);
CREATE TRIGGER projects_updated_at BEFORE UPDATE ON projects
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Composite keys: a project member must be a member of the project's own tenant.
CREATE TABLE project_members (
    tenant_id   uuid NOT NULL,
    project_id  uuid NOT NULL,
    user_id     uuid NOT NULL,
    role        text NOT NULL DEFAULT 'developer'
                CHECK (role IN ('admin', 'developer', 'viewer')),
    added_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, project_id, user_id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES projects (tenant_id, id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, user_id) REFERENCES memberships (tenant_id, user_id)
        ON DELETE CASCADE
);
CREATE INDEX project_members_user_idx ON project_members (tenant_id, user_id);

-- Only the SHA-256 of a key is stored; its owner must be a member of the key's tenant.
CREATE TABLE api_keys (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id            uuid NOT NULL,
    user_id              uuid NOT NULL,
    key_hash             bytea NOT NULL CHECK (length(key_hash) = 32),
    key_prefix           text NOT NULL CHECK (length(key_prefix) = 8),
    name                 text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description          text CHECK (length(description) <= 1000),
    scopes               text[] NOT NULL
                         DEFAULT ARRAY['workflows:read', 'workflows:write', 'agents:execute'],
    rate_limit_per_hour  integer NOT NULL DEFAULT 1000 CHECK (rate_limit_per_hour >= 0),
    expires_at           timestamptz,
    last_used            timestamptz,  -- refreshed at most once a minute (a write per request
                                       -- would cost more than the information is worth)
    is_active            boolean NOT NULL DEFAULT true,
    revoked_at           timestamptz,
    created_by           uuid REFERENCES users (id) ON DELETE SET NULL,
    metadata             jsonb NOT NULL DEFAULT '{}',
    created_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash),
    CONSTRAINT api_keys_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT api_keys_revoked CHECK (is_active = (revoked_at IS NULL)),
    FOREIGN KEY (tenant_id, user_id) REFERENCES memberships (tenant_id, user_id)
        ON DELETE CASCADE
);
CREATE INDEX api_keys_tenant_id_idx ON api_keys (tenant_id, created_at DESC);
CREATE INDEX api_keys_key_prefix_idx ON api_keys (key_prefix);

-- Login sessions: one row per refresh token. A family is one signed-in device; each
-- refresh rotates the token within the family, and presenting a rotated token again
-- (a stolen copy) revokes the whole family. Access tokens name their family (`sid`).
CREATE TABLE login_sessions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL,
    user_id         uuid NOT NULL,
    family_id       uuid NOT NULL,
    token_hash      bytea NOT NULL CHECK (length(token_hash) = 32),
    expires_at      timestamptz NOT NULL,
    ip_address      inet,
    user_agent      text,
    rotated_at      timestamptz,
    revoked_at      timestamptz,
    revoked_reason  text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT login_sessions_token_hash_key UNIQUE (token_hash),
    FOREIGN KEY (tenant_id, user_id) REFERENCES memberships (tenant_id, user_id)
        ON DELETE CASCADE
);
CREATE INDEX login_sessions_family_idx ON login_sessions (family_id);
CREATE INDEX login_sessions_user_idx ON login_sessions (tenant_id, user_id);

-- Append-only for the application role (no UPDATE or DELETE grant). tenant_id is NULL
-- only for events with no tenant (a failed login for an unknown account).
CREATE TABLE audit_logs (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid REFERENCES tenants (id) ON DELETE CASCADE,
    event_type   text NOT NULL CHECK (event_type ~ '^[a-z][a-z_]{1,63}$'),
    user_id      uuid REFERENCES users (id) ON DELETE SET NULL,     -- the actor
    api_key_id   uuid REFERENCES api_keys (id) ON DELETE SET NULL,  -- the actor's key
    resource_type text,
    resource_id  text,
    old_values   jsonb,
    new_values   jsonb,
    details      jsonb NOT NULL DEFAULT '{}',
    ip_address   inet,
    user_agent   text,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX audit_logs_tenant_time_idx ON audit_logs (tenant_id, created_at DESC, id DESC);
CREATE INDEX audit_logs_event_type_idx ON audit_logs (tenant_id, event_type, created_at DESC);
CREATE INDEX audit_logs_resource_idx ON audit_logs (tenant_id, resource_type, resource_id);

-- Fixed-window request counters, per API key and per tenant (subject_id is the key's
-- or the tenant's id), shared by every server process. API-key requests take their
-- allowance in small blocks (auth_lease), login sessions one request at a time.
CREATE TABLE rate_limits (
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    subject_id    uuid NOT NULL,
    window_start  timestamptz NOT NULL,
    hits          integer NOT NULL,
    PRIMARY KEY (tenant_id, subject_id, window_start)
);

-- Failed sign-ins per account name, existing or not (so a lockout reveals nothing).
-- Keyed by the SHA-256 of the normalized email: typed-in names are not kept in clear.
CREATE TABLE login_failures (
    email_hash       bytea PRIMARY KEY CHECK (length(email_hash) = 32),
    failures         integer NOT NULL,
    first_failed_at  timestamptz NOT NULL,
    locked_until     timestamptz
);
"""

POLICIES = """
-- A tenant connection sees the users who are members of its tenant. Registration
-- inserts a user before its membership exists (the row is then invisible until the
-- membership is added in the same transaction); users are never deleted by the app.
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_members ON users FOR SELECT USING (EXISTS (
    SELECT 1 FROM memberships m
     WHERE m.user_id = users.id AND m.tenant_id = app_current_tenant()));
CREATE POLICY tenant_members_update ON users FOR UPDATE USING (EXISTS (
    SELECT 1 FROM memberships m
     WHERE m.user_id = users.id AND m.tenant_id = app_current_tenant()));
CREATE POLICY registration ON users FOR INSERT WITH CHECK (app_current_tenant() IS NOT NULL);
CREATE POLICY owner_access ON users TO {OWNER} USING (true) WITH CHECK (true);

-- login_failures: no policy for the application role; only the functions below touch it.
ALTER TABLE login_failures ENABLE ROW LEVEL SECURITY;
ALTER TABLE login_failures FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_access ON login_failures TO {OWNER} USING (true) WITH CHECK (true);

REVOKE UPDATE, DELETE, TRUNCATE ON audit_logs FROM {app};
REVOKE ALL ON rate_limits, login_failures FROM {app};
REVOKE DELETE, TRUNCATE ON users FROM {app};
"""

# Sign-in and API-key checks happen before any tenant is known, so they cannot run on
# a tenant connection. Rather than hand the API an unrestricted connection, each such
# lookup is one narrow SECURITY DEFINER function (owned by the owner, fixed
# search_path, EXECUTE for the application role only) that answers exactly one
# question about one credential. Everything after "which tenant?" runs under RLS.
FUNCTIONS = """
-- Rate-limit allowance handed out in blocks: up to p_max requests (at most 0.5% of the
-- limit, at least 1) under one lock of the counter row, never past the limit. A server
-- process spends its block locally; what it leaves unspent when the window ends is
-- lost, so with N processes a subject may be refused up to N * (block - 1) requests
-- early, but is never served more than its limit. Limits under 400 lease one at a time
-- (exact). Internal: called by the definer functions only.
CREATE FUNCTION auth_lease(p_tenant_id uuid, p_subject_id uuid, p_window timestamptz,
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
-- or a notification (below) said the key, its owner or its tenant changed.
CREATE FUNCTION auth_api_key(p_key_hash bytea, p_key_max integer, p_tenant_max integer)
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

-- Servers cache verified keys; this tells every one of them (LISTEN agentplane_auth)
-- when something a cached principal depends on changes, whoever changes it (API, CLI,
-- plain SQL). Sent at commit. Payload: "k <key id>", "u <user id>" or "t <tenant id>".
CREATE FUNCTION auth_notify_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = public, pg_temp
AS $$
BEGIN
    -- One branch per table: a record's fields are resolved only where they are used.
    IF TG_TABLE_NAME = 'api_keys' THEN
        PERFORM pg_notify('agentplane_auth', 'k ' || OLD.id);
    ELSIF TG_TABLE_NAME = 'memberships' THEN
        PERFORM pg_notify('agentplane_auth', 'u ' || OLD.user_id);
    ELSIF TG_TABLE_NAME = 'users' THEN
        PERFORM pg_notify('agentplane_auth', 'u ' || OLD.id);
    ELSE
        PERFORM pg_notify('agentplane_auth', 't ' || OLD.id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER api_keys_auth_notify
    AFTER UPDATE OF is_active, revoked_at, expires_at, scopes, rate_limit_per_hour,
                    key_hash, user_id, tenant_id OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION auth_notify_change();
CREATE TRIGGER memberships_auth_notify
    AFTER UPDATE OF role, permissions, user_id, tenant_id OR DELETE ON memberships
    FOR EACH ROW EXECUTE FUNCTION auth_notify_change();
CREATE TRIGGER users_auth_notify
    AFTER UPDATE OF is_active, deleted_at, email OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION auth_notify_change();
CREATE TRIGGER tenants_auth_notify
    AFTER UPDATE OF is_active, deleted_at, slug, rate_limit_per_hour OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION auth_notify_change();

-- The principal behind a JWT access token: the membership as it is now (a demotion
-- or removal takes effect at once), the login session not revoked, the tenant counter.
CREATE FUNCTION auth_login_session(p_session_id uuid, p_user_id uuid, p_tenant_id uuid)
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
CREATE FUNCTION auth_login_lookup(p_email text, p_email_hash bytea)
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
CREATE FUNCTION auth_login_failed(p_email_hash bytea, p_user_id uuid, p_ip inet,
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

CREATE FUNCTION auth_login_succeeded(p_email_hash bytea) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$ DELETE FROM login_failures WHERE email_hash = p_email_hash $$;

-- Sign-in, step 2 (after the password checked out): the account's active tenants.
CREATE FUNCTION auth_user_tenants(p_user_id uuid)
RETURNS TABLE (tenant_id uuid, slug text, role text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    SELECT t.id, t.slug, m.role FROM memberships m JOIN tenants t ON t.id = m.tenant_id
     WHERE m.user_id = p_user_id AND t.is_active AND t.deleted_at IS NULL
     ORDER BY m.created_at, t.slug
$$;

-- The tenant a refresh token or an invitation belongs to; the rest runs under RLS.
CREATE FUNCTION auth_refresh_tenant(p_token_hash bytea) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT tenant_id FROM login_sessions WHERE token_hash = p_token_hash $$;

CREATE FUNCTION auth_invitation_tenant(p_token_hash bytea) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp
AS $$ SELECT tenant_id FROM invitations WHERE token_hash = p_token_hash $$;

-- "Log out everywhere": every login session of the user, in every tenant.
CREATE FUNCTION auth_revoke_user_sessions(p_user_id uuid) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp
AS $$
    WITH r AS (UPDATE login_sessions SET revoked_at = now(), revoked_reason = 'logout_all'
                WHERE user_id = p_user_id AND revoked_at IS NULL RETURNING 1)
    SELECT count(*)::integer FROM r
$$;
"""

SIGNATURES = (
    "auth_api_key(bytea, integer, integer)",
    "auth_login_session(uuid, uuid, uuid)",
    "auth_login_lookup(text, bytea)",
    "auth_login_failed(bytea, uuid, inet, text, integer, interval, interval)",
    "auth_login_succeeded(bytea)",
    "auth_user_tenants(uuid)",
    "auth_refresh_tenant(bytea)",
    "auth_invitation_tenant(bytea)",
    "auth_revoke_user_sessions(uuid)",
)
# Not for the application role: called only by the functions and triggers above.
INTERNAL = (
    "auth_lease(uuid, uuid, timestamptz, integer, integer)",
    "auth_notify_change()",
)
TENANT_TABLES = (
    "memberships",
    "invitations",
    "projects",
    "project_members",
    "api_keys",
    "login_sessions",
    "audit_logs",
    "rate_limits",
)


def upgrade() -> None:
    sql(TABLES.replace("{EMAIL}", EMAIL).replace("{SLUG}", SLUG))
    for table in TENANT_TABLES:
        sql(tenant_rls(table))
    sql(POLICIES.replace("{OWNER}", owner_role()))
    sql(FUNCTIONS)
    for signature in SIGNATURES:
        # Functions are executable by PUBLIC by default; these are for the app only.
        sql(f"REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC;")
        sql(f"GRANT EXECUTE ON FUNCTION {signature} TO {{app}};")
    for signature in INTERNAL:
        sql(f"REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC;")


def downgrade() -> None:
    sql("DROP TRIGGER tenants_auth_notify ON tenants;")  # tenants outlive this revision
    for signature in SIGNATURES:
        sql(f"DROP FUNCTION {signature};")
    sql("""
    DROP POLICY tenant_members ON users;          -- they depend on memberships
    DROP POLICY tenant_members_update ON users;
    DROP TABLE login_failures;
    DROP TABLE rate_limits;
    DROP TABLE audit_logs;
    DROP TABLE login_sessions;
    DROP TABLE api_keys;
    DROP TABLE project_members;
    DROP TABLE projects;
    DROP TABLE invitations;
    DROP TABLE memberships;
    DROP TABLE users;
    """)
    for signature in INTERNAL:
        sql(f"DROP FUNCTION {signature};")
