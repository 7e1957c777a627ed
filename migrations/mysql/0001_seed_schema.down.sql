DROP TABLE audit_logs;
DROP TABLE tickets;
DROP TABLE job_logs;
DROP TABLE jobs;
DROP TABLE playbooks;
DROP TABLE servers;
DROP TABLE users;
