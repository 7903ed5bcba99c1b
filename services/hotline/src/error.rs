use thiserror::Error;

/// Everything that can go wrong in the hotline.
#[derive(Debug, Error)]
pub enum Error {
    /// The request is malformed or names something that does not exist as given.
    #[error("{0}")]
    Invalid(String),
    /// The action does not fit the ticket's state.
    #[error("{0}")]
    Conflict(String),
    /// The actor's roles or department do not allow the action.
    #[error("{0}")]
    Forbidden(String),
    /// No such ticket (or not one the actor may see).
    #[error("no ticket {0}")]
    NotFound(String),
    /// A calendar file could not be read.
    #[error("calendar: {0}")]
    Calendar(String),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] civichub_store::Error),
    /// The outbox failed.
    #[error("messaging: {0}")]
    Messaging(#[from] civichub_messaging::Error),
    /// Stored JSON could not be read or written.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(civichub_store::Error::Database(e))
    }
}

/// Result of hotline operations.
pub type Result<T> = std::result::Result<T, Error>;
