-- The seed calls audit_logs immutable: the database itself refuses to change or delete an
-- audit record, whoever asks. InnoDB does not fire triggers for foreign-key actions, so the
-- seed's ON DELETE SET NULL (a user deleted) still detaches that user's records; dropping a
-- whole archived partition is DDL and is not refused either.
CREATE TRIGGER audit_logs_append_only_update BEFORE UPDATE ON audit_logs FOR EACH ROW
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_logs is append-only: an audit record cannot be changed';
CREATE TRIGGER audit_logs_append_only_delete BEFORE DELETE ON audit_logs FOR EACH ROW
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'audit_logs is append-only: an audit record cannot be deleted';
