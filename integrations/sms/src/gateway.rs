//! The adapter-facing interface the hub uses for every SMS channel.

use async_trait::async_trait;

use crate::error::{Error, Result};

/// A message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingSms {
    /// Destination: a mainland mobile number, 11 digits (a `+86`/`86`/`0086` prefix is tolerated).
    pub to: String,
    /// The text (CMPP sends it as is; template APIs pass it as the default template's `content`).
    pub text: String,
    /// A template for template-based HTTP APIs; ignored by CMPP.
    pub template: Option<Template>,
    /// CivicHub's message id, for logs and the HTTP APIs' `OutId`.
    pub reference: String,
    /// Whether a delivery status report is wanted.
    pub want_report: bool,
}

/// A registered template and its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// The provider's template code, e.g. `SMS_123456789`.
    pub code: String,
    /// Template parameters, a JSON object.
    pub params: serde_json::Value,
}

/// What the gateway accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The gateway's ids, one per segment (CMPP), or the single `BizId` (HTTP APIs).
    pub gateway_ids: Vec<String>,
}

/// An SMS channel.
#[async_trait]
pub trait SmsGateway: Send + Sync + 'static {
    /// Sends one message. Errors say through [`Error::is_retryable`] whether a retry may help.
    async fn send(&self, sms: &OutgoingSms) -> Result<Submitted>;
    /// A short name for logs and metrics, e.g. `"cmpp"`.
    fn name(&self) -> &'static str;
}

/// Something the gateway told us without being asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsEvent {
    /// A delivery status report for a message sent earlier.
    Report {
        /// The id returned in [`Submitted::gateway_ids`].
        gateway_id: String,
        /// The carrier's status: `DELIVRD`, `UNDELIV`, `EXPIRED`, …
        stat: String,
        /// Whether `stat` means the handset received it.
        delivered: bool,
        /// The mobile the message went to.
        to: String,
        /// When the carrier finished with it (`YYMMDDHHMM` for CMPP).
        done_time: String,
    },
    /// A message from a mobile (long messages arrive reassembled).
    Incoming {
        /// The sender's mobile number.
        from: String,
        /// Our service number it was sent to.
        to: String,
        /// The decoded text.
        text: String,
        /// The gateway's id of the message (of its last segment): the same
        /// when the gateway sends it again, so it is stored once.
        msg_id: String,
    },
}

/// An [`SmsEvent`] as the CMPP link hands it over. The gateway gets its
/// answer (DELIVER_RESP) only once [`Received::stored`] says the event is
/// safe: one lost before that (a crash, a failed write) is sent again by the
/// gateway rather than lost.
#[derive(Debug)]
pub struct Received {
    /// What arrived.
    pub event: SmsEvent,
    /// Where the link takes the answers of its connection: the DELIVER's
    /// sequence id and `Msg_Id`.
    answers: tokio::sync::mpsc::UnboundedSender<(u32, u64)>,
    /// The DELIVERs to answer: one, or every part of a long message.
    delivers: Vec<(u32, u64)>,
}

impl Received {
    pub(crate) fn new(event: SmsEvent, answers: tokio::sync::mpsc::UnboundedSender<(u32, u64)>, delivers: Vec<(u32, u64)>) -> Received {
        Received { event, answers, delivers }
    }

    /// The event is stored: the gateway is answered (unless the connection it
    /// came on is gone; then the gateway sends it again on the next).
    pub fn stored(self) {
        for deliver in self.delivers {
            let _ = self.answers.send(deliver);
        }
    }
}

/// Checks and normalises a mainland mobile number to its 11 digits (`1` followed by 10 digits).
pub fn normalize_mobile(number: &str) -> Result<String> {
    let trimmed = number.trim();
    let digits = ["+86", "0086", "86"]
        .iter()
        .find_map(|p| trimmed.strip_prefix(p).filter(|rest| rest.len() == 11))
        .unwrap_or(trimmed);
    if digits.len() == 11 && digits.starts_with('1') && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(digits.to_owned())
    } else {
        Err(Error::InvalidNumber(number.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mobile_numbers() {
        assert_eq!(normalize_mobile("13800138000").expect("ok"), "13800138000");
        assert_eq!(
            normalize_mobile("+8613800138000").expect("ok"),
            "13800138000"
        );
        assert_eq!(
            normalize_mobile("008613800138000").expect("ok"),
            "13800138000"
        );
        for bad in [
            "",
            "1380013800",
            "23800138000",
            "1380013800a",
            "138001380001",
            "12345",
        ] {
            assert!(
                matches!(normalize_mobile(bad), Err(Error::InvalidNumber(_))),
                "{bad}"
            );
        }
    }
}
