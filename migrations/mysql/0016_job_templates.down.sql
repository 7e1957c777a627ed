DROP TABLE job_secret_vars;
ALTER TABLE jobs DROP FOREIGN KEY fk_jobs_template_id, DROP KEY ix_jobs_template_id,
    DROP COLUMN template_id, DROP COLUMN time_limit_secs;
DROP TABLE job_templates;
