-- SQLite cannot drop a column that carries a foreign key, so agent_id is a plain column here
-- (the store never deletes agents; the MySQL migration has the real constraint).
ALTER TABLE jobs ADD COLUMN agent_id INTEGER NULL;
ALTER TABLE jobs ADD COLUMN assigned_at DATETIME NULL;
ALTER TABLE jobs ADD COLUMN cancel_requested_at DATETIME NULL;
ALTER TABLE jobs ADD COLUMN exit_code INTEGER NULL;
ALTER TABLE jobs ADD COLUMN pending_reason VARCHAR(255) NULL;
CREATE INDEX ix_jobs_agent_id_status ON jobs (agent_id, status);
