//! CivicHub's messaging hub.
//!
//! Whatever other parts or other city systems must hear about is written to
//! the bus outbox in the same database transaction as the change
//! ([`outbox::enqueue`]). A relay publishes it to JetStream with
//! `Nats-Msg-Id` set to the envelope id, or, without NATS, fans it out to
//! the embedded bus in the database ([`Bus`]). Durable consumers handle it
//! with explicit acknowledgement, bounded redelivery with backoff and a
//! dead-letter stream ([`Consumer`]). [`subjects`] owns every subject name.

mod bus;
mod consumer;
mod envelope;
mod error;
mod nats;
pub mod api;
mod account_notices;
mod audit;
pub mod messages;
pub mod outbox;
pub mod subjects;

pub use account_notices::AccountNotices;
pub use audit::{forward_audit, spawn_audit_forwarder};
pub use bus::{Bus, DeadLetter};
pub use consumer::{Consumer, Handler, Outcome};
pub use envelope::{Envelope, new_id, now_ms};
pub use error::{Error, Result};

/// Publishes a call-centre event on `civichub.fusion.call.<event>`; returns
/// the envelope id and the subject.
pub async fn publish_call_event(bus: &Bus, event: &civichub_fusion::CallEvent) -> Result<(String, String)> {
    let subject = subjects::call(event.subject_suffix());
    let payload: serde_json::Value = serde_json::from_str(&event.to_json())?;
    let env = Envelope::new(&format!("fusion.call.{}", event.subject_suffix()), "civichub/fusion", Some(&event.call_id), payload);
    let id = env.id.clone();
    bus.publish(&subject, env).await?;
    Ok((id, subject))
}
