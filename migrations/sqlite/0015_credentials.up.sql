-- Credentials, sealed with AEAD under a key in the controller's PKI directory (see the MySQL
-- migration for the columns).
CREATE TABLE credentials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid CHAR(36) NOT NULL UNIQUE,
    name VARCHAR(255) NOT NULL UNIQUE,
    kind VARCHAR(32) NOT NULL CHECK (kind IN ('ssh_key', 'become_password', 'vault_password')),
    description TEXT NULL,
    vault_id VARCHAR(64) NULL,
    public_info VARCHAR(255) NULL,
    key_id CHAR(16) NOT NULL,
    secret BLOB NOT NULL,
    created_by INTEGER NULL REFERENCES users (id) ON DELETE SET NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX ix_credentials_key_id ON credentials (key_id);
CREATE TRIGGER tr_credentials_updated_at AFTER UPDATE ON credentials FOR EACH ROW
    WHEN NEW.updated_at = OLD.updated_at
    BEGIN UPDATE credentials SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id; END;

-- SQLite cannot drop a column that carries a foreign key, so these are plain columns here (the
-- MySQL migration has the real constraints; the service checks use before a delete on both).
ALTER TABLE servers ADD COLUMN ssh_credential_id INTEGER NULL;
ALTER TABLE servers ADD COLUMN become_credential_id INTEGER NULL;
CREATE INDEX ix_servers_ssh_credential_id ON servers (ssh_credential_id);
CREATE INDEX ix_servers_become_credential_id ON servers (become_credential_id);
ALTER TABLE projects ADD COLUMN git_credential_id INTEGER NULL;
CREATE INDEX ix_projects_git_credential_id ON projects (git_credential_id);

CREATE TABLE project_vault_credentials (
    project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    credential_id INTEGER NOT NULL REFERENCES credentials (id) ON DELETE RESTRICT,
    PRIMARY KEY (project_id, credential_id)
);
CREATE INDEX ix_project_vault_credentials_credential_id ON project_vault_credentials (credential_id);

CREATE TABLE job_credentials (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    credential_id INTEGER NOT NULL REFERENCES credentials (id) ON DELETE CASCADE,
    PRIMARY KEY (job_id, credential_id)
);
CREATE INDEX ix_job_credentials_credential_id ON job_credentials (credential_id);
