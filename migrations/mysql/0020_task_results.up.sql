-- Per-task results (issue 24): what the agent's shipped callback plugin reported for each task
-- on each host, and ansible's recap per job. Kept compact: names and the status, timing, and a
-- trimmed message for failures; never facts or module output. `seq` is the result's number in
-- its job (1, 2, 3 …, as the agent numbered it): the primary key makes a replayed batch land
-- once and keeps a job's rows together.
CREATE TABLE job_task_results (
    job_id INT NOT NULL,
    seq INT NOT NULL,
    host VARCHAR(255) NOT NULL,
    play VARCHAR(255) NOT NULL,
    task VARCHAR(255) NOT NULL,
    action VARCHAR(100) NOT NULL,
    status VARCHAR(12) NOT NULL,
    started_at DATETIME(3) NOT NULL,
    duration_ms INT NOT NULL,
    message TEXT NULL,
    PRIMARY KEY (job_id, seq),
    KEY ix_job_task_results_job_status (job_id, status),
    CONSTRAINT fk_job_task_results_job_id FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE,
    CONSTRAINT ck_job_task_results_status CHECK (status IN ('ok', 'changed', 'failed', 'unreachable', 'skipped', 'rescued'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- ansible's PLAY RECAP of a job, summed over the hosts it lists; written with the outcome.
CREATE TABLE job_recaps (
    job_id INT NOT NULL,
    ok INT NOT NULL DEFAULT 0,
    changed INT NOT NULL DEFAULT 0,
    unreachable INT NOT NULL DEFAULT 0,
    failed INT NOT NULL DEFAULT 0,
    skipped INT NOT NULL DEFAULT 0,
    rescued INT NOT NULL DEFAULT 0,
    ignored INT NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id),
    CONSTRAINT fk_job_recaps_job_id FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
