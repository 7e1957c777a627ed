-- The seed calls audit_logs immutable: the database itself refuses to change or delete an
-- audit record. SQLite runs foreign-key actions as updates that fire triggers, so the one
-- change let through is the seed's own ON DELETE SET NULL: user_id becomes NULL, nothing else
-- changes, and the user it named is gone.
CREATE TRIGGER audit_logs_append_only_update BEFORE UPDATE ON audit_logs
WHEN NOT (
    NEW.user_id IS NULL AND OLD.user_id IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM users WHERE id = OLD.user_id)
    AND NEW.id IS OLD.id AND NEW.action IS OLD.action
    AND NEW.resource_type IS OLD.resource_type AND NEW.resource_id IS OLD.resource_id
    AND NEW.details IS OLD.details AND NEW.ip_address IS OLD.ip_address
    AND NEW.user_agent IS OLD.user_agent AND NEW.timestamp IS OLD.timestamp
)
BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only: an audit record cannot be changed');
END;
CREATE TRIGGER audit_logs_append_only_delete BEFORE DELETE ON audit_logs
BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only: an audit record cannot be deleted');
END;
