-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- An agent instance's status history is written by a trigger, so no code path can
-- change a status unrecorded. The reason of a change travels in the transaction
-- setting app.status_reason.

CREATE OR REPLACE FUNCTION agent_instance_status_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO agent_instance_status_history (tenant_id, instance_id, status, reason)
        VALUES (NEW.tenant_id, NEW.id, NEW.status,
                nullif(current_setting('app.status_reason', true), ''));
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER agent_instances_status_log
    AFTER INSERT OR UPDATE OF status ON agent_instances
    FOR EACH ROW EXECUTE FUNCTION agent_instance_status_log();
