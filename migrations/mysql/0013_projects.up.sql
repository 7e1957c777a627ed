-- Projects: trees of files (a git repository, an uploaded archive, or one uploaded playbook)
-- whose syncs make revisions, canonical tars kept under <data_dir>/revisions/<digest>.tar
-- (files, not BLOBs: tens of MB fight max_allowed_packet and bloat the hot tables' backups).
CREATE TABLE projects (
    id INT NOT NULL AUTO_INCREMENT,
    name VARCHAR(255) NOT NULL,
    description TEXT NULL,
    kind VARCHAR(16) NOT NULL,
    git_url VARCHAR(1000) NULL,
    git_ref VARCHAR(255) NULL,
    -- A deploy key file on the controller, until credentials are stored.
    git_key_path VARCHAR(500) NULL,
    inventory_path VARCHAR(500) NULL,
    sync_state VARCHAR(16) NOT NULL DEFAULT 'never',
    sync_error TEXT NULL,
    sync_started_at DATETIME NULL,
    synced_at DATETIME NULL,
    -- No foreign key: project_revisions refers to projects, and a circular pair of constraints
    -- would make every insert and delete an ordering puzzle.
    current_revision_id INT NULL,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uq_projects_name (name),
    KEY ix_projects_current_revision_id (current_revision_id),
    CONSTRAINT ck_projects_kind CHECK (kind IN ('git', 'archive', 'file')),
    CONSTRAINT ck_projects_sync_state CHECK (sync_state IN ('never', 'syncing', 'ok', 'failed'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE project_revisions (
    id INT NOT NULL AUTO_INCREMENT,
    project_id INT NOT NULL,
    digest CHAR(64) NOT NULL,
    git_commit VARCHAR(64) NULL,
    size_bytes BIGINT NOT NULL,
    entries INT NOT NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uq_project_revisions_project_digest (project_id, digest),
    KEY ix_project_revisions_digest (digest),
    CONSTRAINT fk_project_revisions_project_id FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE RESTRICT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

ALTER TABLE playbooks
    ADD COLUMN project_id INT NULL,
    ADD KEY ix_playbooks_project_id (project_id),
    ADD CONSTRAINT fk_playbooks_project_id FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE RESTRICT;

ALTER TABLE jobs
    ADD COLUMN revision_id INT NULL,
    ADD KEY ix_jobs_revision_id (revision_id),
    ADD CONSTRAINT fk_jobs_revision_id FOREIGN KEY (revision_id) REFERENCES project_revisions (id) ON DELETE RESTRICT;
