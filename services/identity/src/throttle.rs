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

/// A try at an account's secret, counted before the secret was checked
/// ([`Throttle::attempt`]).
#[derive(Debug)]
#[must_use = "a right secret hands its try back with Throttle::succeeded"]
pub struct Attempt {
    key: String,
    limit: i64,
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

    /// Until when (Unix seconds) any of `keys` is locked, if it is.
    pub async fn check(&self, keys: &[&str]) -> Result<Option<i64>> {
        let now = now();
        let mut until = None;
        for key in keys {
            let row = sqlx::query("SELECT locked_until FROM login_throttle WHERE key = $1")
                .bind(*key)
                .fetch_optional(self.db.pool())
                .await?;
            if let Some(row) = row {
                let t: i64 = row.try_get("locked_until")?;
                if t > now {
                    until = Some(until.map_or(t, |u: i64| u.max(t)));
                }
            }
        }
        Ok(until)
    }

    /// A try at an account's secret from an address, before the secret is
    /// checked: `Err(until)` when the address is locked (its failures are
    /// counted as they happen: an office behind one address logs many
    /// people in at once), or the account is, or this try would be past the
    /// account's limit. Otherwise the try is counted against the account, so
    /// guesses at it sent in parallel cannot outrun the count, and the try
    /// that reaches the limit locks it while it is checked. A wrong secret
    /// leaves the try counted; a right one hands it back
    /// ([`Throttle::succeeded`]).
    pub async fn attempt(&self, account: &str, address: &str, settings: &Settings) -> Result<std::result::Result<Attempt, i64>> {
        if let Some(until) = self.check(&[address]).await? {
            return Ok(Err(until));
        }
        let now = now();
        let limit = settings.max_failures_per_account;
        let mut tx = self.db.begin().await?;
        let (failures, locked_until) = count_in(&mut tx, account, now, settings).await?;
        if locked_until > now || failures > limit {
            // A refused try is not counted.
            tx.rollback().await?;
            return Ok(Err(locked_until.max(now + 1)));
        }
        if failures == limit {
            lock_in(&mut tx, account, now, settings).await?;
        }
        tx.commit().await?;
        Ok(Ok(Attempt { key: account.to_owned(), limit }))
    }

    /// The secret of `attempt` was right: its try no longer counts (a lock it
    /// set is lifted), or, with `start_again`, the account's count starts
    /// again from nothing.
    pub async fn succeeded(&self, attempt: Attempt, start_again: bool) -> Result<()> {
        let query = if start_again {
            sqlx::query("DELETE FROM login_throttle WHERE key = $1").bind(attempt.key)
        } else {
            sqlx::query(
                "UPDATE login_throttle SET failures = failures - 1, \
                 locked_until = CASE WHEN failures - 1 < $2 THEN 0 ELSE locked_until END WHERE key = $1 AND failures > 0",
            )
            .bind(attempt.key)
            .bind(attempt.limit)
        };
        let mut tx = self.db.begin().await?;
        query.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Counts a failure against `key`, locking it when it reaches `limit`
    /// within the window.
    pub async fn fail(&self, key: &str, limit: i64, settings: &Settings) -> Result<()> {
        let now = now();
        let mut tx = self.db.begin().await?;
        let (failures, _) = count_in(&mut tx, key, now, settings).await?;
        if failures >= limit {
            lock_in(&mut tx, key, now, settings).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Counts one more try against `key` (the first of a new window if the last
/// one is over); returns the count and until when the key was locked.
async fn count_in(tx: &mut civichub_store::Tx, key: &str, now: i64, settings: &Settings) -> Result<(i64, i64)> {
    let row = sqlx::query(
        "INSERT INTO login_throttle (key, failures, window_start, locked_until) VALUES ($1, 1, $2, 0) \
         ON CONFLICT (key) DO UPDATE SET \
           failures = CASE WHEN login_throttle.window_start < $3 THEN 1 ELSE login_throttle.failures + 1 END, \
           window_start = CASE WHEN login_throttle.window_start < $3 THEN $2 ELSE login_throttle.window_start END \
         RETURNING failures, locked_until",
    )
    .bind(key)
    .bind(now)
    .bind(now - settings.lockout_secs)
    .fetch_one(&mut **tx)
    .await?;
    Ok((row.try_get("failures")?, row.try_get("locked_until")?))
}

/// Locks `key` for the lockout time from `now`.
async fn lock_in(tx: &mut civichub_store::Tx, key: &str, now: i64, settings: &Settings) -> Result<()> {
    sqlx::query("UPDATE login_throttle SET locked_until = $1 WHERE key = $2").bind(now + settings.lockout_secs).bind(key).execute(&mut **tx).await?;
    Ok(())
}
