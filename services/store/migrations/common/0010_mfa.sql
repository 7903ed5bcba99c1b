-- Second factors: an authenticator app (TOTP) per user, its last used
-- step (a code works once), ten recovery codes (hashed), the logins waiting
-- for their second factor, and the clients that demand one.
CREATE TABLE mfa_totp (
    user_id TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    confirmed BIGINT NOT NULL DEFAULT 0,
    last_step BIGINT NOT NULL DEFAULT -1,
    created_at BIGINT NOT NULL
);
CREATE TABLE mfa_recovery_codes (
    user_id TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    used_at BIGINT,
    PRIMARY KEY (user_id, code_hash)
);
CREATE TABLE mfa_pending (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    amr TEXT NOT NULL,
    session_id TEXT,
    return_to TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
ALTER TABLE clients ADD COLUMN require_mfa BIGINT NOT NULL DEFAULT 0;
