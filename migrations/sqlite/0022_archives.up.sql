-- Archives of job output and audit records (see the MySQL migration for the columns).
CREATE TABLE job_log_archives (
    job_id INTEGER NOT NULL PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    location VARCHAR(1024) NOT NULL,
    line_count BIGINT NOT NULL,
    last_line INTEGER NOT NULL,
    bytes BIGINT NOT NULL,
    sha256 CHAR(64) NOT NULL,
    archived_at DATETIME NOT NULL
);

CREATE TABLE audit_archives (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    first_id BIGINT NOT NULL,
    last_id BIGINT NOT NULL,
    label VARCHAR(100) NOT NULL,
    location VARCHAR(1024) NOT NULL,
    row_count BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    sha256 CHAR(64) NOT NULL,
    archived_at DATETIME NOT NULL
);
CREATE INDEX ix_audit_archives_range ON audit_archives (first_id, last_id);
