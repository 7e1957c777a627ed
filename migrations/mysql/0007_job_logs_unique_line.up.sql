-- A batch replayed after a reconnect must be stored once: (job_id, line_number) becomes UNIQUE.
ALTER TABLE job_logs
    DROP KEY ix_job_logs_job_id_line_number,
    ADD UNIQUE KEY ix_job_logs_job_id_line_number (job_id, line_number);
