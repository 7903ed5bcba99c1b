//! Sign-in through an upstream identity provider: DingTalk, or an upstream
//! OpenID Connect provider. Each is an [`Upstream`] (the adapter lives with
//! the integration); this module keeps the logins in flight and decides
//! which CivicHub account an upstream account is.
//!
//! A login in flight is a row of `federation_flows`, keyed by the `state`
//! sent upstream, so the callback may reach any hub node and works once.

use std::collections::HashMap;

use async_trait::async_trait;
use civichub_store::{Db, Row, now, random_token, sha256_hex};
use url::Url;

use crate::{Error, Result};

/// How long a browser may stay at the upstream before coming back.
pub(crate) const FLOW_SECS: i64 = 600;

/// A login in flight, as the upstream needs it.
#[derive(Clone, Debug)]
pub struct Flow {
    /// The `state` sent upstream and expected back.
    pub state: String,
    /// The `nonce` for an ID token.
    pub nonce: String,
    /// The PKCE code verifier (RFC 7636); the upstream gets its S256 challenge.
    pub pkce_verifier: String,
}

/// Who the upstream says logged in; only what it vouches for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// The account's stable key at the upstream (DingTalk userid, OIDC `sub`).
    pub subject: String,
    /// Display name.
    pub name: Option<String>,
    /// E-mail address the upstream has verified.
    pub verified_email: Option<String>,
    /// Mobile number the upstream has verified.
    pub verified_phone: Option<String>,
    /// The upstream's session id (`sid`), for its Back-Channel Logout.
    pub session: Option<String>,
}

/// Whom an upstream's logout token logs out: an upstream session, or every
/// session of an upstream account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamLogout {
    /// The upstream account (`sub`).
    pub subject: Option<String>,
    /// The upstream session (`sid`).
    pub session: Option<String>,
}

/// Why an upstream login did not give an identity.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream answered, and the answer is no: another organisation, an
    /// account the organisation does not know, a refused consent. Shown to the person.
    #[error("{0}")]
    Refused(String),
    /// The upstream could not be asked or answered wrongly (a bad token, a
    /// failed signature): a fault, logged, with a generic message shown.
    #[error("{0}")]
    Failed(String),
}

/// An upstream identity provider.
#[async_trait]
pub trait Upstream: Send + Sync + std::fmt::Debug {
    /// Short name in paths and account links: `dingtalk`, `zjzw`.
    fn name(&self) -> &str;
    /// The text of its button on the login page.
    fn label(&self) -> &str;
    /// The `amr` value of a login through it (`dingtalk`, `fed`).
    fn amr(&self) -> &str;
    /// Whether an unlinked account may be matched by its verified mobile number.
    fn links_by_phone(&self) -> bool {
        false
    }
    /// Whether an unlinked account may be matched by its verified e-mail address.
    fn links_by_email(&self) -> bool {
        false
    }
    /// Where to send the browser to log in; it comes back to `redirect_uri`.
    async fn authorize_url(&self, flow: &Flow, redirect_uri: &str) -> std::result::Result<Url, UpstreamError>;
    /// Finishes the login from the callback's query parameters.
    async fn finish(&self, flow: &Flow, query: &HashMap<String, String>, redirect_uri: &str) -> std::result::Result<ExternalIdentity, UpstreamError>;
    /// Checks a Back-Channel Logout token the upstream sent (OpenID Connect
    /// Back-Channel Logout 1.0); by default, upstreams send none.
    async fn logout(&self, _logout_token: &str) -> std::result::Result<UpstreamLogout, UpstreamError> {
        Err(UpstreamError::Refused(format!("{} sends no back-channel logout", self.name())))
    }
}

/// A pending link: an upstream account waiting for a password login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingLink {
    /// The upstream.
    pub provider: String,
    /// Its account.
    pub subject: String,
    /// Its display name, to say whose account it is.
    pub name: Option<String>,
}

/// The logins in flight and the account links.
#[derive(Clone, Debug)]
pub struct Federation {
    db: Db,
}

impl Federation {
    /// In `db`.
    pub fn new(db: Db) -> Federation {
        Federation { db }
    }

    /// Starts a login through `provider` that returns to `return_to`; with
    /// `link`, it links the upstream account to the person signed in instead.
    /// Only the browser holding `browser` (a secret kept in a cookie) can
    /// complete it.
    pub async fn begin(&self, provider: &str, return_to: &str, link: bool, browser: &str) -> Result<Flow> {
        let flow = Flow { state: random_token(24), nonce: random_token(24), pkce_verifier: random_token(48) };
        sqlx::query(
            "INSERT INTO federation_flows (state, provider, nonce, pkce_verifier, return_to, expires_at, intent, browser) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&flow.state)
        .bind(provider)
        .bind(&flow.nonce)
        .bind(&flow.pkce_verifier)
        .bind(return_to)
        .bind(now() + FLOW_SECS)
        .bind(link.then_some("link"))
        .bind(sha256_hex(browser))
        .execute(self.db.pool())
        .await?;
        Ok(flow)
    }

    /// Takes the login in flight with `state` through `provider`, in the
    /// browser that started it: it works once, and not after it expired.
    /// Returns it with where to go afterwards and whether it links an account
    /// rather than signs in.
    pub async fn take(&self, provider: &str, state: &str, browser: &str) -> Result<Option<(Flow, String, bool)>> {
        let mut tx = self.db.begin().await?;
        let row = sqlx::query(
            "SELECT nonce, pkce_verifier, return_to, intent FROM federation_flows \
             WHERE state = $1 AND provider = $2 AND subject IS NULL AND expires_at >= $3 AND browser = $4",
        )
        .bind(state)
        .bind(provider)
        .bind(now())
        .bind(sha256_hex(browser))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let deleted = sqlx::query("DELETE FROM federation_flows WHERE state = $1").bind(state).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        if deleted != 1 {
            return Ok(None);
        }
        let flow = Flow { state: state.to_owned(), nonce: row.try_get("nonce")?, pkce_verifier: row.try_get("pkce_verifier")? };
        let link = row.try_get::<Option<String>, _>("intent")?.as_deref() == Some("link");
        Ok(Some((flow, row.try_get("return_to")?, link)))
    }

    /// The user linked to `subject` at `provider`.
    pub async fn linked(&self, provider: &str, subject: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT user_id FROM user_links WHERE provider = $1 AND subject = $2")
            .bind(provider)
            .bind(subject)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.map(|r| r.try_get("user_id")).transpose()?)
    }

    /// The one enabled user with this mobile number or e-mail address, if exactly one.
    pub async fn only_user_with(&self, column: Contact, value: &str) -> Result<Option<String>> {
        let sql = match column {
            Contact::Phone => "SELECT id FROM users WHERE phone = $1 AND disabled = 0 LIMIT 2",
            Contact::Email => "SELECT id FROM users WHERE lower(email) = lower($1) AND email_verified = 1 AND disabled = 0 LIMIT 2",
        };
        let rows = sqlx::query(sql).bind(value).fetch_all(self.db.pool()).await?;
        match rows.as_slice() {
            [one] => Ok(Some(one.try_get("id")?)),
            _ => Ok(None),
        }
    }

    /// The upstream accounts linked to `user_id`: (provider, subject), by provider.
    pub async fn links_of(&self, user_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT provider, subject FROM user_links WHERE user_id = $1 ORDER BY provider").bind(user_id).fetch_all(self.db.pool()).await?;
        rows.iter().map(|r| Ok((r.try_get("provider")?, r.try_get("subject")?))).collect()
    }

    /// Removes `user_id`'s link at `provider`; whether there was one. The
    /// last way in of a person without a password is kept: removing it would
    /// lock them out.
    pub async fn unlink(&self, user_id: &str, provider: &str) -> Result<bool> {
        let links = self.links_of(user_id).await?;
        if !links.iter().any(|(p, _)| p == provider) {
            return Ok(false);
        }
        // A member the provider's directory keeps is known to it by this link:
        // without it, the directory would no longer disable them when they leave.
        // (Read before the transaction, which on PostgreSQL holds the person's
        // row: no second connection is taken while it does.)
        let kept = crate::directory::keeps(&self.db, provider, user_id, &links).await?;
        let mut tx = self.db.begin().await?;
        crate::users::keep_a_way_in(&mut tx, user_id, crate::users::WayIn::Link(provider)).await?;
        if kept {
            return Err(crate::Error::Invalid(format!("this account is kept by the {provider} directory, which knows it by this link")));
        }
        let n = sqlx::query("DELETE FROM user_links WHERE user_id = $1 AND provider = $2").bind(user_id).bind(provider).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Remembers that SSO session `session_id` came from `provider`'s account `who`.
    pub async fn remember_session(&self, session_id: &str, provider: &str, who: &ExternalIdentity) -> Result<()> {
        sqlx::query("DELETE FROM upstream_sessions WHERE session_id = $1").bind(session_id).execute(self.db.pool()).await?;
        sqlx::query("INSERT INTO upstream_sessions (session_id, provider, subject, upstream_sid) VALUES ($1, $2, $3, $4)")
            .bind(session_id)
            .bind(provider)
            .bind(&who.subject)
            .bind(&who.session)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// The SSO sessions `provider`'s logout names: those of its session, else of its account.
    pub async fn sessions_of(&self, provider: &str, logout: &UpstreamLogout) -> Result<Vec<String>> {
        let rows = match (&logout.session, &logout.subject) {
            (Some(sid), _) => {
                sqlx::query("SELECT session_id FROM upstream_sessions WHERE provider = $1 AND upstream_sid = $2").bind(provider).bind(sid).fetch_all(self.db.pool()).await?
            }
            (None, Some(sub)) => {
                sqlx::query("SELECT session_id FROM upstream_sessions WHERE provider = $1 AND subject = $2").bind(provider).bind(sub).fetch_all(self.db.pool()).await?
            }
            (None, None) => Vec::new(),
        };
        rows.iter().map(|r| Ok(r.try_get("session_id")?)).collect()
    }

    /// Keeps an upstream account that matched nobody for a password login to
    /// link; returns the key the login page carries.
    pub async fn park(&self, provider: &str, who: &ExternalIdentity, return_to: &str, browser: &str) -> Result<String> {
        let key = random_token(24);
        sqlx::query(
            "INSERT INTO federation_flows (state, provider, nonce, pkce_verifier, return_to, subject, subject_name, expires_at, browser) \
             VALUES ($1, $2, '', '', $3, $4, $5, $6, $7)",
        )
        .bind(&key)
        .bind(provider)
        .bind(return_to)
        .bind(&who.subject)
        .bind(&who.name)
        .bind(now() + FLOW_SECS)
        .bind(sha256_hex(browser))
        .execute(self.db.pool())
        .await?;
        Ok(key)
    }

    /// The parked account under `key`, still there, for the browser it was parked in.
    pub async fn parked(&self, key: &str, browser: &str) -> Result<Option<PendingLink>> {
        let row = sqlx::query(
            "SELECT provider, subject, subject_name FROM federation_flows WHERE state = $1 AND subject IS NOT NULL AND expires_at >= $2 AND browser = $3",
        )
            .bind(key)
            .bind(now())
            .bind(sha256_hex(browser))
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| Ok(PendingLink { provider: r.try_get("provider")?, subject: r.try_get("subject")?, name: r.try_get("subject_name")? })).transpose()
    }

    /// Takes the parked account under `key` (once), in the browser it was parked in.
    pub async fn unpark(&self, key: &str, browser: &str) -> Result<Option<PendingLink>> {
        let Some(pending) = self.parked(key, browser).await? else { return Ok(None) };
        let deleted = sqlx::query("DELETE FROM federation_flows WHERE state = $1").bind(key).execute(self.db.pool()).await?.rows_affected();
        Ok((deleted == 1).then_some(pending))
    }
}

/// A contact detail an upstream vouches for.
#[derive(Clone, Copy, Debug)]
pub enum Contact {
    /// Mobile number.
    Phone,
    /// E-mail address.
    Email,
}

impl Federation {
    /// Checks an upstream's name as paths and links take it: lower-case letters, digits and `-`.
    pub fn check_name(name: &str) -> Result<()> {
        if name.is_empty() || name.len() > 32 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(Error::Invalid(format!("upstream name {name:?}: use 1–32 lower-case letters, digits or '-'")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use civichub_store::{Db, DbUrl};

    use super::Federation;
    use crate::{Error, NewUser, Password, Users};

    #[tokio::test]
    async fn the_last_way_in_of_a_person_without_a_password_stays() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&DbUrl::sqlite_in(dir.path())).await.unwrap();
        let users = Users::new(db.clone());
        let user = users.add(&"synced".parse().unwrap(), Password::new("password-123".into()).unwrap(), NewUser::default()).await.unwrap();
        sqlx::query("UPDATE users SET password_hash = NULL WHERE id = $1").bind(&user.id).execute(db.pool()).await.unwrap();
        users.link_id(&user.id, "dingtalk", "zhangsan").await.unwrap();
        users.link_id(&user.id, "dingtalk-union", "union-zhangsan").await.unwrap();
        let federation = Federation::new(db.clone());
        assert!(matches!(federation.unlink(&user.id, "dingtalk").await, Err(Error::Conflict(_))), "DingTalk is the only way in");
        users.link_id(&user.id, "zjzw", "sub-1").await.unwrap();
        assert!(
            matches!(federation.unlink(&user.id, "dingtalk").await, Err(Error::Invalid(_))),
            "the DingTalk directory keeps this account by its link: it stays while another way in remains"
        );
        assert!(federation.unlink(&user.id, "zjzw").await.unwrap(), "DingTalk remains");
        assert!(!federation.unlink(&user.id, "nowhere").await.unwrap(), "nothing to remove");

        // Someone who linked DingTalk themselves (no directory keeps them) may unlink it.
        let own = users.add(&"own".parse().unwrap(), Password::new("password-123".into()).unwrap(), NewUser::default()).await.unwrap();
        users.link_id(&own.id, "dingtalk", "lisi").await.unwrap();
        assert!(federation.unlink(&own.id, "dingtalk").await.unwrap());
    }
}
