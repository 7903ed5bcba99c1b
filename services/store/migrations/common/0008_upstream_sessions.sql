-- Which upstream login each SSO session came from (provider, the upstream
-- account, the upstream's session id), so the upstream's Back-Channel
-- Logout ends the sessions it started here.
CREATE TABLE upstream_sessions (
    session_id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    upstream_sid TEXT
);
CREATE INDEX upstream_sessions_subject ON upstream_sessions(provider, subject);
CREATE INDEX upstream_sessions_sid ON upstream_sessions(provider, upstream_sid);
