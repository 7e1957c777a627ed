DROP TABLE audit_archives;
DROP TABLE job_log_archives;
