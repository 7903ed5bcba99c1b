-- Passkeys (WebAuthn credentials): one row per credential, the webauthn-rs
-- credential as JSON with its signature counter beside it (compare-and-set
-- on use), and the ceremonies under way (their state here, not in a node's
-- memory, so the browser may finish on any hub node). Each person gets a
-- random WebAuthn user handle the first time they register one.
CREATE TABLE passkeys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    credential TEXT NOT NULL,
    counter BIGINT NOT NULL DEFAULT 0,
    backup_eligible BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX passkeys_user ON passkeys (user_id);
CREATE TABLE webauthn_handles (
    user_id TEXT PRIMARY KEY,
    handle TEXT NOT NULL UNIQUE
);
CREATE TABLE webauthn_ceremonies (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    user_id TEXT,
    state TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
