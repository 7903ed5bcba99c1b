//! What can go wrong talking to DingTalk.

/// DingTalk adapter errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// DingTalk answered with an error: the `errcode` of an `oapi` call or the
    /// `code` of an `api` (v1.0) call, as text, with its message and request id.
    #[error("DingTalk error {code}: {message} (HTTP {status}, request id {})", request_id.as_deref().unwrap_or("-"))]
    Api {
        /// `errcode` (e.g. `"143103"`) or `code` (e.g. `"invalidClientIdOrSecret"`);
        /// `"http_<status>"` when the answer carried neither.
        code: String,
        /// `errmsg` or `message`.
        message: String,
        /// `request_id` or `requestid`, when DingTalk sent one.
        request_id: Option<String>,
        /// The HTTP status of the answer.
        status: u16,
    },
    /// The request did not complete: connection refused or reset, timeout, or an
    /// answer that was not the JSON DingTalk sends.
    #[error("DingTalk transport: {0}")]
    Transport(String),
    /// The caller asked for something DingTalk would refuse (too many recipients,
    /// message too large, empty field); the text says what.
    #[error("{0}")]
    Invalid(String),
    /// An event callback failed verification or decryption; the text says why.
    #[error("DingTalk callback: {0}")]
    Callback(String),
    /// The simulator could not start.
    #[error("simulator: {0}")]
    Io(#[from] std::io::Error),
}

/// DingTalk adapter results.
pub type Result<T> = std::result::Result<T, Error>;

/// `errcode`s and `code`s that mean "try again later": system busy and the rate limits.
const RETRYABLE_CODES: &[&str] = &[
    "-1",     // 系统繁忙
    "90002",  // platform-wide rate limit for the API
    "90018",  // corp's per-second limit for the API
    "90019",  // app's per-second limit per corp
    "143103", // work notice: app's recipients-per-minute limit
    "143104", // work notice: corp's recipients-per-minute limit
];

impl Error {
    /// Whether the same request may succeed later: transport failures, HTTP 5xx and
    /// 429, "system busy" and rate-limit codes. Invalid users, parameters and
    /// credentials are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Api { code, status, .. } => {
                *status >= 500
                    || *status == 429
                    || RETRYABLE_CODES.contains(&code.as_str())
                    || code.contains("Throttl")
                    || code.contains("QpsLimit")
                    || code.eq_ignore_ascii_case("ServiceUnavailable")
                    || code.eq_ignore_ascii_case("SystemBusy")
            }
            Error::Invalid(_) | Error::Callback(_) | Error::Io(_) => false,
        }
    }

    /// The DingTalk error code, for an [`Error::Api`].
    pub fn api_code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn transport(e: impl std::fmt::Display) -> Error {
        Error::Transport(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str, status: u16) -> Error {
        Error::Api { code: code.into(), message: "m".into(), request_id: None, status }
    }

    #[test]
    fn retryable_classification() {
        assert!(api("143103", 200).is_retryable());
        assert!(api("143104", 200).is_retryable());
        assert!(api("-1", 200).is_retryable());
        assert!(api("90018", 200).is_retryable());
        assert!(api("Throttling.User", 400).is_retryable());
        assert!(api("http_503", 503).is_retryable());
        assert!(Error::Transport("refused".into()).is_retryable());
        assert!(!api("33012", 200).is_retryable());
        assert!(!api("invalidClientIdOrSecret", 400).is_retryable());
        assert!(!Error::Invalid("too long".into()).is_retryable());
    }

    #[test]
    fn display_is_clear() {
        let e = Error::Api { code: "40014".into(), message: "不合法的access_token".into(), request_id: Some("r1".into()), status: 200 };
        assert_eq!(e.to_string(), "DingTalk error 40014: 不合法的access_token (HTTP 200, request id r1)");
    }
}
