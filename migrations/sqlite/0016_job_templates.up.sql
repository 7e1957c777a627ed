-- Job templates (see the MySQL migration for the columns).
CREATE TABLE job_templates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid CHAR(36) NOT NULL UNIQUE,
    name VARCHAR(255) NOT NULL UNIQUE,
    description TEXT NULL,
    playbook_id INTEGER NULL REFERENCES playbooks (id) ON DELETE SET NULL,
    project_id INTEGER NULL REFERENCES projects (id) ON DELETE SET NULL,
    playbook_path VARCHAR(1024) NULL,
    servers JSON NULL,
    server_filter JSON NULL,
    extra_vars JSON NULL,
    run_options JSON NULL,
    time_limit_secs INTEGER NULL,
    survey JSON NOT NULL,
    created_by INTEGER NULL REFERENCES users (id) ON DELETE SET NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX ix_job_templates_playbook_id ON job_templates (playbook_id);
CREATE INDEX ix_job_templates_project_id ON job_templates (project_id);
CREATE TRIGGER tr_job_templates_updated_at AFTER UPDATE ON job_templates FOR EACH ROW
    WHEN NEW.updated_at = OLD.updated_at
    BEGIN UPDATE job_templates SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id; END;

-- SQLite cannot drop a column that carries a foreign key, so this is a plain column here; the
-- store clears it when a template is deleted (on both databases).
ALTER TABLE jobs ADD COLUMN template_id INTEGER NULL;
ALTER TABLE jobs ADD COLUMN time_limit_secs INTEGER NULL;
CREATE INDEX ix_jobs_template_id ON jobs (template_id);

CREATE TABLE job_secret_vars (
    job_id INTEGER NOT NULL PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    names JSON NOT NULL,
    key_id CHAR(16) NOT NULL,
    sealed BLOB NOT NULL
);
CREATE INDEX ix_job_secret_vars_key_id ON job_secret_vars (key_id);
