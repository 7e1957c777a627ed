ALTER TABLE job_logs
    DROP KEY ix_job_logs_job_id_line_number,
    ADD KEY ix_job_logs_job_id_line_number (job_id, line_number);
