ALTER TABLE jobs DROP FOREIGN KEY fk_jobs_agent_id;
ALTER TABLE jobs
    DROP KEY ix_jobs_agent_id_status,
    DROP COLUMN pending_reason,
    DROP COLUMN exit_code,
    DROP COLUMN cancel_requested_at,
    DROP COLUMN assigned_at,
    DROP COLUMN agent_id;
