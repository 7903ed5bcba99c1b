//! The bus outbox: envelopes written in the same transaction as the change
//! they announce, published by the relay, deleted once the bus has them.

use civichub_store::{Backend, Db, Row, Tx, row_placeholders};

use crate::envelope::now_ms;
use crate::{Envelope, Result};

/// An envelope waiting in the outbox.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The envelope id (and `Nats-Msg-Id`).
    pub id: String,
    /// Where it goes.
    pub subject: String,
    /// The encoded envelope.
    pub envelope: String,
    /// Publish attempts so far, this one included.
    pub attempts: i64,
}

/// Adds `envelope` for `subject` inside the caller's transaction. The row
/// is written at the transaction's commit, with the other envelopes of the
/// transaction in one statement.
pub fn enqueue(tx: &mut Tx, subject: &str, envelope: &Envelope) -> Result<()> {
    let now = now_ms();
    tx.insert_later(
        "INSERT INTO bus_outbox (id, subject, envelope, created_ms, next_attempt_ms, attempts)",
        "ON CONFLICT (id) DO NOTHING",
        vec![envelope.id.as_str().into(), subject.into(), serde_json::to_string(envelope)?.into(), now.into(), now.into(), 0.into()],
    );
    Ok(())
}

/// `FOR UPDATE SKIP LOCKED` where the engine has it, so relays on several
/// nodes take disjoint batches.
pub(crate) fn skip_locked(db: &Db) -> &'static str {
    db.backend().locking(" FOR UPDATE SKIP LOCKED")
}

/// Leases up to `limit` due envelopes for `lease_ms`; one that is not
/// published in time (its relay died) becomes due again. With `probe`, a
/// read first: when nothing is due, the writer is not taken.
///
/// On SQLite it is a read, not a write transaction on the single writer: a
/// SQLite store belongs to one process, whose one relay takes the outbox in
/// turn, so there is no other relay to lease against; a relay that dies dies
/// with its process, and what it had read is still due at the next start.
pub async fn claim(db: &Db, limit: i64, lease_ms: i64, probe: bool) -> Result<Vec<Pending>> {
    let now = now_ms();
    let rows = if db.backend() == Backend::Sqlite {
        sqlx::query(
            "SELECT id, subject, envelope, attempts + 1 AS attempts FROM bus_outbox \
             WHERE next_attempt_ms <= $1 ORDER BY next_attempt_ms LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(db.pool())
        .await?
    } else {
        lease(db, now, limit, lease_ms, probe).await?
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(Pending {
            id: row.try_get("id")?,
            subject: row.try_get("subject")?,
            envelope: row.try_get("envelope")?,
            attempts: row.try_get("attempts")?,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// [`claim`] where several relays share the outbox: the rows are leased.
async fn lease(db: &Db, now: i64, limit: i64, lease_ms: i64, probe: bool) -> Result<Vec<sqlx::any::AnyRow>> {
    if probe && sqlx::query("SELECT 1 FROM bus_outbox WHERE next_attempt_ms <= $1 LIMIT 1").bind(now).fetch_optional(db.pool()).await?.is_none() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "UPDATE bus_outbox SET next_attempt_ms = $1, attempts = attempts + 1 WHERE id IN \
         (SELECT id FROM bus_outbox WHERE next_attempt_ms <= $2 ORDER BY next_attempt_ms LIMIT $3{}) \
         RETURNING id, subject, envelope, attempts",
        skip_locked(db)
    );
    let mut tx = db.begin().await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(now + lease_ms).bind(now).bind(limit).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows)
}

/// Deletes the rows of `table` (one of the bus's, keyed by `id`) with these
/// ids, on `tx`, 500 at a time.
pub(crate) async fn delete_ids(tx: &mut Tx, table: &'static str, ids: &[String]) -> Result<()> {
    for chunk in ids.chunks(500) {
        let sql = format!("DELETE FROM {table} WHERE id IN {}", row_placeholders(Backend::of(tx), 1, 1, chunk.len()));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            q = q.bind(id);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// How often the relay vacuums the outbox on PostgreSQL.
pub(crate) const TIDY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Vacuums the outbox, and the embedded bus's deliveries, on PostgreSQL
/// (elsewhere nothing to do). Every envelope leaves three dead row versions
/// behind it (written, leased, deleted) in a table that holds only a few
/// hundred live ones; until a vacuum clears them, every lease scans past
/// them. Autovacuum would, if the server runs it and gets to these tables
/// often enough, which a queue table needs more than its default settings
/// give. `SKIP_LOCKED`: when another node is at it, this one does not wait.
pub async fn tidy(db: &Db) -> Result<()> {
    if db.backend() == Backend::Postgres {
        sqlx::raw_sql("VACUUM (ANALYZE, SKIP_LOCKED) bus_outbox, bus_deliveries").execute(db.pool()).await?;
    }
    Ok(())
}

/// Deletes published envelopes on `tx`.
pub async fn published(tx: &mut Tx, ids: &[String]) -> Result<()> {
    delete_ids(tx, "bus_outbox", ids).await
}

/// Schedules another publish attempt of `pending`.
pub async fn retry(db: &Db, pending: &Pending, error: &str, delay_ms: i64) -> Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE bus_outbox SET next_attempt_ms = $1, last_error = $2, attempts = $3 WHERE id = $4")
        .bind(now_ms() + delay_ms)
        .bind(error)
        .bind(pending.attempts)
        .bind(&pending.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Envelopes not yet published.
pub async fn backlog(db: &Db) -> Result<i64> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM bus_outbox").fetch_one(db.pool()).await?;
    Ok(row.try_get("n")?)
}
