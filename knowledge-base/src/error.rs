use thiserror::Error;

/// Everything the knowledge base can fail with.
#[derive(Debug, Error)]
pub enum Error {
    /// The storage layer failed.
    #[error(transparent)]
    Store(#[from] civichub_store::Error),
    /// A query failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The search index failed.
    #[error("search index error: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// Input was refused; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// No entry with this id.
    #[error("entry {0} not found")]
    NotFound(String),
    /// An entry with this id exists already.
    #[error("entry {0} already exists")]
    Conflict(String),
    /// A stored value could not be read back.
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
    /// Reading an import file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl Error {
    /// Whether another process (a running hub) holds the index's writer lock.
    pub fn is_index_locked(&self) -> bool {
        matches!(self, Error::Index(tantivy::TantivyError::LockFailure(..)))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Corrupt(e.to_string())
    }
}

/// Result of knowledge-base operations.
pub type Result<T> = std::result::Result<T, Error>;
