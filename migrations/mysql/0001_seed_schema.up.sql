-- The seed's seven tables exactly as ../shared/seeds/000_d6394dfe174462fa.txt defines them.
-- DATETIME defaults are CURRENT_TIMESTAMP; they are UTC because every Outpost session sets
-- time_zone = '+00:00'. Extensions live in later migrations, never here.

CREATE TABLE users (
    id INT NOT NULL AUTO_INCREMENT,
    username VARCHAR(80) NOT NULL,
    email VARCHAR(120) NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    role ENUM('admin','operator','viewer') NOT NULL DEFAULT 'viewer',
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    last_login DATETIME NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_users_username (username),
    UNIQUE KEY uq_users_email (email),
    KEY ix_users_role (role)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE servers (
    id INT NOT NULL AUTO_INCREMENT,
    hostname VARCHAR(255) NOT NULL,
    ip_address VARCHAR(45) NOT NULL,
    os_type VARCHAR(50) NOT NULL,
    os_version VARCHAR(50) NULL,
    ssh_port INT NOT NULL DEFAULT 22,
    ssh_user VARCHAR(50) NOT NULL DEFAULT 'root',
    ssh_key_path VARCHAR(500) NULL,
    tags JSON NULL,
    environment VARCHAR(50) NULL,
    description TEXT NULL,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uq_servers_hostname (hostname),
    KEY ix_servers_ip_address (ip_address),
    KEY ix_servers_active_environment (is_active, environment)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE playbooks (
    id INT NOT NULL AUTO_INCREMENT,
    name VARCHAR(255) NOT NULL,
    description TEXT NULL,
    file_path VARCHAR(500) NOT NULL,
    file_hash VARCHAR(64) NOT NULL,
    tags JSON NULL,
    variables JSON NULL,
    is_active BOOLEAN NOT NULL DEFAULT TRUE,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uq_playbooks_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE jobs (
    id INT NOT NULL AUTO_INCREMENT,
    job_id VARCHAR(36) NOT NULL,
    playbook_id INT NOT NULL,
    server_id INT NOT NULL,
    user_id INT NOT NULL,
    status ENUM('pending','running','success','failed','cancelled') NOT NULL DEFAULT 'pending',
    celery_task_id VARCHAR(255) NULL,
    extra_vars JSON NULL,
    error_message TEXT NULL,
    started_at DATETIME NULL,
    completed_at DATETIME NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uq_jobs_job_id (job_id),
    KEY ix_jobs_playbook_id (playbook_id),
    KEY ix_jobs_server_id (server_id),
    KEY ix_jobs_user_id (user_id),
    KEY ix_jobs_status (status),
    KEY ix_jobs_celery_task_id (celery_task_id),
    KEY ix_jobs_created_at (created_at),
    KEY ix_jobs_status_created_at (status, created_at),
    KEY ix_jobs_user_id_status (user_id, status),
    CONSTRAINT fk_jobs_playbook_id FOREIGN KEY (playbook_id) REFERENCES playbooks (id) ON DELETE RESTRICT,
    CONSTRAINT fk_jobs_server_id FOREIGN KEY (server_id) REFERENCES servers (id) ON DELETE RESTRICT,
    CONSTRAINT fk_jobs_user_id FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE RESTRICT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE job_logs (
    id BIGINT NOT NULL AUTO_INCREMENT,
    job_id INT NOT NULL,
    line_number INT NOT NULL,
    content TEXT NOT NULL,
    log_level VARCHAR(20) NULL,
    timestamp DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    KEY ix_job_logs_job_id (job_id),
    KEY ix_job_logs_timestamp (timestamp),
    KEY ix_job_logs_job_id_line_number (job_id, line_number),
    CONSTRAINT fk_job_logs_job_id FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE tickets (
    id INT NOT NULL AUTO_INCREMENT,
    ticket_id VARCHAR(36) NOT NULL,
    job_id INT NOT NULL,
    created_by INT NOT NULL,
    title VARCHAR(255) NOT NULL,
    description TEXT NULL,
    status ENUM('open','in_progress','resolved','closed') NOT NULL DEFAULT 'open',
    priority ENUM('low','medium','high','critical') NOT NULL DEFAULT 'medium',
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    resolved_at DATETIME NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_tickets_ticket_id (ticket_id),
    KEY ix_tickets_job_id (job_id),
    KEY ix_tickets_created_by (created_by),
    KEY ix_tickets_status (status),
    KEY ix_tickets_status_priority (status, priority),
    CONSTRAINT fk_tickets_job_id FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE RESTRICT,
    CONSTRAINT fk_tickets_created_by FOREIGN KEY (created_by) REFERENCES users (id) ON DELETE RESTRICT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE audit_logs (
    id BIGINT NOT NULL AUTO_INCREMENT,
    user_id INT NULL,
    action VARCHAR(100) NOT NULL,
    resource_type VARCHAR(50) NOT NULL,
    resource_id INT NULL,
    details JSON NULL,
    ip_address VARCHAR(45) NULL,
    user_agent VARCHAR(255) NULL,
    timestamp DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    KEY ix_audit_logs_user_id (user_id),
    KEY ix_audit_logs_action (action),
    KEY ix_audit_logs_resource_type (resource_type),
    KEY ix_audit_logs_timestamp (timestamp),
    KEY ix_audit_logs_resource (resource_type, resource_id),
    KEY ix_audit_logs_action_timestamp (action, timestamp),
    CONSTRAINT fk_audit_logs_user_id FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
