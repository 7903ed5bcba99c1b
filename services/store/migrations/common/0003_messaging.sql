-- Messaging: the bus outbox, in-process deliveries and dead letters, and
-- routed messages with every attempt. Times ending in _ms are Unix milliseconds.

-- Envelopes written in the same transaction as the change they announce;
-- the relay publishes them (Nats-Msg-Id = id) and deletes them.
CREATE TABLE bus_outbox (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    envelope TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX bus_outbox_due ON bus_outbox(next_attempt_ms);

-- The embedded bus (no NATS): one row per consumer per envelope.
CREATE TABLE bus_deliveries (
    id TEXT PRIMARY KEY,
    consumer TEXT NOT NULL,
    subject TEXT NOT NULL,
    envelope TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    last_error TEXT
);
CREATE INDEX bus_deliveries_due ON bus_deliveries(consumer, next_attempt_ms);

-- Dead letters of the embedded bus (with NATS they go to CIVICHUB_DEAD_LETTERS).
CREATE TABLE bus_dead_letters (
    id TEXT PRIMARY KEY,
    consumer TEXT NOT NULL,
    subject TEXT NOT NULL,
    envelope TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    dead_ms BIGINT NOT NULL
);

-- How far a change-stream tailer (e.g. audit events → civichub.auth.*) has published.
CREATE TABLE bus_cursors (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);

CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    recipient_kind TEXT NOT NULL,
    recipient TEXT NOT NULL,
    channel TEXT NOT NULL,
    text TEXT NOT NULL,
    template TEXT,
    params TEXT,
    urgent BIGINT NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    plan TEXT NOT NULL,
    current_channel TEXT,
    fallback_at_ms BIGINT,
    client_id TEXT,
    trace_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX messages_fallback ON messages(fallback_at_ms);

CREATE TABLE message_attempts (
    id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    address TEXT NOT NULL,
    state TEXT NOT NULL,
    tries BIGINT NOT NULL DEFAULT 0,
    started_ms BIGINT NOT NULL,
    finished_ms BIGINT,
    gateway_id TEXT,
    outcome TEXT
);
CREATE INDEX message_attempts_message ON message_attempts(message_id);

-- Every id a gateway gave an attempt (one per SMS segment), for its receipts.
CREATE TABLE message_gateway_ids (
    gateway_id TEXT PRIMARY KEY,
    attempt_id TEXT NOT NULL
);

-- Accounts at outside identity providers (DingTalk userid, …) linked to users.
CREATE TABLE user_links (
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE INDEX user_links_user ON user_links(user_id);
