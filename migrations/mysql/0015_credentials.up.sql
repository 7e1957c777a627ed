-- Credentials: SSH keys, become passwords and vault passwords, sealed with AEAD under a key kept
-- in the controller's PKI directory (never in the database). `secret` holds the sealed secret
-- (an SSH key's passphrase is sealed with it); `key_id` names the key that sealed it, so a
-- restore or a rotation can tell which key file a row needs. `public_info` is what may be
-- shown (an SSH key's public fingerprint), never the secret.
CREATE TABLE credentials (
    id INT NOT NULL AUTO_INCREMENT,
    uuid CHAR(36) NOT NULL,
    name VARCHAR(255) NOT NULL,
    kind VARCHAR(32) NOT NULL,
    description TEXT NULL,
    vault_id VARCHAR(64) NULL,
    public_info VARCHAR(255) NULL,
    key_id CHAR(16) NOT NULL,
    secret BLOB NOT NULL,
    created_by INT NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uq_credentials_uuid (uuid),
    UNIQUE KEY uq_credentials_name (name),
    KEY ix_credentials_key_id (key_id),
    CONSTRAINT fk_credentials_created_by FOREIGN KEY (created_by) REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT ck_credentials_kind CHECK (kind IN ('ssh_key', 'become_password', 'vault_password'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

ALTER TABLE servers
    ADD COLUMN ssh_credential_id INT NULL,
    ADD COLUMN become_credential_id INT NULL,
    ADD KEY ix_servers_ssh_credential_id (ssh_credential_id),
    ADD KEY ix_servers_become_credential_id (become_credential_id),
    ADD CONSTRAINT fk_servers_ssh_credential_id FOREIGN KEY (ssh_credential_id) REFERENCES credentials (id) ON DELETE RESTRICT,
    ADD CONSTRAINT fk_servers_become_credential_id FOREIGN KEY (become_credential_id) REFERENCES credentials (id) ON DELETE RESTRICT;

ALTER TABLE projects
    ADD COLUMN git_credential_id INT NULL,
    ADD KEY ix_projects_git_credential_id (git_credential_id),
    ADD CONSTRAINT fk_projects_git_credential_id FOREIGN KEY (git_credential_id) REFERENCES credentials (id) ON DELETE RESTRICT;

-- A project's vault passwords, one per vault id.
CREATE TABLE project_vault_credentials (
    project_id INT NOT NULL,
    credential_id INT NOT NULL,
    PRIMARY KEY (project_id, credential_id),
    KEY ix_project_vault_credentials_credential_id (credential_id),
    CONSTRAINT fk_project_vault_credentials_project_id FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE CASCADE,
    CONSTRAINT fk_project_vault_credentials_credential_id FOREIGN KEY (credential_id) REFERENCES credentials (id) ON DELETE RESTRICT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Credentials named at launch, for that job only (they win over the server's and project's of
-- the same use). A credential still named by a pending or running job is in use.
CREATE TABLE job_credentials (
    job_id INT NOT NULL,
    credential_id INT NOT NULL,
    PRIMARY KEY (job_id, credential_id),
    KEY ix_job_credentials_credential_id (credential_id),
    CONSTRAINT fk_job_credentials_job_id FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE,
    CONSTRAINT fk_job_credentials_credential_id FOREIGN KEY (credential_id) REFERENCES credentials (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
