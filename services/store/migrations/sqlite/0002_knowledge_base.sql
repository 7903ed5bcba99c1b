-- Knowledge base: entries are authoritative here; every search index is
-- derived from them and follows kb_changes.

CREATE TABLE kb_entries (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    category_code TEXT,
    category_name TEXT,
    department TEXT,
    tags TEXT NOT NULL DEFAULT '',
    audience TEXT NOT NULL,
    status TEXT NOT NULL,
    effective_from BIGINT,
    effective_until BIGINT,
    source_url TEXT,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT
);
CREATE INDEX kb_entries_status ON kb_entries(status);

CREATE TABLE kb_versions (
    entry_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    at BIGINT NOT NULL,
    actor TEXT,
    action TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    PRIMARY KEY (entry_id, version)
);

CREATE TABLE kb_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id TEXT NOT NULL,
    at BIGINT NOT NULL
);
