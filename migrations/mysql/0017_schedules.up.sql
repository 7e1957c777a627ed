-- Schedules: a job template run by a cron expression in a named time zone. `next_run_at` is
-- the next slot in UTC (NULL once the schedule has ended or is disabled); a controller claims a
-- slot by moving it forward with a conditional UPDATE, so one controller fires each slot.
-- `answers` holds only non-secret survey answers: a template with a required secret question
-- cannot be scheduled.
CREATE TABLE schedules (
    id INT NOT NULL AUTO_INCREMENT,
    uuid CHAR(36) NOT NULL,
    name VARCHAR(255) NOT NULL,
    template_id INT NOT NULL,
    cron VARCHAR(255) NOT NULL,
    timezone VARCHAR(64) NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    ends_at DATETIME NULL,
    answers JSON NULL,
    overlap VARCHAR(16) NOT NULL DEFAULT 'skip',
    next_run_at DATETIME NULL,
    created_by INT NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uq_schedules_uuid (uuid),
    UNIQUE KEY uq_schedules_name (name),
    KEY ix_schedules_due (enabled, next_run_at),
    KEY ix_schedules_template_id (template_id),
    CONSTRAINT fk_schedules_template_id FOREIGN KEY (template_id) REFERENCES job_templates (id) ON DELETE CASCADE,
    CONSTRAINT fk_schedules_created_by FOREIGN KEY (created_by) REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT ck_schedules_overlap CHECK (overlap IN ('skip', 'queue'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- One row per slot a controller claimed: fired, skipped (missed or overlapping) or failed.
-- UNIQUE(schedule_id, slot_at) is the second guard against firing a slot twice.
CREATE TABLE schedule_runs (
    id INT NOT NULL AUTO_INCREMENT,
    schedule_id INT NOT NULL,
    slot_at DATETIME NOT NULL,
    status VARCHAR(16) NOT NULL,
    reason VARCHAR(255) NULL,
    jobs INT NOT NULL DEFAULT 0,
    controller_id VARCHAR(64) NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uq_schedule_runs_slot (schedule_id, slot_at),
    CONSTRAINT fk_schedule_runs_schedule_id FOREIGN KEY (schedule_id) REFERENCES schedules (id) ON DELETE CASCADE,
    CONSTRAINT ck_schedule_runs_status CHECK (status IN ('claimed', 'fired', 'skipped', 'failed'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

ALTER TABLE jobs
    ADD COLUMN schedule_id INT NULL,
    ADD KEY ix_jobs_schedule_id (schedule_id),
    ADD CONSTRAINT fk_jobs_schedule_id FOREIGN KEY (schedule_id) REFERENCES schedules (id) ON DELETE SET NULL;

-- Blackout windows: jobs on servers of `environment` (NULL = every environment) do not start
-- inside them. A weekly window (`weekly_start` to `weekly_end`, each minutes since Monday 00:00
-- in `timezone`; an end before the start crosses the week's end) and/or a one-off window
-- (absolute UTC instants).
CREATE TABLE blackouts (
    id INT NOT NULL AUTO_INCREMENT,
    name VARCHAR(255) NOT NULL,
    environment VARCHAR(50) NULL,
    timezone VARCHAR(64) NOT NULL DEFAULT 'UTC',
    weekly_start INT NULL,
    weekly_end INT NULL,
    starts_at DATETIME NULL,
    ends_at DATETIME NULL,
    applies_to_manual BOOLEAN NOT NULL DEFAULT FALSE,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    created_by INT NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uq_blackouts_name (name),
    CONSTRAINT fk_blackouts_created_by FOREIGN KEY (created_by) REFERENCES users (id) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
