-- A person has at most one linked account per provider (linking replaces
-- the earlier one; two links made at once on PostgreSQL could both stay).
-- Where two were left, the newer stays.
DELETE FROM user_links WHERE EXISTS (
    SELECT 1 FROM user_links newer
    WHERE newer.user_id = user_links.user_id AND newer.provider = user_links.provider
      AND (newer.created_at > user_links.created_at
           OR (newer.created_at = user_links.created_at AND newer.subject > user_links.subject))
);
DROP INDEX user_links_user;
CREATE UNIQUE INDEX user_links_user_provider ON user_links (user_id, provider);
