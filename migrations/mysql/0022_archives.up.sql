-- Archives of job output and audit records (issue 25): before lines leave the database, each
-- finished job's output is written to an archive object (zstd frames with a line index, see
-- controller/src/archive/format.rs), read back and verified; this row records that verified
-- archive, and only a job that has one may lose its rows. Readers take such a job's log from
-- the archive.
CREATE TABLE job_log_archives (
    job_id INT NOT NULL PRIMARY KEY,
    location VARCHAR(1024) NOT NULL,
    line_count BIGINT NOT NULL,
    last_line INT NOT NULL,
    bytes BIGINT NOT NULL,
    sha256 CHAR(64) NOT NULL,
    archived_at DATETIME NOT NULL,
    CONSTRAINT fk_job_log_archives_job_id FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Exports of audit records by id range, the same format (one JSON record a line); audit rows
-- themselves only ever go by dropping whole partitions that such an export covers.
CREATE TABLE audit_archives (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    first_id BIGINT NOT NULL,
    last_id BIGINT NOT NULL,
    label VARCHAR(100) NOT NULL,
    location VARCHAR(1024) NOT NULL,
    row_count BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    sha256 CHAR(64) NOT NULL,
    archived_at DATETIME NOT NULL,
    KEY ix_audit_archives_range (first_id, last_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
