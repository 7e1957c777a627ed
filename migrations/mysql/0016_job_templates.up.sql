-- Job templates: a saved launch (playbook, target, variables, run options, time limit) with a
-- survey whose answers become the launch's variables. The playbook is named one way: a row
-- (`playbook_id`), or a project and a path in its tree. The target one way: hostnames
-- (`servers`, a JSON list) or a selector (`server_filter`, a JSON object).
CREATE TABLE job_templates (
    id INT NOT NULL AUTO_INCREMENT,
    uuid CHAR(36) NOT NULL,
    name VARCHAR(255) NOT NULL,
    description TEXT NULL,
    playbook_id INT NULL,
    project_id INT NULL,
    playbook_path VARCHAR(1024) NULL,
    servers JSON NULL,
    server_filter JSON NULL,
    extra_vars JSON NULL,
    run_options JSON NULL,
    time_limit_secs INT NULL,
    survey JSON NOT NULL,
    created_by INT NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uq_job_templates_uuid (uuid),
    UNIQUE KEY uq_job_templates_name (name),
    KEY ix_job_templates_playbook_id (playbook_id),
    KEY ix_job_templates_project_id (project_id),
    CONSTRAINT fk_job_templates_playbook_id FOREIGN KEY (playbook_id) REFERENCES playbooks (id) ON DELETE SET NULL,
    CONSTRAINT fk_job_templates_project_id FOREIGN KEY (project_id) REFERENCES projects (id) ON DELETE SET NULL,
    CONSTRAINT fk_job_templates_created_by FOREIGN KEY (created_by) REFERENCES users (id) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- The template a job was launched from, and the time limit it gave (NULL: the controller's).
ALTER TABLE jobs
    ADD COLUMN template_id INT NULL,
    ADD COLUMN time_limit_secs INT NULL,
    ADD KEY ix_jobs_template_id (template_id),
    ADD CONSTRAINT fk_jobs_template_id FOREIGN KEY (template_id) REFERENCES job_templates (id) ON DELETE SET NULL;

-- A job's secret survey answers, sealed with the controller's keyring and bound to the job's
-- uuid; `names` (a JSON list) is what may be shown of them.
CREATE TABLE job_secret_vars (
    job_id INT NOT NULL,
    names JSON NOT NULL,
    key_id CHAR(16) NOT NULL,
    sealed BLOB NOT NULL,
    PRIMARY KEY (job_id),
    KEY ix_job_secret_vars_key_id (key_id),
    CONSTRAINT fk_job_secret_vars_job_id FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
