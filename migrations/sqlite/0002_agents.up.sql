CREATE TABLE agents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid VARCHAR(36) NOT NULL UNIQUE,
    name VARCHAR(255) NOT NULL UNIQUE,
    labels JSON NULL,
    cert_fingerprint VARCHAR(64) NULL,
    cert_expires_at DATETIME NULL,
    revoked BOOLEAN NOT NULL DEFAULT 0,
    capacity INTEGER NOT NULL DEFAULT 4,
    version VARCHAR(50) NULL,
    hostname VARCHAR(255) NULL,
    ansible_version VARCHAR(255) NULL,
    last_seen DATETIME NULL,
    connected_controller VARCHAR(255) NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TRIGGER tr_agents_updated_at AFTER UPDATE ON agents FOR EACH ROW
    WHEN NEW.updated_at = OLD.updated_at
    BEGIN UPDATE agents SET updated_at = CURRENT_TIMESTAMP WHERE id = NEW.id; END;
