DROP TRIGGER IF EXISTS audit_logs_append_only_delete;
DROP TRIGGER IF EXISTS audit_logs_append_only_update;
