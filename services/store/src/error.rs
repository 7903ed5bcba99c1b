use thiserror::Error;

/// Everything that can go wrong in the storage layer.
#[derive(Debug, Error)]
pub enum Error {
    /// The database URL is neither `sqlite:` nor `postgres:`.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://HOST/DB")]
    UnsupportedUrl(String),
    /// The database answered with an error or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A schema migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored JSON document could not be read back.
    #[error("stored JSON is malformed: {0}")]
    Json(#[from] serde_json::Error),
    /// A grouped write's transaction failed to begin or commit; nothing of it was written.
    #[error("group commit failed: {0}")]
    GroupCommit(String),
    /// The group writer has stopped (the process is shutting down).
    #[error("the database writer has stopped")]
    WriterStopped,
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory that could not be created.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Result of storage operations.
pub type Result<T> = std::result::Result<T, Error>;
