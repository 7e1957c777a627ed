DROP INDEX ix_jobs_agent_id_status;
ALTER TABLE jobs DROP COLUMN pending_reason;
ALTER TABLE jobs DROP COLUMN exit_code;
ALTER TABLE jobs DROP COLUMN cancel_requested_at;
ALTER TABLE jobs DROP COLUMN assigned_at;
ALTER TABLE jobs DROP COLUMN agent_id;
