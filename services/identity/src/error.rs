use thiserror::Error;

/// Everything the identity service can fail with.
#[derive(Debug, Error)]
pub enum Error {
    /// The storage layer failed.
    #[error(transparent)]
    Store(#[from] civichub_store::Error),
    /// A query failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Input was refused; the message says why, in words for the person who sent it.
    #[error("{0}")]
    Invalid(String),
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The thing exists already.
    #[error("{0} already exists")]
    Conflict(String),
    /// Key generation, signing or hashing failed.
    #[error("cryptography failed: {0}")]
    Crypto(String),
    /// A stored value could not be read back.
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Corrupt(e.to_string())
    }
}

/// Result of identity operations.
pub type Result<T> = std::result::Result<T, Error>;
