DROP TABLE blackouts;
ALTER TABLE jobs DROP FOREIGN KEY fk_jobs_schedule_id, DROP KEY ix_jobs_schedule_id, DROP COLUMN schedule_id;
DROP TABLE schedule_runs;
DROP TABLE schedules;
