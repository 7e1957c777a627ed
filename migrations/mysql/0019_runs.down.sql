ALTER TABLE tickets DROP FOREIGN KEY fk_tickets_run_id, DROP KEY ix_tickets_run_id, DROP COLUMN run_id;
ALTER TABLE jobs DROP FOREIGN KEY fk_jobs_run_id, DROP KEY ix_jobs_run_id_status,
    DROP COLUMN run_id, DROP COLUMN wave, DROP COLUMN unreachable;
DROP TABLE runs;
