//! The audit trail: every login, logout and token issue is a record.

use civichub_store::{Db, Row, Tx, now};
use serde::Serialize;
use serde_json::Value;

use crate::Result;

/// One audit record.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEvent {
    /// When (Unix seconds).
    pub at: i64,
    /// What happened, e.g. `login.succeeded`, `token.issued`.
    pub event: String,
    /// Whose account.
    pub user_id: Option<String>,
    /// Which client.
    pub client_id: Option<String>,
    /// From which source address.
    pub ip: Option<String>,
    /// Details as JSON.
    pub detail: Value,
}

/// Writes and reads audit records.
#[derive(Clone, Debug)]
pub struct Audit {
    db: Db,
}

/// Who and where, for an audit record.
#[derive(Clone, Debug, Default)]
pub struct Actor<'a> {
    /// The user.
    pub user_id: Option<&'a str>,
    /// The client.
    pub client_id: Option<&'a str>,
    /// The source address.
    pub ip: Option<&'a str>,
}

const INSERT: &str = "INSERT INTO audit_events (at, event, user_id, client_id, ip, detail) VALUES ($1, $2, $3, $4, $5, $6)";

async fn insert<'e, E>(executor: E, event: &str, actor: Actor<'_>, detail: Value) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(INSERT)
        .bind(now())
        .bind(event)
        .bind(actor.user_id)
        .bind(actor.client_id)
        .bind(actor.ip)
        .bind(detail.to_string())
        .execute(executor)
        .await?;
    Ok(())
}

impl Audit {
    /// The audit trail in `db`.
    pub fn new(db: Db) -> Self {
        Audit { db }
    }

    /// Records an event on its own.
    pub async fn record(&self, event: &str, actor: Actor<'_>, detail: Value) -> Result<()> {
        let mut tx = self.db.begin().await?;
        insert(&mut *tx, event, actor, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records an event inside the transaction of the change it describes.
    pub async fn record_in(tx: &mut Tx, event: &str, actor: Actor<'_>, detail: Value) -> Result<()> {
        insert(&mut **tx, event, actor, detail).await
    }

    /// The newest `limit` records, newest first.
    pub async fn recent(&self, limit: i64) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT at, event, user_id, client_id, ip, detail FROM audit_events ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// The newest records of `event` about `user_id`.
    pub async fn of_user(&self, user_id: &str, event: &str, limit: i64) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT at, event, user_id, client_id, ip, detail FROM audit_events WHERE user_id = $1 AND event = $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(user_id)
        .bind(event)
        .bind(limit)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<AuditEvent> {
    let detail: String = r.try_get("detail")?;
    Ok(AuditEvent {
        at: r.try_get("at")?,
        event: r.try_get("event")?,
        user_id: r.try_get("user_id")?,
        client_id: r.try_get("client_id")?,
        ip: r.try_get("ip")?,
        detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
    })
}
