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

/// A try at a secret, counted before the secret was checked
/// ([`Throttle::attempt`]).
#[derive(Debug)]
#[must_use = "a right secret hands its try back with Throttle::succeeded"]
pub struct Attempt {
    keys: Vec<(String, i64)>,
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

    /// Counts a try at a secret against every key (with its limit) before the
    /// secret is checked, so tries sent in parallel cannot outrun the count:
    /// `Err(until)` (nothing counted) when a key is locked or this try would
    /// be past its limit; the try that reaches a limit locks the key while it
    /// is checked. A wrong secret leaves the try counted; a right one hands it
    /// back ([`Throttle::succeeded`]).
    pub async fn attempt(&self, keys: &[(&str, i64)], settings: &Settings) -> Result<std::result::Result<Attempt, i64>> {
        let now = now();
        let mut tx = self.db.begin().await?;
        let mut refused: Option<i64> = None;
        for (key, limit) in keys {
            let row = sqlx::query(
                "INSERT INTO login_throttle (key, failures, window_start, locked_until) VALUES ($1, 1, $2, 0) \
                 ON CONFLICT (key) DO UPDATE SET \
                   failures = CASE WHEN login_throttle.window_start < $3 THEN 1 ELSE login_throttle.failures + 1 END, \
                   window_start = CASE WHEN login_throttle.window_start < $3 THEN $2 ELSE login_throttle.window_start END \
                 RETURNING failures, locked_until",
            )
            .bind(*key)
            .bind(now)
            .bind(now - settings.lockout_secs)
            .fetch_one(&mut *tx)
            .await?;
            let (failures, locked_until): (i64, i64) = (row.try_get("failures")?, row.try_get("locked_until")?);
            if locked_until > now || failures > *limit {
                let until = locked_until.max(now + 1);
                refused = Some(refused.map_or(until, |u| u.max(until)));
            } else if failures == *limit {
                sqlx::query("UPDATE login_throttle SET locked_until = $1 WHERE key = $2").bind(now + settings.lockout_secs).bind(*key).execute(&mut *tx).await?;
            }
        }
        if let Some(until) = refused {
            // A refused try is not counted.
            tx.rollback().await?;
            return Ok(Err(until));
        }
        tx.commit().await?;
        Ok(Ok(Attempt { keys: keys.iter().map(|(k, l)| ((*k).to_owned(), *l)).collect() }))
    }

    /// The secret of `attempt` was right: its try no longer counts (a lock
    /// it set is lifted), and the keys in `clear` start again from nothing.
    pub async fn succeeded(&self, attempt: Attempt, clear: &[&str]) -> Result<()> {
        let mut tx = self.db.begin().await?;
        for (key, limit) in &attempt.keys {
            if clear.contains(&key.as_str()) {
                sqlx::query("DELETE FROM login_throttle WHERE key = $1").bind(key).execute(&mut *tx).await?;
            } else {
                sqlx::query(
                    "UPDATE login_throttle SET failures = failures - 1, \
                     locked_until = CASE WHEN failures - 1 < $2 THEN 0 ELSE locked_until END WHERE key = $1 AND failures > 0",
                )
                .bind(key)
                .bind(*limit)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
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
}
