-- Who disabled a user: a directory source (its name) when the person left
-- the organisation, so the sync may enable them again when they come back;
-- NULL for an administrator (or before this column), which no sync undoes.
ALTER TABLE users ADD COLUMN disabled_by TEXT;
