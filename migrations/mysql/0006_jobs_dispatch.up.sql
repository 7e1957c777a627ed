-- Who runs a job, when it was handed over, cancel requests, and the outcome details.
ALTER TABLE jobs
    ADD COLUMN agent_id INT NULL,
    ADD COLUMN assigned_at DATETIME NULL,
    ADD COLUMN cancel_requested_at DATETIME NULL,
    ADD COLUMN exit_code INT NULL,
    ADD COLUMN pending_reason VARCHAR(255) NULL,
    ADD KEY ix_jobs_agent_id_status (agent_id, status),
    ADD CONSTRAINT fk_jobs_agent_id FOREIGN KEY (agent_id) REFERENCES agents (id) ON DELETE SET NULL;
