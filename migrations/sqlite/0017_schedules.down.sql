DROP TABLE blackouts;
DROP INDEX ix_jobs_schedule_id;
ALTER TABLE jobs DROP COLUMN schedule_id;
DROP TABLE schedule_runs;
DROP TRIGGER tr_schedules_updated_at;
DROP TABLE schedules;
