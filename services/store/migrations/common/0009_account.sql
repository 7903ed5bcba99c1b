-- A login through an upstream started from the account page links the
-- upstream account to the person signed in (`intent` = 'link').
ALTER TABLE federation_flows ADD COLUMN intent TEXT;
-- The account page lists a person's recent sign-ins.
CREATE INDEX audit_events_user ON audit_events(user_id, event);
