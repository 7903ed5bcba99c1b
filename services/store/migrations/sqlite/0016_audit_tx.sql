-- Nothing to add on SQLite: it has one writer, so audit ids commit in
-- order and the forwarder's cursor on the id alone misses none.
SELECT 1;
