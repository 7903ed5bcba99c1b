//! Housekeeping: what has expired is deleted a day later, so the tables
//! hold live state and recent history, not everything ever issued. The audit
//! trail is kept.

use std::sync::Arc;
use std::time::Duration;

use civichub_store::now;
use serde::Serialize;

use crate::{Identity, Result};

/// How long expired rows are kept (for investigation) before they go.
pub const GRACE_SECS: i64 = 24 * 3600;

/// How long delivered (and given-up) outbox messages are kept.
pub const OUTBOX_KEEP_SECS: i64 = 7 * 24 * 3600;

/// What one sweep removed.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Swept {
    /// Authorization codes.
    pub codes: u64,
    /// Access and refresh tokens.
    pub tokens: u64,
    /// SSO sessions (with their client lists).
    pub sessions: u64,
    /// Delivered and given-up outbox messages.
    pub outbox: u64,
    /// Throttling counters.
    pub throttle: u64,
}

impl Identity {
    /// Deletes what expired more than [`GRACE_SECS`] before `at`.
    pub async fn sweep(&self, at: i64) -> Result<Swept> {
        let cutoff = at - GRACE_SECS;
        let mut tx = self.db.begin().await?;
        let mut run = async |sql: &'static str, bound: i64| -> Result<u64> {
            Ok(sqlx::query(sql).bind(bound).execute(&mut *tx).await?.rows_affected())
        };
        let codes = run("DELETE FROM auth_codes WHERE expires_at < $1", cutoff).await?;
        let tokens = run("DELETE FROM tokens WHERE expires_at < $1", cutoff).await?;
        run(
            "DELETE FROM session_clients WHERE sid IN (SELECT sid FROM sso_sessions WHERE expires_at < $1 OR ended_at < $1)",
            cutoff,
        )
        .await?;
        run("DELETE FROM upstream_sessions WHERE session_id IN (SELECT id FROM sso_sessions WHERE expires_at < $1 OR ended_at < $1)", cutoff).await?;
        let sessions = run("DELETE FROM sso_sessions WHERE expires_at < $1 OR ended_at < $1", cutoff).await?;
        let outbox = run("DELETE FROM outbox WHERE delivered_at < $1 OR dead_at < $1", at - OUTBOX_KEEP_SECS).await?;
        let throttle = run("DELETE FROM login_throttle WHERE locked_until < $1 AND window_start < $1", cutoff).await?;
        run("DELETE FROM federation_flows WHERE expires_at < $1", at).await?;
        run("DELETE FROM mfa_pending WHERE expires_at < $1", at).await?;
        run("DELETE FROM webauthn_ceremonies WHERE expires_at < $1", at).await?;
        tx.commit().await?;
        Ok(Swept { codes, tokens, sessions, outbox, throttle })
    }

    /// Sweeps every ten minutes until the process ends.
    pub(crate) async fn janitor(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(600)).await;
            match self.sweep(now()).await {
                Ok(swept) if swept != Swept::default() => tracing::info!("housekeeping removed {swept:?}"),
                Ok(_) => {}
                Err(e) => tracing::warn!("housekeeping: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use civichub_store::{Db, DbUrl, Row};

    use crate::{Identity, Settings};

    #[tokio::test]
    async fn expired_rows_go_a_day_later_and_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&DbUrl::sqlite_in(dir.path())).await.unwrap();
        let id = Identity::open(db.clone(), Settings::new("http://127.0.0.1:1".parse().unwrap())).await.unwrap();
        let now = 2_000_000_000;
        for (hash, expires) in [("old", now - 2 * 86400), ("recent", now - 3600), ("live", now + 600)] {
            sqlx::query(
                "INSERT INTO tokens (token_hash, kind, family, client_id, scope, grant_json, issued_at, expires_at) \
                 VALUES ($1, 'access', 'f', 'c', 's', '{}', 0, $2)",
            )
            .bind(hash)
            .bind(expires)
            .execute(db.pool())
            .await
            .unwrap();
        }
        sqlx::query("INSERT INTO auth_codes (code_hash, grant_json, family, expires_at) VALUES ('c', '{}', 'f', $1)")
            .bind(now - 3 * 86400)
            .execute(db.pool())
            .await
            .unwrap();
        let swept = id.sweep(now).await.unwrap();
        assert_eq!((swept.tokens, swept.codes), (1, 1));
        let left: Vec<String> = sqlx::query("SELECT token_hash FROM tokens ORDER BY token_hash")
            .fetch_all(db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("token_hash"))
            .collect();
        assert_eq!(left, ["live", "recent"]);
    }
}
