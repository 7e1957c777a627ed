-- Agents on bastion hosts. uuid is the subject of the agent's client certificate.
CREATE TABLE agents (
    id INT NOT NULL AUTO_INCREMENT,
    uuid VARCHAR(36) NOT NULL,
    name VARCHAR(255) NOT NULL,
    labels JSON NULL,
    cert_fingerprint VARCHAR(64) NULL,
    cert_expires_at DATETIME NULL,
    revoked BOOLEAN NOT NULL DEFAULT FALSE,
    capacity INT NOT NULL DEFAULT 4,
    version VARCHAR(50) NULL,
    hostname VARCHAR(255) NULL,
    ansible_version VARCHAR(255) NULL,
    last_seen DATETIME NULL,
    connected_controller VARCHAR(255) NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uq_agents_uuid (uuid),
    UNIQUE KEY uq_agents_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
