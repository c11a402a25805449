-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- Servers cache verified keys; this tells every one of them (LISTEN agentplane_auth)
-- when something a cached principal depends on changes, whoever changes it (API, CLI,
-- plain SQL). Sent at commit. Payload: "k <key id>", "u <user id>" or "t <tenant id>".
CREATE OR REPLACE FUNCTION auth_notify_change() RETURNS trigger
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

CREATE OR REPLACE TRIGGER api_keys_auth_notify
    AFTER UPDATE OF is_active, revoked_at, expires_at, scopes, rate_limit_per_hour,
                    key_hash, user_id, tenant_id OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION auth_notify_change();

CREATE OR REPLACE TRIGGER memberships_auth_notify
    AFTER UPDATE OF role, permissions, user_id, tenant_id OR DELETE ON memberships
    FOR EACH ROW EXECUTE FUNCTION auth_notify_change();

CREATE OR REPLACE TRIGGER users_auth_notify
    AFTER UPDATE OF is_active, deleted_at, email OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION auth_notify_change();

CREATE OR REPLACE TRIGGER tenants_auth_notify
    AFTER UPDATE OF is_active, deleted_at, slug, rate_limit_per_hour OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION auth_notify_change();
