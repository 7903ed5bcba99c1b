//! What can go wrong with call events and the voice gateway.

/// Fusion adapter errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input (a call event, a voice notice) is unusable; the text says what.
    #[error("{0}")]
    Invalid(String),
    /// The voice gateway answered with an error.
    #[error("voice gateway error {code}: {message} (HTTP {status})")]
    Api {
        /// The gateway's `code` (e.g. `Unauthorized`), or `http_<status>` when it sent none.
        code: String,
        /// The gateway's `message`.
        message: String,
        /// The HTTP status.
        status: u16,
    },
    /// The request did not complete (refused, reset, timed out) or the answer was not
    /// the JSON the contract describes.
    #[error("voice gateway transport: {0}")]
    Transport(String),
    /// The simulator could not start.
    #[error("simulator: {0}")]
    Io(#[from] std::io::Error),
}

/// Fusion adapter results.
pub type Result<T> = std::result::Result<T, Error>;

/// Gateway codes that mean "try again later".
const RETRYABLE_CODES: &[&str] = &["Throttled", "Busy", "ServiceUnavailable", "InternalError"];

impl Error {
    /// Whether the same request may succeed later: transport failures, HTTP 5xx and
    /// 429, and the gateway's throttling/busy codes. Bad keys and bad input are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Api { code, status, .. } => *status >= 500 || *status == 429 || RETRYABLE_CODES.contains(&code.as_str()),
            Error::Invalid(_) | Error::Io(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        let api = |code: &str, status| Error::Api { code: code.into(), message: String::new(), status };
        assert!(api("http_503", 503).is_retryable());
        assert!(api("Throttled", 429).is_retryable());
        assert!(api("Busy", 200).is_retryable());
        assert!(!api("Unauthorized", 401).is_retryable());
        assert!(!api("InvalidParameter", 400).is_retryable());
        assert!(Error::Transport("refused".into()).is_retryable());
        assert!(!Error::Invalid("x".into()).is_retryable());
    }
}
