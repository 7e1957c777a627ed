-- Runs (see the MySQL migration for the columns).
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id CHAR(36) NOT NULL UNIQUE,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    playbook_id INTEGER NOT NULL REFERENCES playbooks (id) ON DELETE RESTRICT,
    template_id INTEGER NULL REFERENCES job_templates (id) ON DELETE SET NULL,
    schedule_id INTEGER NULL,
    status VARCHAR(32) NOT NULL DEFAULT 'running',
    rollout JSON NULL,
    total INTEGER NOT NULL,
    waves INTEGER NOT NULL DEFAULT 1,
    max_failures INTEGER NULL,
    max_unreachable INTEGER NULL,
    current_wave INTEGER NOT NULL DEFAULT 0,
    pause_between_waves BOOLEAN NOT NULL DEFAULT FALSE,
    approved_wave INTEGER NOT NULL DEFAULT 0,
    stop VARCHAR(16) NULL,
    stop_reason VARCHAR(255) NULL,
    relaunch_of INTEGER NULL REFERENCES runs (id) ON DELETE SET NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    completed_at DATETIME NULL
);
CREATE INDEX ix_runs_status_created_at ON runs (status, created_at);
CREATE INDEX ix_runs_user_id ON runs (user_id);
CREATE INDEX ix_runs_playbook_id ON runs (playbook_id);
CREATE INDEX ix_runs_relaunch_of ON runs (relaunch_of);

-- SQLite cannot drop a column that carries a foreign key, so these are plain columns here.
ALTER TABLE jobs ADD COLUMN run_id INTEGER NULL;
ALTER TABLE jobs ADD COLUMN wave INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN unreachable BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX ix_jobs_run_id_status ON jobs (run_id, status);

ALTER TABLE tickets ADD COLUMN run_id INTEGER NULL;
CREATE INDEX ix_tickets_run_id ON tickets (run_id);
