-- The department tree as an outside directory (DingTalk's organisation)
-- holds it, and who belongs where. `id` is `source:external_id`;
-- `parent_id` is the parent's external id (none at the top). A department
-- the source no longer has is kept, marked removed, so tickets and audit
-- records that name it still read.
CREATE TABLE departments (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    external_id TEXT NOT NULL,
    name TEXT NOT NULL,
    parent_id TEXT,
    removed BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);
CREATE INDEX departments_source ON departments(source, external_id);

-- A user's departments; `position` 0 is the main one (`users.department`
-- holds its name, for claims and the hotline).
CREATE TABLE user_departments (
    user_id TEXT NOT NULL,
    department_id TEXT NOT NULL,
    position BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, department_id)
);
CREATE INDEX user_departments_department ON user_departments(department_id);

ALTER TABLE users ADD COLUMN title TEXT;
