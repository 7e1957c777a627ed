-- Notifications: channels, rules and the outbox (see the MySQL migration for the columns).
CREATE TABLE notification_channels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid CHAR(36) NOT NULL UNIQUE,
    name VARCHAR(255) NOT NULL UNIQUE,
    kind VARCHAR(16) NOT NULL CHECK (kind IN ('webhook', 'chat', 'email')),
    config JSON NOT NULL,
    on_call BOOLEAN NOT NULL DEFAULT FALSE,
    digest BOOLEAN NOT NULL DEFAULT FALSE,
    key_id CHAR(16) NULL,
    secret BLOB NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE notification_rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event VARCHAR(32) NOT NULL,
    environment VARCHAR(50) NULL,
    min_priority VARCHAR(16) NULL,
    routing_label VARCHAR(255) NULL,
    channel_id INTEGER NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    mode VARCHAR(16) NOT NULL DEFAULT 'immediate' CHECK (mode IN ('immediate', 'digest')),
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX ix_notification_rules_channel_id ON notification_rules (channel_id);

CREATE TABLE notification_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id CHAR(36) NOT NULL UNIQUE,
    channel_id INTEGER NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    event VARCHAR(32) NOT NULL,
    event_key VARCHAR(191) NULL,
    payload JSON NOT NULL,
    status VARCHAR(16) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'digest', 'batched', 'sent', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DATETIME NOT NULL,
    lease_until DATETIME NULL,
    batch_id CHAR(36) NULL,
    last_error TEXT NULL,
    created_at DATETIME NOT NULL,
    last_attempt_at DATETIME NULL,
    sent_at DATETIME NULL,
    UNIQUE (channel_id, event_key)
);
CREATE INDEX ix_notification_outbox_due ON notification_outbox (status, next_attempt_at);
CREATE INDEX ix_notification_outbox_batch_id ON notification_outbox (batch_id);
