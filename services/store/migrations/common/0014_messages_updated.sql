-- The retention sweep deletes messages by their last change.
CREATE INDEX messages_updated ON messages(updated_ms);
