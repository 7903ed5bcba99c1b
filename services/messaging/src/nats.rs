//! JetStream: streams, publishing with `Nats-Msg-Id`, durable pull consumers.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::AckPolicy, consumer::pull, stream};
use futures_util::{StreamExt, TryStreamExt};

use crate::consumer::{Consumer, Next, process};
use crate::outbox::Pending;
use crate::subjects::{self, STREAMS, StreamSpec};
use crate::{Error, Result};

/// A JetStream connection.
#[derive(Clone)]
pub(crate) struct Nats {
    pub(crate) client: async_nats::Client,
    js: jetstream::Context,
}

impl Nats {
    /// Connects (retrying in the background when the server is down) and
    /// makes sure CivicHub's streams exist when it is up.
    pub(crate) async fn connect(url: &str) -> Result<Nats> {
        let client = async_nats::ConnectOptions::new()
            .name("civichub")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(Error::nats)?;
        let js = jetstream::new(client.clone());
        let nats = Nats { client, js };
        if let Err(e) = nats.ensure_streams().await {
            tracing::warn!("NATS at {url}: {e}; streams will be created once it answers");
        }
        Ok(nats)
    }

    /// Creates CivicHub's streams where they are missing.
    pub(crate) async fn ensure_streams(&self) -> Result<()> {
        for spec in STREAMS {
            self.js
                .get_or_create_stream(stream::Config {
                    name: spec.name.to_owned(),
                    subjects: spec.subjects.iter().map(|s| (*s).to_owned()).collect(),
                    storage: stream::StorageType::File,
                    duplicate_window: subjects::DUPLICATE_WINDOW,
                    max_age: spec.max_age,
                    ..Default::default()
                })
                .await
                .map_err(Error::nats)?;
        }
        Ok(())
    }

    /// Publishes every envelope with its id as `Nats-Msg-Id` and waits for
    /// JetStream's acknowledgements; one result per envelope, in order.
    pub(crate) async fn publish_all(&self, batch: &[Pending]) -> Vec<Result<()>> {
        let mut acks = Vec::with_capacity(batch.len());
        for p in batch {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", p.id.as_str());
            let sent = self
                .js
                .publish_with_headers(p.subject.clone(), headers, bytes::Bytes::from(p.envelope.clone()))
                .await;
            acks.push(sent);
        }
        // Await the acknowledgements together: one overall deadline, not one per envelope.
        let waits = acks.into_iter().map(|ack| async move {
            match ack {
                Err(e) => Err(Error::nats(e)),
                Ok(fut) => match tokio::time::timeout(Duration::from_secs(10), fut).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(Error::nats(e)),
                    Err(_) => Err(Error::Nats("no acknowledgement within 10 s".into())),
                },
            }
        });
        let out: Vec<Result<()>> = futures_util::future::join_all(waits).await;
        let missing_stream = out.iter().any(|r| matches!(r, Err(e) if e.to_string().contains("no responders")));
        if missing_stream && let Err(e) = self.ensure_streams().await {
            tracing::debug!("creating streams: {e}");
        }
        out
    }

    fn stream_for(filter: &str) -> Option<&'static StreamSpec> {
        STREAMS.iter().find(|s| s.subjects.iter().any(|f| subjects::matches(f, filter) || f == &filter))
    }

    /// Runs a durable pull consumer until `stop` is set, recreating the
    /// subscription after connection loss; on stop it takes no new message
    /// and finishes those in hand.
    pub(crate) async fn run_consumer(self, consumer: Consumer, stop: tokio::sync::watch::Receiver<bool>) {
        let mut pause = Duration::from_millis(200);
        while !*stop.borrow() {
            match self.consume(&consumer, stop.clone()).await {
                Ok(()) => pause = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!("consumer {}: {e}", consumer.name);
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = crate::bus::stopped(stop.clone()) => {}
            }
        }
    }

    async fn consume(&self, c: &Consumer, stop: tokio::sync::watch::Receiver<bool>) -> Result<()> {
        let spec = Self::stream_for(&c.filter).ok_or_else(|| Error::Invalid(format!("no stream holds {}", c.filter)))?;
        let stream = match self.js.get_stream(spec.name).await {
            Ok(s) => s,
            Err(_) => {
                self.ensure_streams().await?;
                self.js.get_stream(spec.name).await.map_err(Error::nats)?
            }
        };
        let consumer = stream
            .get_or_create_consumer(
                &c.name,
                pull::Config {
                    durable_name: Some(c.name.clone()),
                    filter_subject: c.filter.clone(),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: c.ack_wait,
                    max_ack_pending: (c.concurrency * 4) as i64,
                    ..Default::default()
                },
            )
            .await
            .map_err(Error::nats)?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(c.concurrency)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(Error::nats)?;
        messages
            .take_until(crate::bus::stopped(stop))
            .map_err(Error::nats)
            .try_for_each_concurrent(c.concurrency.max(1), |message| async move {
                self.deliver(c, message).await;
                Ok(())
            })
            .await
    }

    async fn deliver(&self, c: &Consumer, message: jetstream::Message) {
        let delivery = message.info().map(|i| i.delivered.max(1) as u32).unwrap_or(1);
        let next = process(c, &message.payload, delivery).await;
        let acked = match next {
            Next::Ack => message.ack().await,
            Next::RetryAfter(d) => message.ack_with(AckKind::Nak(Some(d))).await,
            Next::Dead(reason) => {
                tracing::warn!("consumer {}: dead letter on {}: {reason}", c.name, message.subject);
                match self.dead_letter(c, &message, &reason, delivery).await {
                    Ok(()) => message.ack_with(AckKind::Term).await,
                    Err(e) => {
                        // Not stored in the dead letters yet: leave it for redelivery.
                        tracing::warn!("consumer {}: storing a dead letter: {e}", c.name);
                        return;
                    }
                }
            }
        };
        if let Err(e) = acked {
            tracing::debug!("consumer {}: acknowledging: {e} (it will be redelivered)", c.name);
        }
    }

    async fn dead_letter(&self, c: &Consumer, message: &jetstream::Message, reason: &str, delivery: u32) -> Result<()> {
        let mut headers = async_nats::HeaderMap::new();
        let id = message.info().map(|i| format!("{}:{}", c.name, i.stream_sequence)).unwrap_or_default();
        if !id.is_empty() {
            headers.insert("Nats-Msg-Id", id.as_str());
        }
        headers.insert("CivicHub-Consumer", c.name.as_str());
        headers.insert("CivicHub-Subject", message.subject.as_str());
        headers.insert("CivicHub-Reason", reason.replace(['\r', '\n'], " ").as_str());
        headers.insert("CivicHub-Deliveries", delivery.to_string().as_str());
        self.js
            .publish_with_headers(subjects::dead(&c.name), headers, message.payload.clone())
            .await
            .map_err(Error::nats)?
            .await
            .map_err(Error::nats)?;
        Ok(())
    }
}
