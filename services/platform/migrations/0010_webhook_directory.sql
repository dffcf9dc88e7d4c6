-- The webhook workers' cache of device -> webhooks (services/webhooks/directory.py) is
-- invalidated through the database: every change that can change where a device's points go
-- (a webhook registered, deleted, disabled or edited; a device deleted or given to another
-- owner) adds one to `generation`, in the same transaction. A worker reads it once per batch
-- and drops its cache when it moved, so a change is in effect, in every worker, for every
-- point stored after the change was committed (after the API answered).
-- Idempotent: safe to apply again.
CREATE TABLE IF NOT EXISTS webhook_directory (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),  -- one row
    generation  bigint NOT NULL DEFAULT 0
);
INSERT INTO webhook_directory (id, generation) VALUES (true, 0) ON CONFLICT DO NOTHING;

-- search_path FROM CURRENT: a session with another search_path (psql) still finds the table.
CREATE OR REPLACE FUNCTION webhook_directory_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE webhook_directory SET generation = generation + 1;
    RETURN NULL;
END;
$$;

-- Constraint triggers, deferred: they run at COMMIT, so the one row is locked only for the
-- end of the transaction (a device deletion that takes long deleting its points does not
-- hold up every other change), and it is the last lock a transaction takes (no deadlock).
-- The webhooks' health columns, written by the workers after every failing batch, are not
-- watched.
DROP TRIGGER IF EXISTS webhooks_directory_insert_delete ON webhooks;
CREATE CONSTRAINT TRIGGER webhooks_directory_insert_delete
    AFTER INSERT OR DELETE ON webhooks DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION webhook_directory_changed();
DROP TRIGGER IF EXISTS webhooks_directory_update ON webhooks;
CREATE CONSTRAINT TRIGGER webhooks_directory_update
    AFTER UPDATE OF device, owner_id, url, secret, disabled_at ON webhooks
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (OLD.device IS DISTINCT FROM NEW.device OR OLD.owner_id IS DISTINCT FROM NEW.owner_id
          OR OLD.url IS DISTINCT FROM NEW.url OR OLD.secret IS DISTINCT FROM NEW.secret
          OR OLD.disabled_at IS DISTINCT FROM NEW.disabled_at)
    EXECUTE FUNCTION webhook_directory_changed();
DROP TRIGGER IF EXISTS devices_directory_delete ON devices;
CREATE CONSTRAINT TRIGGER devices_directory_delete
    AFTER DELETE ON devices DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION webhook_directory_changed();
DROP TRIGGER IF EXISTS devices_directory_owner ON devices;
CREATE CONSTRAINT TRIGGER devices_directory_owner
    AFTER UPDATE OF owner_id ON devices DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (OLD.owner_id IS DISTINCT FROM NEW.owner_id)
    EXECUTE FUNCTION webhook_directory_changed();
