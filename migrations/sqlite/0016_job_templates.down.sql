DROP TABLE job_secret_vars;
DROP INDEX ix_jobs_template_id;
ALTER TABLE jobs DROP COLUMN template_id;
ALTER TABLE jobs DROP COLUMN time_limit_secs;
DROP TRIGGER tr_job_templates_updated_at;
DROP TABLE job_templates;
