-- Logins through an upstream identity provider (DingTalk, an upstream
-- OpenID Connect provider) in flight: kept in the database, so the callback
-- may reach another hub node than the one that sent the browser away.
-- `subject` is set once the upstream has named an account that is not yet
-- linked: a password login with this `state` links it.
CREATE TABLE federation_flows (
    state TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    nonce TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    return_to TEXT NOT NULL,
    subject TEXT,
    subject_name TEXT,
    expires_at BIGINT NOT NULL
);
CREATE INDEX federation_flows_expiry ON federation_flows(expires_at);
