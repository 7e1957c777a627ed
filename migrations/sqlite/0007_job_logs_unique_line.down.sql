DROP INDEX ix_job_logs_job_id_line_number;
CREATE INDEX ix_job_logs_job_id_line_number ON job_logs (job_id, line_number);
