//! SSO sessions: one per browser login, shared by every client the person
//! then reaches without logging in again.

use civichub_store::{Backend, Db, Outbox, Row, Tx, now, random_token, sha256_hex};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{Actor, Audit};
use crate::{Result, Settings};

/// The cookie that carries the session.
pub const SESSION_COOKIE: &str = "civichub_session";

/// The outbox topic of Back-Channel Logout deliveries.
pub const BACKCHANNEL_TOPIC: &str = "identity.backchannel_logout";

/// A live SSO session.
#[derive(Clone, Debug)]
pub struct Session {
    /// Hash of the cookie value: the database key.
    pub id: String,
    /// The public session id (`sid` claim).
    pub sid: String,
    /// Whose session.
    pub user_id: String,
    /// When the person authenticated (Unix seconds).
    pub auth_time: i64,
    /// How (`pwd`, …).
    pub amr: Vec<String>,
    /// The assurance level reached.
    pub acr: String,
    /// When the session ends by itself.
    pub expires_at: i64,
}

/// Live sessions (not ended, not expired at `$2`, of an enabled user), narrowed by `$tail` on `$1`.
macro_rules! live_sessions {
    ($tail:literal) => {
        concat!(
            "SELECT s.id, s.sid, s.user_id, s.auth_time, s.amr, s.acr, s.expires_at FROM sso_sessions s \
             JOIN users u ON u.id = s.user_id \
             WHERE s.ended_at IS NULL AND s.expires_at > $2 AND u.disabled = 0 ",
            $tail
        )
    };
}

fn session_from_row(row: &sqlx::any::AnyRow) -> Result<Session> {
    let amr: String = row.try_get("amr")?;
    Ok(Session {
        id: row.try_get("id")?,
        sid: row.try_get("sid")?,
        user_id: row.try_get("user_id")?,
        auth_time: row.try_get("auth_time")?,
        amr: amr.split_whitespace().map(str::to_owned).collect(),
        acr: row.try_get("acr")?,
        expires_at: row.try_get("expires_at")?,
    })
}

/// A pending Back-Channel Logout delivery, as kept in the outbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackchannelLogout {
    /// The client to tell.
    pub client_id: String,
    /// Its back-channel logout URI.
    pub uri: String,
    /// The user.
    pub sub: String,
    /// The ended session.
    pub sid: String,
}

/// SSO sessions in the database.
#[derive(Clone, Debug)]
pub struct Sessions {
    db: Db,
}

impl Sessions {
    /// Sessions in `db`.
    pub fn new(db: Db) -> Self {
        Sessions { db }
    }

    /// Starts a session in `tx`; returns the cookie value (shown only to the
    /// browser) and the session.
    pub async fn start_in(tx: &mut Tx, user_id: &str, amr: &[&str], acr: &str, ip: Option<&str>, settings: &Settings) -> Result<(String, Session)> {
        let cookie = random_token(32);
        let now = now();
        let session = Session {
            id: sha256_hex(&cookie),
            sid: random_token(16),
            user_id: user_id.to_owned(),
            auth_time: now,
            amr: amr.iter().map(|s| (*s).to_owned()).collect(),
            acr: acr.to_owned(),
            expires_at: now + settings.session_ttl,
        };
        sqlx::query(
            "INSERT INTO sso_sessions (id, sid, user_id, auth_time, amr, acr, ip, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&session.id)
        .bind(&session.sid)
        .bind(&session.user_id)
        .bind(session.auth_time)
        .bind(session.amr.join(" "))
        .bind(&session.acr)
        .bind(ip)
        .bind(now)
        .bind(session.expires_at)
        .execute(&mut **tx)
        .await?;
        Ok((cookie, session))
    }

    /// The live session a cookie value names, if any: not ended, not expired,
    /// and its user not disabled.
    pub async fn from_cookie(&self, cookie: Option<&str>) -> Result<Option<Session>> {
        let Some(cookie) = cookie.filter(|c| !c.is_empty() && c.len() < 200) else {
            return Ok(None);
        };
        self.by_id(&sha256_hex(cookie)).await
    }

    /// The live sessions of `user_id`, newest first.
    pub async fn of_user(&self, user_id: &str) -> Result<Vec<Session>> {
        let rows = sqlx::query(live_sessions!("AND s.user_id = $1 ORDER BY s.auth_time DESC")).bind(user_id).bind(now()).fetch_all(self.db.pool()).await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Whether the session `sid` (as ID tokens carry it) is still live.
    pub async fn is_live(&self, sid: &str) -> Result<bool> {
        Ok(sqlx::query(live_sessions!("AND s.sid = $1")).bind(sid).bind(now()).fetch_optional(self.db.pool()).await?.is_some())
    }

    /// The live session with database key `id`.
    pub async fn by_id(&self, id: &str) -> Result<Option<Session>> {
        let row = sqlx::query(live_sessions!("AND s.id = $1")).bind(id).bind(now()).fetch_optional(self.db.pool()).await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// Ends a session: revokes its session-bound tokens and, in the same
    /// transaction, queues a Back-Channel Logout for every client of the
    /// session that registered a back-channel URI.
    pub async fn end(&self, session: &Session, ip: Option<&str>) -> Result<usize> {
        let mut tx = self.db.begin().await?;
        let queued = end_in(&mut tx, session, ip).await?;
        tx.commit().await?;
        Ok(queued)
    }
}

/// Whether tokens may still be written for a person's grant from the login
/// `sid`, asked inside the transaction that writes them: the person
/// `user_id` is enabled and, unless `outlives_session` (a refresh of an
/// `offline_access` grant, which a logout leaves alone), the session is live.
///
/// On PostgreSQL the rows asked about stay locked (`FOR SHARE`) until that
/// transaction ends: the person's first, then the session's, the order in
/// which a disable or a password change takes them for update
/// ([`end_all_in`]), so a batch of token writes and such a change never wait
/// for each other in a circle. A logout, a disable or a password change that
/// has not committed yet holds its row, so this waits for it and then sees
/// it; one that comes after waits for the new tokens to commit and then
/// revokes them with the rest. (On SQLite write transactions take turns,
/// which gives the same.)
pub(crate) async fn may_issue_in(tx: &mut Tx, user_id: &str, sid: &str, outlives_session: bool) -> Result<bool> {
    if !take_person_in(tx, user_id, " FOR SHARE").await? {
        return Ok(false);
    }
    if outlives_session {
        return Ok(true);
    }
    let session = format!("{}{}", live_sessions!("AND s.sid = $1 AND s.user_id = $3"), Backend::of(tx).locking(" FOR SHARE OF s"));
    Ok(sqlx::query(sqlx::AssertSqlSafe(session)).bind(sid).bind(now()).bind(user_id).fetch_optional(&mut **tx).await?.is_some())
}

/// Whether `user_id` is enabled, its row taken in `tx` with `lock` on
/// PostgreSQL: `FOR SHARE` before writing the person's tokens (an issue, a
/// replayed code revoking its family), `FOR UPDATE` before revoking all of
/// them ([`end_all_in`]). Every such write takes the person first: a token
/// write that did then commits before the revocation reads, and one that
/// comes after sees its outcome.
pub(crate) async fn take_person_in(tx: &mut Tx, user_id: &str, lock: &'static str) -> Result<bool> {
    let query = format!("SELECT disabled FROM users WHERE id = $1{}", Backend::of(tx).locking(lock));
    let row = sqlx::query(sqlx::AssertSqlSafe(query)).bind(user_id).fetch_optional(&mut **tx).await?;
    Ok(row.map(|r| r.try_get::<i64, _>("disabled")).transpose()? == Some(0))
}

/// Ends every live session of `user_id` but `keep` inside `tx`, each as
/// [`Sessions::end`] does (back-channel logouts queued), and revokes every
/// token of the person not bound to `keep`, the long-lived `offline_access`
/// ones included: for a disabled person, or a changed password.
pub(crate) async fn end_all_in(tx: &mut Tx, user_id: &str, keep: Option<&Session>, ip: Option<&str>) -> Result<()> {
    take_person_in(tx, user_id, " FOR UPDATE").await?;
    let rows = sqlx::query(live_sessions!("AND s.user_id = $1")).bind(user_id).bind(now()).fetch_all(&mut **tx).await?;
    for row in &rows {
        let session = session_from_row(row)?;
        if keep.is_none_or(|k| k.id != session.id) {
            end_in(tx, &session, ip).await?;
        }
    }
    sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL AND (sid IS NULL OR sid <> $3)")
        .bind(now())
        .bind(user_id)
        .bind(keep.map_or("", |k| k.sid.as_str()))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn end_in(tx: &mut Tx, session: &Session, ip: Option<&str>) -> Result<usize> {
    let now = now();
    let ended = sqlx::query("UPDATE sso_sessions SET ended_at = $1 WHERE id = $2 AND ended_at IS NULL")
        .bind(now)
        .bind(&session.id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    if ended == 0 {
        return Ok(0);
    }
    // Tokens granted with offline_access outlive the session on purpose.
    sqlx::query(
        "UPDATE tokens SET revoked_at = $1 WHERE sid = $2 AND revoked_at IS NULL \
         AND (' ' || scope || ' ') NOT LIKE '% offline_access %'",
    )
    .bind(now)
    .bind(&session.sid)
    .execute(&mut **tx)
    .await?;
    let rows = sqlx::query(
        "SELECT c.client_id, c.backchannel_logout_uri FROM session_clients sc \
         JOIN clients c ON c.client_id = sc.client_id \
         WHERE sc.sid = $1 AND c.backchannel_logout_uri IS NOT NULL",
    )
    .bind(&session.sid)
    .fetch_all(&mut **tx)
    .await?;
    let mut queued = 0;
    for row in rows {
        let message = BackchannelLogout {
            client_id: row.try_get("client_id")?,
            uri: row.try_get("backchannel_logout_uri")?,
            sub: session.user_id.clone(),
            sid: session.sid.clone(),
        };
        Outbox::enqueue(tx, BACKCHANNEL_TOPIC, &message).await?;
        queued += 1;
    }
    Audit::record_in(
        tx,
        "logout",
        Actor { user_id: Some(&session.user_id), client_id: None, ip },
        json!({ "sid": session.sid, "backchannel_notices": queued }),
    )
    .await?;
    Ok(queued)
}

impl Sessions {
    /// Sets the password of `keep`'s person to `hash`, and in the same
    /// transaction ends every other session of the person and revokes every
    /// token not bound to `keep`: what was granted with the old password
    /// goes, offline tokens included, or nothing changes.
    pub async fn change_password(&self, keep: &Session, hash: &str, ip: Option<&str>) -> Result<()> {
        let mut tx = self.db.begin().await?;
        end_all_in(&mut tx, &keep.user_id, Some(keep), ip).await?;
        sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(hash)
            .bind(now())
            .bind(&keep.user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a fresh authentication in an existing session (prompt=login,
    /// max_age): same `sid`, new `auth_time`.
    pub async fn reauthenticate(&self, session: &Session, amr: &[&str], acr: &str) -> Result<()> {
        sqlx::query("UPDATE sso_sessions SET auth_time = $1, amr = $2, acr = $3 WHERE id = $4")
            .bind(now())
            .bind(amr.join(" "))
            .bind(acr)
            .bind(&session.id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }
}
