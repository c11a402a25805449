-- The current definitions: a change here goes with a revision that applies this file
-- (see agentplane.db.migrations).
--
-- Price history: a new price closes the open one, so past calls keep their cost, and
-- no two prices of a model are valid at once.

CREATE OR REPLACE FUNCTION llm_prices_no_overlap() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (
            SELECT 1 FROM llm_prices p
            WHERE p.model_id = NEW.model_id AND p.id <> NEW.id
              AND tstzrange(p.valid_from, p.valid_to) && tstzrange(NEW.valid_from, NEW.valid_to)
        ) THEN
            RAISE 'a price for this model is already valid in that period'
                USING ERRCODE = 'AP409';
        END IF;
        RETURN NEW;
    END $$;

CREATE OR REPLACE TRIGGER llm_prices_no_overlap BEFORE INSERT OR UPDATE ON llm_prices
    FOR EACH ROW EXECUTE FUNCTION llm_prices_no_overlap();
