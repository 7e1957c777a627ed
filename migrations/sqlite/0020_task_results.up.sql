-- Per-task results and recaps (see the MySQL migration for the columns).
CREATE TABLE job_task_results (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    host VARCHAR(255) NOT NULL,
    play VARCHAR(255) NOT NULL,
    task VARCHAR(255) NOT NULL,
    action VARCHAR(100) NOT NULL,
    status VARCHAR(12) NOT NULL CHECK (status IN ('ok', 'changed', 'failed', 'unreachable', 'skipped', 'rescued')),
    started_at DATETIME NOT NULL,
    duration_ms INTEGER NOT NULL,
    message TEXT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE INDEX ix_job_task_results_job_status ON job_task_results (job_id, status);

CREATE TABLE job_recaps (
    job_id INTEGER NOT NULL PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    ok INTEGER NOT NULL DEFAULT 0,
    changed INTEGER NOT NULL DEFAULT 0,
    unreachable INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    rescued INTEGER NOT NULL DEFAULT 0,
    ignored INTEGER NOT NULL DEFAULT 0
);
