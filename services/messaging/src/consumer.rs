//! Durable consumers: who handles which subjects, and how failures retry.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::Envelope;

/// What a handler made of one envelope.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Done (or already done before: handlers are idempotent by envelope id).
    Ack,
    /// Failed for now; deliver again after the consumer's backoff (or `after`).
    Retry {
        /// Why, for the log and the dead letter.
        reason: String,
        /// Overrides the backoff step.
        after: Option<Duration>,
    },
    /// Not this delivery's turn (another node is working on the same
    /// thing): deliver again after `after`. Not a failure, so it does not
    /// count against `max_deliver`.
    Defer {
        /// Why, for the log.
        reason: String,
        /// When to look again.
        after: Duration,
    },
    /// Can never succeed: dead-letter it now.
    Reject {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// A retry after the consumer's backoff.
    pub fn retry(reason: impl Into<String>) -> Outcome {
        Outcome::Retry { reason: reason.into(), after: None }
    }

    /// A rejection.
    pub fn reject(reason: impl Into<String>) -> Outcome {
        Outcome::Reject { reason: reason.into() }
    }
}

/// Handles the envelopes of one consumer.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery; `delivery` counts from 1.
    async fn handle(&self, envelope: &Envelope, delivery: u32) -> Outcome;

    /// Called once when an envelope goes to the dead letters (retries
    /// exhausted or rejected), before it is acknowledged.
    async fn dead(&self, _envelope: &Envelope, _reason: &str) {}
}

/// A durable consumer.
#[derive(Clone)]
pub struct Consumer {
    /// Durable name, shared by every hub node: nodes split the work.
    pub name: String,
    /// Subject filter (NATS wildcards).
    pub filter: String,
    /// Deliveries before dead-lettering.
    pub max_deliver: u32,
    /// Wait before delivery n+1 after a failed delivery n (last step repeats).
    pub backoff: Vec<Duration>,
    /// How long a delivery may stay unacknowledged before it is redelivered.
    pub ack_wait: Duration,
    /// Deliveries handled at once on one node.
    pub concurrency: usize,
    /// The handler.
    pub handler: Arc<dyn Handler>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("name", &self.name).field("filter", &self.filter).finish()
    }
}

impl Consumer {
    /// A consumer with the defaults: 6 deliveries, backoff 1 s, 5 s, 15 s,
    /// 30 s, 60 s, 30 s ack wait, 64 at once.
    pub fn new(name: &str, filter: &str, handler: Arc<dyn Handler>) -> Consumer {
        Consumer {
            name: name.into(),
            filter: filter.into(),
            max_deliver: 6,
            backoff: [1, 5, 15, 30, 60].into_iter().map(Duration::from_secs).collect(),
            ack_wait: Duration::from_secs(30),
            concurrency: 64,
            handler,
        }
    }

    /// The wait after failed delivery `delivery` (1-based).
    pub fn backoff_after(&self, delivery: u32) -> Duration {
        let i = (delivery.max(1) - 1) as usize;
        self.backoff.get(i).or(self.backoff.last()).copied().unwrap_or(Duration::from_secs(1))
    }
}

/// What the runner does after a handler answered: the one decision both
/// buses share.
#[derive(Debug, PartialEq)]
pub(crate) enum Next {
    Ack,
    RetryAfter(Duration),
    Dead(String),
}

pub(crate) fn decide(consumer: &Consumer, outcome: Outcome, delivery: u32) -> Next {
    match outcome {
        Outcome::Ack => Next::Ack,
        Outcome::Reject { reason } => Next::Dead(reason),
        Outcome::Defer { after, .. } => Next::RetryAfter(after),
        Outcome::Retry { reason, .. } if delivery >= consumer.max_deliver => {
            Next::Dead(format!("gave up after {delivery} deliveries: {reason}"))
        }
        Outcome::Retry { after, .. } => Next::RetryAfter(after.unwrap_or_else(|| consumer.backoff_after(delivery))),
    }
}

/// Handles one delivery of raw bytes: decode, run the handler, decide, and
/// tell the handler when the envelope goes to the dead letters. The one
/// path both buses take.
pub(crate) async fn process(consumer: &Consumer, payload: &[u8], delivery: u32) -> Next {
    match Envelope::decode(payload) {
        Err(e) => Next::Dead(format!("not an envelope: {e}")),
        Ok(env) => {
            let next = decide(consumer, consumer.handler.handle(&env, delivery).await, delivery);
            if let Next::Dead(reason) = &next {
                consumer.handler.dead(&env, reason).await;
            }
            next
        }
    }
}

/// A handler that acknowledges everything, for tests.
#[cfg(test)]
pub(crate) struct Nothing;

#[cfg(test)]
#[async_trait]
impl Handler for Nothing {
    async fn handle(&self, _: &Envelope, _: u32) -> Outcome {
        Outcome::Ack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_then_die() {
        let c = Consumer::new("c", "x", Arc::new(Nothing));
        assert_eq!(decide(&c, Outcome::retry("down"), 1), Next::RetryAfter(Duration::from_secs(1)));
        assert_eq!(decide(&c, Outcome::retry("down"), 2), Next::RetryAfter(Duration::from_secs(5)));
        assert_eq!(decide(&c, Outcome::retry("down"), 5), Next::RetryAfter(Duration::from_secs(60)));
        assert!(matches!(decide(&c, Outcome::retry("down"), 6), Next::Dead(r) if r.contains("6 deliveries")));
        assert_eq!(decide(&c, Outcome::reject("bad"), 1), Next::Dead("bad".into()));
        assert_eq!(decide(&c, Outcome::Ack, 9), Next::Ack);
        let later = Duration::from_secs(7);
        assert_eq!(decide(&c, Outcome::Defer { reason: "busy elsewhere".into(), after: later }, 60), Next::RetryAfter(later), "a deferral is no failure");
    }
}
