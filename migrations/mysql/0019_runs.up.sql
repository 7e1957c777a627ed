-- Runs: one launch = one run grouping its jobs, with an optional rollout (waves, an approval
-- gate between them) and failure budgets counted across datacenters. `rollout` is the spec as
-- launched (JSON); `max_failures`/`max_unreachable` are the budgets in servers, computed at
-- launch from the spec and the number of servers (NULL: none). `current_wave` is the highest
-- wave released to the scheduler; `approved_wave` the highest an operator let through.
-- `stop` says why the run stopped early (budget, canary, cancelled), `stop_reason` in words.
CREATE TABLE runs (
    id INT NOT NULL AUTO_INCREMENT,
    run_id CHAR(36) NOT NULL,
    user_id INT NOT NULL,
    playbook_id INT NOT NULL,
    template_id INT NULL,
    schedule_id INT NULL,
    status VARCHAR(32) NOT NULL DEFAULT 'running',
    rollout JSON NULL,
    total INT NOT NULL,
    waves INT NOT NULL DEFAULT 1,
    max_failures INT NULL,
    max_unreachable INT NULL,
    current_wave INT NOT NULL DEFAULT 0,
    pause_between_waves BOOLEAN NOT NULL DEFAULT FALSE,
    approved_wave INT NOT NULL DEFAULT 0,
    stop VARCHAR(16) NULL,
    stop_reason VARCHAR(255) NULL,
    relaunch_of INT NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    completed_at DATETIME NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_runs_run_id (run_id),
    KEY ix_runs_status_created_at (status, created_at),
    KEY ix_runs_user_id (user_id),
    KEY ix_runs_playbook_id (playbook_id),
    KEY ix_runs_relaunch_of (relaunch_of),
    CONSTRAINT fk_runs_user_id FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE RESTRICT,
    CONSTRAINT fk_runs_playbook_id FOREIGN KEY (playbook_id) REFERENCES playbooks (id) ON DELETE RESTRICT,
    CONSTRAINT fk_runs_template_id FOREIGN KEY (template_id) REFERENCES job_templates (id) ON DELETE SET NULL,
    CONSTRAINT fk_runs_relaunch_of FOREIGN KEY (relaunch_of) REFERENCES runs (id) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- A job's run and wave; whether it ended unreachable (set by the agent's report) rather than
-- failed, which the run's budgets count apart.
ALTER TABLE jobs
    ADD COLUMN run_id INT NULL,
    ADD COLUMN wave INT NOT NULL DEFAULT 0,
    ADD COLUMN unreachable BOOLEAN NOT NULL DEFAULT FALSE,
    ADD KEY ix_jobs_run_id_status (run_id, status),
    ADD CONSTRAINT fk_jobs_run_id FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE SET NULL;

-- The run a ticket is about (one ticket per failed run, listing its failed servers).
ALTER TABLE tickets
    ADD COLUMN run_id INT NULL,
    ADD KEY ix_tickets_run_id (run_id),
    ADD CONSTRAINT fk_tickets_run_id FOREIGN KEY (run_id) REFERENCES runs (id) ON DELETE SET NULL;
