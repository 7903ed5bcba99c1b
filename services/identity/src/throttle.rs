//! Login throttling: after repeated failures an account, and separately a
//! source address, is locked for a while. Counters live in the database so
//! every hub node sees the same ones.

use civichub_store::{Db, Row, now};

use crate::{Result, Settings};

/// The key counting an account's failures.
pub(crate) fn user_key(username: &str) -> String {
    format!("user:{username}")
}

/// The key counting a source address's failures.
pub(crate) fn ip_key(ip: Option<&str>) -> String {
    format!("ip:{}", ip.unwrap_or("unknown"))
}

/// Counts failures per key (`user:NAME`, `ip:ADDR`).
#[derive(Clone, Debug)]
pub struct Throttle {
    db: Db,
}

impl Throttle {
    /// Counters in `db`.
    pub fn new(db: Db) -> Self {
        Throttle { db }
    }

    /// Until when (Unix seconds) any of `keys` is locked, if it is, and
    /// which of them have failures counted.
    pub async fn check(&self, keys: &[&str]) -> Result<(Option<i64>, Vec<String>)> {
        let now = now();
        let mut until = None;
        let mut counted = Vec::new();
        for key in keys {
            let row = sqlx::query("SELECT locked_until FROM login_throttle WHERE key = $1")
                .bind(*key)
                .fetch_optional(self.db.pool())
                .await?;
            if let Some(row) = row {
                counted.push((*key).to_owned());
                let t: i64 = row.try_get("locked_until")?;
                if t > now {
                    until = Some(until.map_or(t, |u: i64| u.max(t)));
                }
            }
        }
        Ok((until, counted))
    }

    /// Counts a failure against `key`, locking it when it reaches `limit`
    /// within the window.
    pub async fn fail(&self, key: &str, limit: i64, settings: &Settings) -> Result<()> {
        let now = now();
        let window_start = now - settings.lockout_secs;
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO login_throttle (key, failures, window_start, locked_until) VALUES ($1, 1, $2, 0) \
             ON CONFLICT (key) DO UPDATE SET \
               failures = CASE WHEN login_throttle.window_start < $3 THEN 1 ELSE login_throttle.failures + 1 END, \
               window_start = CASE WHEN login_throttle.window_start < $3 THEN $2 ELSE login_throttle.window_start END",
        )
        .bind(key)
        .bind(now)
        .bind(window_start)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE login_throttle SET locked_until = $1 WHERE key = $2 AND failures >= $3")
            .bind(now + settings.lockout_secs)
            .bind(key)
            .bind(limit)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Clears the counter of `key` after a success.
    pub async fn clear(&self, key: &str) -> Result<()> {
        let mut tx = self.db.begin().await?;
        sqlx::query("DELETE FROM login_throttle WHERE key = $1").bind(key).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
