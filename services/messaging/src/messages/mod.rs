//! Unified message routing (融合通信): `POST /api/messages` and its status.

mod channel;
mod request;
mod router;

pub use channel::{Channel, Order, SendError, Sent};
pub use request::{ChannelKind, MessageRequest, Phone, Recipient};
pub use router::{Accepted, AttemptView, MessageView, Receipt, Router, RouterSettings, publish_incoming_sms, publish_receipt};
