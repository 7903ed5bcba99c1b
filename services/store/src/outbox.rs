//! The transactional outbox.
//!
//! Whatever other parts (or other systems) must hear about is written to the
//! `outbox` table in the same transaction as the change it announces. A relay
//! claims due rows with a lease, hands them to a handler, and marks them
//! delivered or schedules a retry with backoff. A crash between commit and
//! delivery loses nothing: the row stays due. Several nodes may relay at once:
//! a row is leased to one node at a time.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;

use crate::{Db, Result, Tx, now, ordered_id};

/// One announcement waiting in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    /// Unique id; the deduplication key downstream.
    pub id: String,
    /// What kind of announcement this is, e.g. `identity.backchannel_logout`.
    pub topic: String,
    /// JSON payload.
    pub payload: String,
    /// Delivery attempts made so far.
    pub attempts: i64,
}

impl OutboxMessage {
    /// Reads the payload back as `T`.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_str(&self.payload)?)
    }
}

/// Access to the outbox table.
#[derive(Debug, Clone)]
pub struct Outbox {
    db: Db,
}

impl Outbox {
    /// The outbox of `db`.
    pub fn new(db: Db) -> Self {
        Outbox { db }
    }

    /// Adds a message inside the caller's transaction; it becomes visible to
    /// relays only when that transaction commits.
    pub async fn enqueue<T: Serialize>(tx: &mut Tx, topic: &str, payload: &T) -> Result<String> {
        // Time-ordered, so new rows go to the end of the key's index.
        let id = ordered_id(8);
        let now = now();
        sqlx::query(
            "INSERT INTO outbox (id, topic, payload, created_at, attempts, next_attempt_at) \
             VALUES ($1, $2, $3, $4, 0, $5)",
        )
        .bind(&id)
        .bind(topic)
        .bind(serde_json::to_string(payload)?)
        .bind(now)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        Ok(id)
    }

    /// Leases up to `limit` due messages of `topic` to this caller for
    /// `lease_secs` seconds. A message whose lease runs out (its relay died)
    /// becomes due again.
    pub async fn claim(&self, topic: &str, limit: i64, lease_secs: i64) -> Result<Vec<OutboxMessage>> {
        let now = now();
        let rows = sqlx::query(
            "SELECT id FROM outbox WHERE topic = $1 AND delivered_at IS NULL AND dead_at IS NULL \
             AND next_attempt_at <= $2 ORDER BY next_attempt_at LIMIT $3",
        )
        .bind(topic)
        .bind(now)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id")?;
            // Moving next_attempt_at forward is the lease: only one relay wins it.
            let won = sqlx::query(
                "UPDATE outbox SET next_attempt_at = $1, attempts = attempts + 1 \
                 WHERE id = $2 AND delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= $3",
            )
            .bind(now + lease_secs)
            .bind(&id)
            .bind(now)
            .execute(self.db.pool())
            .await?
            .rows_affected()
                == 1;
            if !won {
                continue;
            }
            let row = sqlx::query("SELECT id, topic, payload, attempts FROM outbox WHERE id = $1")
                .bind(&id)
                .fetch_one(self.db.pool())
                .await?;
            claimed.push(OutboxMessage {
                id: row.try_get("id")?,
                topic: row.try_get("topic")?,
                payload: row.try_get("payload")?,
                attempts: row.try_get("attempts")?,
            });
        }
        Ok(claimed)
    }

    /// Marks a message delivered.
    pub async fn delivered(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE outbox SET delivered_at = $1, last_error = NULL WHERE id = $2")
            .bind(now())
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Records a failed attempt and when to try again.
    pub async fn retry_later(&self, id: &str, error: &str, delay_secs: i64) -> Result<()> {
        sqlx::query("UPDATE outbox SET next_attempt_at = $1, last_error = $2 WHERE id = $3")
            .bind(now() + delay_secs)
            .bind(error)
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Gives up on a message; it stays in the table for inspection.
    pub async fn dead(&self, id: &str, error: &str) -> Result<()> {
        sqlx::query("UPDATE outbox SET dead_at = $1, last_error = $2 WHERE id = $3")
            .bind(now())
            .bind(error)
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// How many messages of `topic` are still waiting for delivery.
    pub async fn pending(&self, topic: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM outbox WHERE topic = $1 AND delivered_at IS NULL AND dead_at IS NULL",
        )
        .bind(topic)
        .fetch_one(self.db.pool())
        .await?;
        Ok(row.try_get("n")?)
    }
}

/// Exponential backoff for the `attempts`-th failure: 1 s, 2 s, 4 s … capped
/// at ten minutes.
pub fn backoff_secs(attempts: i64) -> i64 {
    let exp = attempts.clamp(1, 20) - 1;
    (1i64 << exp).min(600)
}

#[cfg(test)]
mod tests {
    use super::backoff_secs;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_secs(1), 1);
        assert_eq!(backoff_secs(2), 2);
        assert_eq!(backoff_secs(5), 16);
        assert_eq!(backoff_secs(30), 600);
    }
}
