-- Projects: trees of files (a git repository, an uploaded archive, or one uploaded playbook)
-- whose syncs make revisions, canonical tars kept under <data_dir>/revisions/<digest>.tar.
CREATE TABLE projects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name VARCHAR(255) NOT NULL UNIQUE,
    description TEXT NULL,
    kind VARCHAR(16) NOT NULL CHECK (kind IN ('git', 'archive', 'file')),
    git_url VARCHAR(1000) NULL,
    git_ref VARCHAR(255) NULL,
    git_key_path VARCHAR(500) NULL,
    inventory_path VARCHAR(500) NULL,
    sync_state VARCHAR(16) NOT NULL DEFAULT 'never'
        CHECK (sync_state IN ('never', 'syncing', 'ok', 'failed')),
    sync_error TEXT NULL,
    sync_started_at DATETIME NULL,
    synced_at DATETIME NULL,
    current_revision_id INTEGER NULL,
    is_active BOOLEAN NOT NULL DEFAULT 1,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX ix_projects_current_revision_id ON projects (current_revision_id);
CREATE TRIGGER tr_projects_updated_at AFTER UPDATE ON projects FOR EACH ROW
    WHEN NEW.updated_at = OLD.updated_at
    BEGIN UPDATE projects SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id; END;

CREATE TABLE project_revisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE RESTRICT,
    digest CHAR(64) NOT NULL,
    git_commit VARCHAR(64) NULL,
    size_bytes BIGINT NOT NULL,
    entries INTEGER NOT NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (project_id, digest)
);
CREATE INDEX ix_project_revisions_digest ON project_revisions (digest);

-- SQLite cannot drop a column that carries a foreign key, so these are plain columns here (the
-- MySQL migration has the real constraints).
ALTER TABLE playbooks ADD COLUMN project_id INTEGER NULL;
CREATE INDEX ix_playbooks_project_id ON playbooks (project_id);
ALTER TABLE jobs ADD COLUMN revision_id INTEGER NULL;
CREATE INDEX ix_jobs_revision_id ON jobs (revision_id);
