-- Schedules, their runs and blackout windows (see the MySQL migration for the columns).
CREATE TABLE schedules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid CHAR(36) NOT NULL UNIQUE,
    name VARCHAR(255) NOT NULL UNIQUE,
    template_id INTEGER NOT NULL REFERENCES job_templates (id) ON DELETE CASCADE,
    cron VARCHAR(255) NOT NULL,
    timezone VARCHAR(64) NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    ends_at DATETIME NULL,
    answers TEXT NULL,
    overlap VARCHAR(16) NOT NULL DEFAULT 'skip' CHECK (overlap IN ('skip', 'queue')),
    next_run_at DATETIME NULL,
    created_by INTEGER NULL REFERENCES users (id) ON DELETE SET NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX ix_schedules_due ON schedules (enabled, next_run_at);
CREATE INDEX ix_schedules_template_id ON schedules (template_id);
CREATE TRIGGER tr_schedules_updated_at AFTER UPDATE ON schedules FOR EACH ROW
    WHEN NEW.updated_at = OLD.updated_at
    BEGIN UPDATE schedules SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id; END;

CREATE TABLE schedule_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    schedule_id INTEGER NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    slot_at DATETIME NOT NULL,
    status VARCHAR(16) NOT NULL CHECK (status IN ('claimed', 'fired', 'skipped', 'failed')),
    reason VARCHAR(255) NULL,
    jobs INTEGER NOT NULL DEFAULT 0,
    controller_id VARCHAR(64) NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (schedule_id, slot_at)
);

-- A plain column here: SQLite cannot drop a column that carries a foreign key (the MySQL
-- migration has the constraint; deleting a schedule clears it in the store on both).
ALTER TABLE jobs ADD COLUMN schedule_id INTEGER NULL;
CREATE INDEX ix_jobs_schedule_id ON jobs (schedule_id);

CREATE TABLE blackouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name VARCHAR(255) NOT NULL UNIQUE,
    environment VARCHAR(50) NULL,
    timezone VARCHAR(64) NOT NULL DEFAULT 'UTC',
    weekly_start INTEGER NULL,
    weekly_end INTEGER NULL,
    starts_at DATETIME NULL,
    ends_at DATETIME NULL,
    applies_to_manual BOOLEAN NOT NULL DEFAULT FALSE,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    created_by INTEGER NULL REFERENCES users (id) ON DELETE SET NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
