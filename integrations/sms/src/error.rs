//! The crate's error type.

/// Errors from the SMS codecs, clients and simulators.
///
/// [`Error::is_retryable`] tells whether sending the same message again later may succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a socket (connection refused, reset, …).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// A PDU's `Total_Length` is below the 12-byte header or above the accepted maximum;
    /// the byte stream can no longer be framed and the connection must be dropped.
    #[error("invalid PDU length {0}")]
    InvalidLength(u32),

    /// A PDU body ended before the named field was complete.
    #[error("PDU truncated in field {0}")]
    Truncated(&'static str),

    /// A PDU or message body is structurally wrong (trailing bytes, bad UDH, …).
    #[error("malformed PDU: {0}")]
    Malformed(String),

    /// A value does not fit the fixed-width field it is encoded into.
    #[error("value for {field} is longer than {max} octets")]
    FieldTooLong {
        /// The CMPP field name.
        field: &'static str,
        /// The field's width in octets.
        max: usize,
    },

    /// The text needs more than 255 segments.
    #[error("message too long: {0} segments needed, at most 255")]
    MessageTooLong(usize),

    /// The destination is not an 11-digit mainland mobile number.
    #[error("invalid mobile number {0:?}")]
    InvalidNumber(String),

    /// The message content cannot be sent (empty text, bad template parameters, …).
    #[error("invalid content: {0}")]
    InvalidContent(String),

    /// The gateway refused our credentials, or proved it does not know the shared secret.
    #[error("authentication failed: {0}")]
    AuthFailed(String),

    /// The link to the gateway is down and did not come back within the submit timeout.
    #[error("SMS gateway link is down")]
    LinkDown,

    /// The connection was lost while a request was waiting for its answer.
    #[error("connection lost: {0}")]
    ConnectionLost(String),

    /// No answer arrived within the configured timeout.
    #[error("timed out: {0}")]
    Timeout(String),

    /// The gateway asked us to slow down (CMPP `Result` 8, HTTP throttling codes).
    #[error("flow control: {0}")]
    FlowControl(String),

    /// The gateway rejected the message for good; sending it again will fail the same way.
    #[error("rejected by gateway: {code}: {message}")]
    Rejected {
        /// The gateway's result code (CMPP `Result` as a decimal, or the HTTP API's `Code`).
        code: String,
        /// A human-readable explanation.
        message: String,
    },

    /// The gateway reported a transient server-side failure (HTTP 5xx, system busy).
    #[error("gateway server error: {0}")]
    Server(String),

    /// An HTTP request could not be completed (connect, TLS, timeout while sending).
    #[error("HTTP transport error: {0}")]
    Transport(String),

    /// The gateway answered something this crate cannot interpret.
    #[error("unexpected response: {0}")]
    Protocol(String),

    /// The configuration is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The client was shut down.
    #[error("client is shut down")]
    Closed,
}

impl Error {
    /// Whether the same send may succeed if tried again later (connection down, timeout, flow control, 5xx).
    ///
    /// Permanent errors (invalid number, authentication failure, rejected content, bad configuration)
    /// return `false`.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Io(_)
                | Error::LinkDown
                | Error::ConnectionLost(_)
                | Error::Timeout(_)
                | Error::FlowControl(_)
                | Error::Server(_)
                | Error::Transport(_)
        )
    }
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        assert!(Error::LinkDown.is_retryable());
        assert!(Error::FlowControl("8".into()).is_retryable());
        assert!(Error::Timeout("x".into()).is_retryable());
        assert!(Error::Server("500".into()).is_retryable());
        assert!(!Error::InvalidNumber("1".into()).is_retryable());
        assert!(!Error::AuthFailed("x".into()).is_retryable());
        assert!(
            !Error::Rejected {
                code: "1".into(),
                message: "x".into()
            }
            .is_retryable()
        );
        assert!(!Error::Closed.is_retryable());
    }
}
