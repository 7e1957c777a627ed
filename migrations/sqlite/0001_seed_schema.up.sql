-- The seed's schema for the embedded store: CHECK in place of ENUM, triggers for updated_at.
-- Timestamps are stored as UTC text ('YYYY-MM-DD HH:MM:SS'); foreign keys are switched on by
-- every connection Outpost opens.

CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username VARCHAR(80) NOT NULL UNIQUE,
    email VARCHAR(120) NOT NULL UNIQUE,
    password_hash VARCHAR(255) NOT NULL,
    role TEXT NOT NULL DEFAULT 'viewer' CHECK (role IN ('admin','operator','viewer')),
    is_active BOOLEAN NOT NULL DEFAULT 1,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_login DATETIME NULL
);
CREATE INDEX ix_users_role ON users (role);
CREATE TRIGGER tr_users_updated_at AFTER UPDATE ON users FOR EACH ROW
    WHEN NEW.updated_at = OLD.updated_at
    BEGIN UPDATE users SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id; END;

CREATE TABLE servers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hostname VARCHAR(255) NOT NULL UNIQUE,
    ip_address VARCHAR(45) NOT NULL,
    os_type VARCHAR(50) NOT NULL,
    os_version VARCHAR(50) NULL,
    ssh_port INTEGER NOT NULL DEFAULT 22,
    ssh_user VARCHAR(50) NOT NULL DEFAULT 'root',
    ssh_key_path VARCHAR(500) NULL,
    tags JSON NULL,
    environment VARCHAR(50) NULL,
    description TEXT NULL,
    is_active BOOLEAN NOT NULL DEFAULT 1,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX ix_servers_ip_address ON servers (ip_address);
CREATE INDEX ix_servers_active_environment ON servers (is_active, environment);
CREATE TRIGGER tr_servers_updated_at AFTER UPDATE ON servers FOR EACH ROW
    WHEN NEW.updated_at = OLD.updated_at
    BEGIN UPDATE servers SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id; END;

CREATE TABLE playbooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name VARCHAR(255) NOT NULL UNIQUE,
    description TEXT NULL,
    file_path VARCHAR(500) NOT NULL,
    file_hash VARCHAR(64) NOT NULL,
    tags JSON NULL,
    variables JSON NULL,
    is_active BOOLEAN NOT NULL DEFAULT 1,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TRIGGER tr_playbooks_updated_at AFTER UPDATE ON playbooks FOR EACH ROW
    WHEN NEW.updated_at = OLD.updated_at
    BEGIN UPDATE playbooks SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id; END;

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id VARCHAR(36) NOT NULL UNIQUE,
    playbook_id INTEGER NOT NULL REFERENCES playbooks (id) ON DELETE RESTRICT,
    server_id INTEGER NOT NULL REFERENCES servers (id) ON DELETE RESTRICT,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending','running','success','failed','cancelled')),
    celery_task_id VARCHAR(255) NULL,
    extra_vars JSON NULL,
    error_message TEXT NULL,
    started_at DATETIME NULL,
    completed_at DATETIME NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX ix_jobs_playbook_id ON jobs (playbook_id);
CREATE INDEX ix_jobs_server_id ON jobs (server_id);
CREATE INDEX ix_jobs_user_id ON jobs (user_id);
CREATE INDEX ix_jobs_status ON jobs (status);
CREATE INDEX ix_jobs_celery_task_id ON jobs (celery_task_id);
CREATE INDEX ix_jobs_created_at ON jobs (created_at);
CREATE INDEX ix_jobs_status_created_at ON jobs (status, created_at);
CREATE INDEX ix_jobs_user_id_status ON jobs (user_id, status);

CREATE TABLE job_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    line_number INTEGER NOT NULL,
    content TEXT NOT NULL,
    log_level VARCHAR(20) NULL,
    timestamp DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX ix_job_logs_job_id ON job_logs (job_id);
CREATE INDEX ix_job_logs_timestamp ON job_logs (timestamp);
CREATE INDEX ix_job_logs_job_id_line_number ON job_logs (job_id, line_number);

CREATE TABLE tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket_id VARCHAR(36) NOT NULL UNIQUE,
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE RESTRICT,
    created_by INTEGER NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    title VARCHAR(255) NOT NULL,
    description TEXT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open','in_progress','resolved','closed')),
    priority TEXT NOT NULL DEFAULT 'medium' CHECK (priority IN ('low','medium','high','critical')),
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    resolved_at DATETIME NULL
);
CREATE INDEX ix_tickets_job_id ON tickets (job_id);
CREATE INDEX ix_tickets_created_by ON tickets (created_by);
CREATE INDEX ix_tickets_status ON tickets (status);
CREATE INDEX ix_tickets_status_priority ON tickets (status, priority);
CREATE TRIGGER tr_tickets_updated_at AFTER UPDATE ON tickets FOR EACH ROW
    WHEN NEW.updated_at = OLD.updated_at
    BEGIN UPDATE tickets SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id; END;

CREATE TABLE audit_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NULL REFERENCES users (id) ON DELETE SET NULL,
    action VARCHAR(100) NOT NULL,
    resource_type VARCHAR(50) NOT NULL,
    resource_id INTEGER NULL,
    details JSON NULL,
    ip_address VARCHAR(45) NULL,
    user_agent VARCHAR(255) NULL,
    timestamp DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX ix_audit_logs_user_id ON audit_logs (user_id);
CREATE INDEX ix_audit_logs_action ON audit_logs (action);
CREATE INDEX ix_audit_logs_resource_type ON audit_logs (resource_type);
CREATE INDEX ix_audit_logs_timestamp ON audit_logs (timestamp);
CREATE INDEX ix_audit_logs_resource ON audit_logs (resource_type, resource_id);
CREATE INDEX ix_audit_logs_action_timestamp ON audit_logs (action, timestamp);
