//! What a delivery channel must do; the adapters in `integrations/` are
//! wrapped to this shape by the hub.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::request::ChannelKind;

/// One send order: a message, on one channel, to one address. It travels
/// on the bus as the payload of `civichub.msg.<channel>.out`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Order {
    /// The message this order serves.
    pub message_id: String,
    /// `sms`, `dingtalk` or `voice`.
    pub channel: String,
    /// Phone number, DingTalk userid, or `dept:<id>` for a DingTalk department.
    pub address: String,
    /// The text.
    pub text: String,
    /// Gateway template, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Template parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

/// A gateway accepted an order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sent {
    /// The gateway's ids for it (one per SMS segment; a DingTalk task id; a call id).
    pub gateway_ids: Vec<String>,
    /// The gateway already confirmed delivery.
    pub delivered: bool,
}

/// Why a gateway did not take an order.
#[derive(Clone, Debug, PartialEq)]
pub enum SendError {
    /// Try again later (gateway down, throttled, timed out).
    Retryable(String),
    /// Will never work (bad number, unknown user, content refused).
    Permanent(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Retryable(s) => write!(f, "retryable: {s}"),
            SendError::Permanent(s) => write!(f, "permanent: {s}"),
        }
    }
}

/// A delivery channel.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// Which channel this is.
    fn kind(&self) -> ChannelKind;
    /// Hands `order` to the gateway; `reference` is the order's envelope id.
    async fn send(&self, order: &Order, reference: &str) -> Result<Sent, SendError>;

    /// Asks the gateway whether what it accepted as `gateway_id` for
    /// `address` arrived: `Some(true)` delivered, `Some(false)` failed,
    /// `None` unknown. Asked before falling back to the next channel, for
    /// gateways that report only when asked (DingTalk's send results).
    async fn confirm(&self, _gateway_id: &str, _address: &str) -> Option<bool> {
        None
    }
}
