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
    /// The action is not possible in the ticket's status (an illegal transition).
    #[error("{action} is not possible while the ticket is {}", status.as_str())]
    Refused {
        /// The action's name.
        action: &'static str,
        /// The action in Chinese, for the pages.
        label: &'static str,
        /// The ticket's status.
        status: crate::Status,
    },
    /// The actor's roles or department do not allow the action.
    #[error("{0}")]
    Forbidden(String),
    /// The action on a ticket needs someone else.
    #[error("{action}: only {} may do this", needs.en())]
    NotPermitted {
        /// The action's name.
        action: &'static str,
        /// The action in Chinese, for the pages.
        label: &'static str,
        /// Who may take it.
        needs: Needs,
    },
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

/// Who may take an action on a ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// A handler of the lead department.
    LeadHandler,
    /// A handler of a co-handling department.
    CoHandler,
    /// A supervisor.
    Supervisor,
    /// A hotline agent or supervisor.
    HotlineStaff,
}

impl Needs {
    /// In English, for the API.
    pub fn en(self) -> &'static str {
        match self {
            Needs::LeadHandler => "a handler of the lead department",
            Needs::CoHandler => "a handler of a co-handling department",
            Needs::Supervisor => "a supervisor",
            Needs::HotlineStaff => "a hotline agent or supervisor",
        }
    }

    /// In Chinese, for the pages.
    pub fn zh(self) -> &'static str {
        match self {
            Needs::LeadHandler => "主办单位的承办人",
            Needs::CoHandler => "协办单位的承办人",
            Needs::Supervisor => "督办人员",
            Needs::HotlineStaff => "热线话务员或督办人员",
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(civichub_store::Error::Database(e))
    }
}

/// Result of hotline operations.
pub type Result<T> = std::result::Result<T, Error>;
