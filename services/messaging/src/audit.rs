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
/// On PostgreSQL, the transaction of the last record forwarded.
const TX_CURSOR: &str = "audit_events_tx";

async fn cursor(bus: &Bus, name: &str) -> Result<i64> {
    Ok(sqlx::query("SELECT position FROM bus_cursors WHERE name = $1")
        .bind(name)
        .fetch_optional(bus.db().pool())
        .await?
        .map(|r| r.try_get("position"))
        .transpose()?
        .unwrap_or(0))
}

/// Moves up to `limit` new audit records into the bus outbox (those the bus
/// carries: on the embedded bus, only what a consumer takes); returns how
/// many records it read.
pub async fn forward_audit(bus: &Bus, limit: i64) -> Result<usize> {
    let db = bus.db();
    let position = cursor(bus, CURSOR).await?;
    // On PostgreSQL a lower id can commit after a higher one: records are read
    // in the order of the transactions that wrote them, and only those of
    // transactions older than every one still running (all committed or gone),
    // so a late commit is read late, not skipped. SQLite has one writer.
    let postgres = db.backend() == Backend::Postgres;
    let rows = match db.backend() {
        Backend::Postgres => {
            sqlx::query(
                "SELECT id, tx, at, event, user_id, client_id, ip, detail FROM audit_events \
                 WHERE (tx, id) > ($1, $2) AND tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint \
                 ORDER BY tx, id LIMIT $3",
            )
            .bind(cursor(bus, TX_CURSOR).await?)
            .bind(position)
            .bind(limit)
            .fetch_all(db.pool())
            .await?
        }
        Backend::Sqlite => {
            sqlx::query("SELECT id, at, event, user_id, client_id, ip, detail FROM audit_events WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(position)
                .bind(limit)
                .fetch_all(db.pool())
                .await?
        }
    };
    let Some(last_row) = rows.last() else { return Ok(0) };
    let last: i64 = last_row.try_get("id")?;
    let mut tx = db.begin().await?;
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        let event: String = row.try_get("event")?;
        let at: i64 = row.try_get("at")?;
        let detail: String = row.try_get("detail")?;
        let subject = subjects::auth(&event);
        if !bus.carries(&subject) {
            continue;
        }
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
        outbox::enqueue(&mut tx, &subject, &env)?;
    }
    if postgres {
        sqlx::query("INSERT INTO bus_cursors (name, position) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET position = excluded.position")
            .bind(TX_CURSOR)
            .bind(last_row.try_get::<i64, _>("tx")?)
            .execute(&mut *tx)
            .await?;
    }
    // The id cursor is the compare-and-set that keeps two nodes from both forwarding.
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

/// Forwards audit records until the process ends: a full batch at once,
/// otherwise what gathered in the last half second (one write for many
/// records, not one for each). Start it after every consumer is registered.
pub fn spawn_audit_forwarder(bus: Bus) -> tokio::task::JoinHandle<()> {
    const BATCH: i64 = 500;
    tokio::spawn(async move {
        loop {
            match forward_audit(&bus, BATCH).await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!("audit forwarder: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use civichub_store::{Db, DbUrl, Row};

    use super::*;
    use crate::Consumer;
    use crate::consumer::Nothing;

    #[tokio::test]
    async fn the_embedded_bus_takes_only_the_audit_events_a_consumer_wants() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::connect(&DbUrl::sqlite_in(dir.path())).await.expect("db");
        let bus = Bus::local(db.clone());
        bus.register(Consumer::new("notices", "civichub.auth.password.>", Arc::new(Nothing)));
        for event in ["token.issued", "password.changed", "login.succeeded"] {
            sqlx::query("INSERT INTO audit_events (at, event, detail) VALUES (1, $1, '{}')").bind(event).execute(db.pool()).await.expect("audit");
        }
        assert!(bus.carries("civichub.auth.password.changed"));
        assert!(!bus.carries("civichub.auth.token.issued"));

        assert_eq!(forward_audit(&bus, 500).await.expect("forward"), 3, "all three records read");
        let subjects: Vec<String> = sqlx::query("SELECT subject FROM bus_outbox")
            .fetch_all(db.pool())
            .await
            .expect("outbox")
            .iter()
            .map(|r| r.try_get("subject").expect("subject"))
            .collect();
        assert_eq!(subjects, ["civichub.auth.password.changed"], "nobody on the embedded bus takes the others");
        assert_eq!(forward_audit(&bus, 500).await.expect("forward again"), 0, "the cursor moved past all three");
    }
}
