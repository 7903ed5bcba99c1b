-- Handlers and supervisors of a department are looked up on every hotline
-- event that notifies them.
CREATE INDEX users_department ON users(department);
