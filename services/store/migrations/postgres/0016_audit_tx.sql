-- On PostgreSQL a lower audit id can commit after a higher one, so the bus
-- forwarder cannot follow the id alone. Each record keeps the id of the
-- transaction that wrote it; the forwarder reads in (tx, id) order only
-- what transactions older than every running one wrote, so a record that
-- commits late is read late, never skipped.
-- Records already there: tx 0, behind the cursor if it passed them; those it
-- has not reached yet are read once this migration has committed.
ALTER TABLE audit_events ADD COLUMN tx BIGINT NOT NULL DEFAULT 0;
UPDATE audit_events SET tx = pg_current_xact_id()::text::bigint
    WHERE id > COALESCE((SELECT position FROM bus_cursors WHERE name = 'audit_events'), 0);
ALTER TABLE audit_events ALTER COLUMN tx SET DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX audit_events_tx ON audit_events(tx, id);
