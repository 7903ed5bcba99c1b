-- The browser a login through an upstream started in (SHA-256 of a cookie):
-- the callback only completes there (RFC 6749 §10.12).
ALTER TABLE federation_flows ADD COLUMN browser TEXT;

-- An upstream account to link once the login waiting for its second factor
-- completes (a password alone links nothing).
ALTER TABLE mfa_pending ADD COLUMN link TEXT;
