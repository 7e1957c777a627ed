-- One-time enrolment secrets; only their SHA-256 is stored.
CREATE TABLE enrollment_tokens (
    id INT NOT NULL AUTO_INCREMENT,
    token_hash VARCHAR(64) NOT NULL,
    name VARCHAR(255) NOT NULL,
    labels JSON NULL,
    expires_at DATETIME NOT NULL,
    used_at DATETIME NULL,
    agent_id INT NULL,
    created_by INT NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uq_enrollment_tokens_token_hash (token_hash),
    CONSTRAINT fk_enrollment_tokens_created_by FOREIGN KEY (created_by) REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT fk_enrollment_tokens_agent_id FOREIGN KEY (agent_id) REFERENCES agents (id) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
