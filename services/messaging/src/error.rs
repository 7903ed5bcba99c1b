//! What can go wrong in the messaging hub.

/// Messaging errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] civichub_store::Error),
    /// A query failed.
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    /// NATS or JetStream refused or failed.
    #[error("NATS: {0}")]
    Nats(String),
    /// A payload could not be encoded or decoded.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The caller sent something unusable; the text says what.
    #[error("{0}")]
    Invalid(String),
    /// No such message.
    #[error("no such message")]
    NotFound,
}

/// Messaging results.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A NATS error from anything that displays.
    pub fn nats(e: impl std::fmt::Display) -> Error {
        Error::Nats(e.to_string())
    }
}
