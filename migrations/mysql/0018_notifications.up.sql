-- Notifications (issue 23): channels (where to send), rules (which events go where) and the
-- outbox, written in the same transaction as the event it reports and sent by a worker.
--
-- A channel's secret (a webhook's signing secret, an SMTP password) is sealed with the
-- credentials keyring (`key_id` names the key), never stored in the clear. `config` holds
-- what may be shown: the URL, or the SMTP host, port, sender, recipients and CA file.
CREATE TABLE notification_channels (
    id INT NOT NULL AUTO_INCREMENT,
    uuid CHAR(36) NOT NULL,
    name VARCHAR(255) NOT NULL,
    kind VARCHAR(16) NOT NULL,
    config JSON NOT NULL,
    on_call BOOLEAN NOT NULL DEFAULT FALSE,
    digest BOOLEAN NOT NULL DEFAULT FALSE,
    key_id CHAR(16) NULL,
    secret BLOB NULL,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    UNIQUE KEY uq_notification_channels_uuid (uuid),
    UNIQUE KEY uq_notification_channels_name (name),
    CONSTRAINT ck_notification_channels_kind CHECK (kind IN ('webhook', 'chat', 'email'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- A rule: an event kind and optional filters (environment, lowest priority, routing label
-- `key=value` matched against the server's tags or the agent's labels) to a channel.
CREATE TABLE notification_rules (
    id INT NOT NULL AUTO_INCREMENT,
    event VARCHAR(32) NOT NULL,
    environment VARCHAR(50) NULL,
    min_priority VARCHAR(16) NULL,
    routing_label VARCHAR(255) NULL,
    channel_id INT NOT NULL,
    mode VARCHAR(16) NOT NULL DEFAULT 'immediate',
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (id),
    KEY ix_notification_rules_channel_id (channel_id),
    CONSTRAINT fk_notification_rules_channel_id FOREIGN KEY (channel_id) REFERENCES notification_channels (id) ON DELETE CASCADE,
    CONSTRAINT ck_notification_rules_mode CHECK (mode IN ('immediate', 'digest'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- The outbox and delivery log in one: one row per (event, channel). `delivery_id` is sent with
-- every attempt so a receiver can drop repeats. A worker claims a due row by a conditional
-- UPDATE of `lease_until` (two controllers never send one row at once); `attempts`,
-- `last_error` and the timestamps are the log. Digest items wait as `digest` rows until a
-- flush moves them into one `batched` summary row. `event_key` (sweeper events: SLA, agent
-- offline, certificate) is unique per channel, so controllers sweeping together never
-- double an event.
CREATE TABLE notification_outbox (
    id BIGINT NOT NULL AUTO_INCREMENT,
    delivery_id CHAR(36) NOT NULL,
    channel_id INT NOT NULL,
    event VARCHAR(32) NOT NULL,
    event_key VARCHAR(191) NULL,
    payload JSON NOT NULL,
    status VARCHAR(16) NOT NULL DEFAULT 'pending',
    attempts INT NOT NULL DEFAULT 0,
    next_attempt_at DATETIME NOT NULL,
    lease_until DATETIME NULL,
    batch_id CHAR(36) NULL,
    last_error TEXT NULL,
    created_at DATETIME NOT NULL,
    last_attempt_at DATETIME NULL,
    sent_at DATETIME NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_notification_outbox_delivery_id (delivery_id),
    UNIQUE KEY uq_notification_outbox_event_key (channel_id, event_key),
    KEY ix_notification_outbox_due (status, next_attempt_at),
    KEY ix_notification_outbox_batch_id (batch_id),
    CONSTRAINT fk_notification_outbox_channel_id FOREIGN KEY (channel_id) REFERENCES notification_channels (id) ON DELETE CASCADE,
    CONSTRAINT ck_notification_outbox_status CHECK (status IN ('pending', 'digest', 'batched', 'sent', 'dead'))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
