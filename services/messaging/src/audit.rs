//! Identity audit records onto the bus as `civichub.auth.<event>`.
//!
//! The audit table is written in the same transaction as every login,
//! logout and token, so it already is a transactional outbox: this tailer
//! moves each record into the bus outbox (envelope id `audit-<id>`) and
//! advances its cursor in one transaction, so none is lost or doubled.

use std::time::Duration;

use civichub_store::{Backend, Row};
use serde_json::{Value, json};

use crate::{Bus, Envelope, Result, outbox, subjects};

const CURSOR: &str = "audit_events";

/// Moves up to `limit` new audit records into the bus outbox; returns how many.
pub async fn forward_audit(bus: &Bus, limit: i64) -> Result<usize> {
    let db = bus.db();
    let position: i64 = sqlx::query("SELECT position FROM bus_cursors WHERE name = $1")
        .bind(CURSOR)
        .fetch_optional(db.pool())
        .await?
        .map(|r| r.try_get("position"))
        .transpose()?
        .unwrap_or(0);
    // On PostgreSQL a lower id can commit after a higher one; records a few
    // seconds old have all committed. SQLite has one writer, so no such gap.
    let settled = match db.backend() {
        Backend::Postgres => civichub_store::now() - 2,
        Backend::Sqlite => i64::MAX,
    };
    let rows = sqlx::query(
        "SELECT id, at, event, user_id, client_id, ip, detail FROM audit_events WHERE id > $1 AND at <= $2 ORDER BY id LIMIT $3",
    )
    .bind(position)
    .bind(settled)
    .bind(limit)
    .fetch_all(db.pool())
    .await?;
    let Some(last) = rows.last().map(|r| r.try_get::<i64, _>("id")).transpose()? else { return Ok(0) };
    let mut tx = db.begin().await?;
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let event: String = row.try_get("event")?;
        let at: i64 = row.try_get("at")?;
        let detail: String = row.try_get("detail")?;
        let mut env = Envelope::new(
            &format!("auth.{event}"),
            "civichub/identity",
            None,
            json!({
                "event": event,
                "at": at,
                "user_id": row.try_get::<Option<String>, _>("user_id")?,
                "client_id": row.try_get::<Option<String>, _>("client_id")?,
                "ip": row.try_get::<Option<String>, _>("ip")?,
                "detail": serde_json::from_str::<Value>(&detail).unwrap_or(Value::Null),
            }),
        );
        env.id = format!("audit-{id}");
        env.trace_id = env.id.clone();
        if let Some(t) = chrono::DateTime::from_timestamp(at, 0) {
            env.time = t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        }
        outbox::enqueue(&mut tx, &subjects::auth(&event), &env)?;
    }
    let moved = sqlx::query("UPDATE bus_cursors SET position = $2 WHERE name = $1 AND position = $3")
        .bind(CURSOR)
        .bind(last)
        .bind(position)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if moved == 0 {
        let inserted = sqlx::query("INSERT INTO bus_cursors (name, position) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(CURSOR)
            .bind(last)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted == 0 {
            // Another node moved the cursor first: its transaction carried these records.
            tx.rollback().await?;
            return Ok(0);
        }
    }
    tx.commit().await?;
    bus.kick();
    Ok(rows.len())
}

/// Forwards audit records until the process ends.
pub fn spawn_audit_forwarder(bus: Bus) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match forward_audit(&bus, 500).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!("audit forwarder: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}
