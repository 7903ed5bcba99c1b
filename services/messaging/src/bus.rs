//! The bus: JetStream when a NATS URL is configured, otherwise the embedded
//! bus in the database. Both run the same outbox relay, the same consumers
//! and the same retry, backoff and dead-letter rules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use civichub_store::{Db, GroupWriter, Row};
use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::consumer::{Consumer, Next, process};
use crate::envelope::now_ms;
use crate::outbox::{self, Pending, skip_locked};
use crate::{Envelope, Error, Result, nats::Nats};

/// The transport under the bus.
#[derive(Clone)]
enum Transport {
    Nats(Nats),
    Local,
}

/// The bus of one hub node.
#[derive(Clone)]
pub struct Bus {
    db: Db,
    writer: GroupWriter,
    transport: Transport,
    consumers: Arc<Mutex<Vec<Consumer>>>,
    relay_wake: Arc<Notify>,
    local_wake: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    /// Set by [`Bus::stop`]: the relay and the consumers take nothing new.
    stop: Arc<tokio::sync::watch::Sender<bool>>,
}

/// Resolves once `stop` is set (or its sender is gone).
pub(crate) async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_nats() { "Bus(NATS)" } else { "Bus(embedded)" })
    }
}

/// Publish attempts that failed wait this long, doubling up to two seconds:
/// a republish is cheap (JetStream drops the duplicate), and after an outage
/// the backlog should leave as soon as NATS is back.
fn relay_backoff_ms(attempts: i64) -> i64 {
    (250i64 << attempts.clamp(1, 3)).min(2_000)
}

impl Bus {
    /// The embedded bus: envelopes and deliveries stay in the database.
    pub fn local(db: Db) -> Bus {
        Bus::with(db, Transport::Local)
    }

    /// JetStream at `url`; creates CivicHub's streams if missing. Connects
    /// even when the server is down at first (the client keeps trying).
    pub async fn nats(db: Db, url: &str) -> Result<Bus> {
        Ok(Bus::with(db, Transport::Nats(Nats::connect(url).await?)))
    }

    fn with(db: Db, transport: Transport) -> Bus {
        Bus {
            writer: GroupWriter::start(db.clone(), 256, "bus writer"),
            db,
            transport,
            consumers: Default::default(),
            relay_wake: Arc::new(Notify::new()),
            local_wake: Default::default(),
            stop: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Stops the relay and the consumers: nothing new is taken, and what each
    /// consumer is handling is finished (its delivery recorded and
    /// acknowledged), so a shutdown never cuts a send in half. The tasks of
    /// [`Bus::start`] end once that is done.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Whether this bus runs on NATS.
    pub fn is_nats(&self) -> bool {
        matches!(self.transport, Transport::Nats(_))
    }

    /// The database under the bus.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Group commit for the small writes of many concurrent handlers and requests.
    pub fn writer(&self) -> &GroupWriter {
        &self.writer
    }

    /// The NATS client, when there is one.
    pub fn nats_client(&self) -> Option<async_nats::Client> {
        match &self.transport {
            Transport::Nats(n) => Some(n.client.clone()),
            Transport::Local => None,
        }
    }

    /// Puts one envelope for `subject` in the outbox (through the group
    /// writer) and wakes the relay: for announcements that change nothing else.
    pub async fn publish(&self, subject: &str, env: Envelope) -> Result<()> {
        let subject = subject.to_owned();
        self.writer
            .write(move |tx| Box::pin(async move { outbox::enqueue(tx, &subject, &env) }))
            .await?;
        self.kick();
        Ok(())
    }

    /// Tells this node's relay that envelopes were committed.
    pub fn kick(&self) {
        self.relay_wake.notify_one();
    }

    /// Adds a consumer; call before [`Bus::start`].
    pub fn register(&self, consumer: Consumer) {
        if let Ok(mut all) = self.consumers.lock() {
            all.push(consumer);
        }
    }

    /// Whether an envelope on `subject` goes anywhere: on NATS always (other
    /// systems may listen), on the embedded bus when a consumer takes it.
    pub fn carries(&self, subject: &str) -> bool {
        match self.transport {
            Transport::Nats(_) => true,
            Transport::Local => self.consumers.lock().is_ok_and(|all| all.iter().any(|c| crate::subjects::matches(&c.filter, subject))),
        }
    }

    fn consumers(&self) -> Vec<Consumer> {
        self.consumers.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Starts the relay and every registered consumer.
    pub fn start(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(self.clone().relay())];
        for consumer in self.consumers() {
            let bus = self.clone();
            tasks.push(match &self.transport {
                Transport::Nats(n) => tokio::spawn(n.clone().run_consumer(consumer, self.stop.subscribe())),
                Transport::Local => tokio::spawn(bus.run_local(consumer)),
            });
        }
        tasks
    }

    async fn relay(self) {
        let mut busy = false;
        let mut tidied = tokio::time::Instant::now();
        while !self.stopping() {
            if tidied.elapsed() >= outbox::TIDY_EVERY {
                tidied = tokio::time::Instant::now();
                if let Err(e) = outbox::tidy(&self.db).await {
                    tracing::warn!("bus relay: vacuuming the outbox: {e}");
                }
            }
            match self.relay_batch(256, !busy).await {
                Ok(n) => busy = n > 0,
                Err(e) => {
                    busy = false;
                    tracing::warn!("bus relay: {e}");
                }
            }
            if !busy {
                tokio::select! {
                    _ = self.relay_wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stopped(self.stop.subscribe()) => {}
                }
            }
        }
    }

    /// Publishes up to `limit` due outbox envelopes; returns how many were
    /// taken (published or rescheduled).
    pub async fn relay_once(&self, limit: i64) -> Result<usize> {
        self.relay_batch(limit, true).await
    }

    /// [`Bus::relay_once`]; `probe` reads first whether anything is due, so
    /// a relay that found nothing last time does not take the writer.
    async fn relay_batch(&self, limit: i64, probe: bool) -> Result<usize> {
        let batch = outbox::claim(&self.db, limit, 30_000, probe).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let n = batch.len();
        match &self.transport {
            Transport::Nats(nats) => {
                let results = nats.publish_all(&batch).await;
                let mut done = Vec::with_capacity(n);
                for (pending, result) in batch.into_iter().zip(results) {
                    match result {
                        Ok(()) => done.push(pending.id),
                        Err(e) => {
                            tracing::debug!("publishing {} to {}: {e}", pending.id, pending.subject);
                            outbox::retry(&self.db, &pending, &e.to_string(), relay_backoff_ms(pending.attempts)).await?;
                        }
                    }
                }
                // With the bus's other writes: one commit for many.
                self.writer
                    .write(move |tx| Box::pin(async move { outbox::published(tx, &done).await }))
                    .await?;
            }
            Transport::Local => self.fan_out(&batch).await?,
        }
        Ok(n)
    }

    /// The embedded bus: one delivery row per matching consumer, in the same
    /// transaction that removes the envelopes from the outbox.
    async fn fan_out(&self, batch: &[Pending]) -> Result<()> {
        let consumers = self.consumers();
        let now = now_ms();
        let mut woken = Vec::new();
        let mut tx = self.db.begin().await?;
        for pending in batch {
            for c in consumers.iter().filter(|c| crate::subjects::matches(&c.filter, &pending.subject)) {
                sqlx::query(
                    "INSERT INTO bus_deliveries (id, consumer, subject, envelope, attempts, next_attempt_ms) \
                     VALUES ($1, $2, $3, $4, 0, $5) ON CONFLICT (id) DO NOTHING",
                )
                .bind(format!("{}/{}", c.name, pending.id))
                .bind(&c.name)
                .bind(&pending.subject)
                .bind(&pending.envelope)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if !woken.contains(&c.name) {
                    woken.push(c.name.clone());
                }
            }
        }
        let ids: Vec<String> = batch.iter().map(|p| p.id.clone()).collect();
        outbox::published(&mut tx, &ids).await?;
        tx.commit().await?;
        for name in woken {
            self.local_notify(&name).notify_one();
        }
        Ok(())
    }

    fn local_notify(&self, consumer: &str) -> Arc<Notify> {
        match self.local_wake.lock() {
            Ok(mut map) => map.entry(consumer.to_owned()).or_default().clone(),
            Err(_) => Arc::new(Notify::new()),
        }
    }

    async fn run_local(self, consumer: Consumer) {
        let wake = self.local_notify(&consumer.name);
        let mut busy = false;
        while !self.stopping() {
            busy = match self.local_batch(&consumer, !busy).await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!("consumer {}: {e}", consumer.name);
                    false
                }
            };
            if !busy {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stopped(self.stop.subscribe()) => {}
                }
            }
        }
    }

    /// Handles one batch of due deliveries of `consumer` on the embedded bus;
    /// with `probe`, reads first whether any is due, so an idle consumer does
    /// not take the writer.
    async fn local_batch(&self, consumer: &Consumer, probe: bool) -> Result<usize> {
        let now = now_ms();
        if probe {
            let due = sqlx::query("SELECT 1 FROM bus_deliveries WHERE consumer = $1 AND next_attempt_ms <= $2 LIMIT 1")
                .bind(&consumer.name)
                .bind(now)
                .fetch_optional(self.db.pool())
                .await?;
            if due.is_none() {
                return Ok(0);
            }
        }
        let sql = format!(
            "UPDATE bus_deliveries SET next_attempt_ms = $1, attempts = attempts + 1 WHERE id IN \
             (SELECT id FROM bus_deliveries WHERE consumer = $2 AND next_attempt_ms <= $3 \
             ORDER BY next_attempt_ms LIMIT $4{}) RETURNING id, subject, envelope, attempts",
            skip_locked(&self.db)
        );
        let mut tx = self.db.begin().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(now + consumer.ack_wait.as_millis() as i64)
            .bind(&consumer.name)
            .bind(now)
            .bind(consumer.concurrency as i64)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut batch = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let subject: String = row.try_get("subject")?;
            let envelope: String = row.try_get("envelope")?;
            let attempts: i64 = row.try_get("attempts")?;
            batch.push((id, subject, envelope, attempts as u32));
        }
        let n = batch.len();
        let results: Vec<(String, String, String, u32, Next)> = futures_util::stream::iter(batch)
            .map(|(id, subject, raw, delivery)| async move {
                let next = process(consumer, raw.as_bytes(), delivery).await;
                (id, subject, raw, delivery, next)
            })
            .buffer_unordered(consumer.concurrency.max(1))
            .collect()
            .await;
        let mut acked = Vec::new();
        let mut tx = self.db.begin().await?;
        for (id, subject, raw, delivery, next) in results {
            match next {
                Next::Ack => acked.push(id),
                Next::RetryAfter(d) => {
                    sqlx::query("UPDATE bus_deliveries SET next_attempt_ms = $1 WHERE id = $2")
                        .bind(now_ms() + d.as_millis() as i64)
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
                }
                Next::Dead(reason) => {
                    tracing::warn!("consumer {}: dead letter {id}: {reason}", consumer.name);
                    sqlx::query(
                        "INSERT INTO bus_dead_letters (id, consumer, subject, envelope, reason, attempts, dead_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(&id)
                    .bind(&consumer.name)
                    .bind(&subject)
                    .bind(&raw)
                    .bind(&reason)
                    .bind(delivery as i64)
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
                    acked.push(id);
                }
            }
        }
        outbox::delete_ids(&mut tx, "bus_deliveries", &acked).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Dead letters of the embedded bus, newest first (with NATS, read the
    /// `CIVICHUB_DEAD_LETTERS` stream instead).
    pub async fn local_dead_letters(&self, limit: i64) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query(
            "SELECT consumer, subject, envelope, reason, attempts, dead_ms FROM bus_dead_letters ORDER BY dead_ms DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    consumer: r.try_get("consumer")?,
                    subject: r.try_get("subject")?,
                    envelope: r.try_get("envelope")?,
                    reason: r.try_get("reason")?,
                    deliveries: r.try_get::<i64, _>("attempts")? as u32,
                })
            })
            .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
            .map_err(Error::from)
    }
}

/// An envelope a consumer gave up on.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeadLetter {
    /// The consumer that gave up.
    pub consumer: String,
    /// The subject it came on.
    pub subject: String,
    /// The envelope as it arrived.
    pub envelope: String,
    /// Why.
    pub reason: String,
    /// Deliveries made.
    pub deliveries: u32,
}
