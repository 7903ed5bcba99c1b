//! Registered relying parties.

use civichub_store::{Db, Row, now, random_token, sha256_hex};
use serde::Serialize;
use subtle::ConstantTimeEq;

use crate::values::{ClientId, RedirectUri, SigningAlg};
use crate::{Error, Result};

/// The scopes every client may ask for.
pub const STANDARD_SCOPES: &[&str] = &["openid", "profile", "email", "phone", "offline_access", "department"];

/// A registered relying party.
#[derive(Clone, Debug, Serialize)]
pub struct Client {
    /// The client id.
    pub client_id: String,
    /// Whether the client holds no secret (browser or native apps); such
    /// clients must use PKCE with S256.
    pub public: bool,
    /// First-party clients are the city's own systems: no consent screen.
    pub first_party: bool,
    /// Redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may send the browser back to.
    pub post_logout_redirect_uris: Vec<String>,
    /// Back-Channel Logout 1.0 endpoint, if the client has one.
    pub backchannel_logout_uri: Option<String>,
    /// ID token signing algorithm.
    pub id_token_alg: String,
    /// Logins to this client need a second factor.
    pub require_mfa: bool,
    /// Scopes beyond the standard ones this client may ask for (e.g. `kb:read`).
    pub extra_scopes: Vec<String>,
    #[serde(skip)]
    secret_hash: Option<String>,
}

impl Client {
    /// Whether `scope` may be granted to this client.
    pub fn allows_scope(&self, scope: &str) -> bool {
        STANDARD_SCOPES.contains(&scope) || self.extra_scopes.iter().any(|s| s == scope)
    }

    /// Checks a presented secret in constant time.
    pub fn secret_matches(&self, presented: &[u8]) -> bool {
        let Some(stored) = &self.secret_hash else { return false };
        let Ok(presented) = std::str::from_utf8(presented) else { return false };
        sha256_hex(presented).as_bytes().ct_eq(stored.as_bytes()).into()
    }

    /// The signing algorithm of this client's ID tokens.
    pub fn signing_alg(&self) -> SigningAlg {
        self.id_token_alg.parse().unwrap_or(SigningAlg::Rs256)
    }
}

/// What an administrator gives when registering a client.
#[derive(Clone, Debug)]
pub struct NewClient {
    /// The id to register.
    pub client_id: ClientId,
    /// Redirect URIs.
    pub redirect_uris: Vec<RedirectUri>,
    /// Public (no secret) or confidential.
    pub public: bool,
    /// Skip consent.
    pub first_party: bool,
    /// Post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<RedirectUri>,
    /// Back-channel logout URI.
    pub backchannel_logout_uri: Option<RedirectUri>,
    /// ID token algorithm.
    pub id_token_alg: SigningAlg,
    /// Extra scopes.
    pub extra_scopes: Vec<String>,
    /// Logins need a second factor.
    pub require_mfa: bool,
}

fn lines(s: String) -> Vec<String> {
    s.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<Client> {
    let extra: String = row.try_get("extra_scopes")?;
    Ok(Client {
        client_id: row.try_get("client_id")?,
        public: row.try_get::<i64, _>("is_public")? != 0,
        first_party: row.try_get::<i64, _>("first_party")? != 0,
        redirect_uris: lines(row.try_get("redirect_uris")?),
        post_logout_redirect_uris: lines(row.try_get("post_logout_redirect_uris")?),
        backchannel_logout_uri: row.try_get("backchannel_logout_uri")?,
        id_token_alg: row.try_get("id_token_alg")?,
        require_mfa: row.try_get::<i64, _>("require_mfa")? != 0,
        extra_scopes: extra.split_whitespace().map(str::to_owned).collect(),
        secret_hash: row.try_get("secret_hash")?,
    })
}

/// The client registry on the hub's database.
#[derive(Clone, Debug)]
pub struct Clients {
    db: Db,
}

impl Clients {
    /// The registry in `db`.
    pub fn new(db: Db) -> Self {
        Clients { db }
    }

    /// Registers a client. For a confidential client it returns the secret,
    /// which is stored only as a hash and cannot be shown again.
    pub async fn add(&self, new: NewClient) -> Result<(Client, Option<String>)> {
        if self.get(new.client_id.as_str()).await?.is_some() {
            return Err(Error::Conflict(format!("client {}", new.client_id)));
        }
        if new.redirect_uris.is_empty() && new.public {
            return Err(Error::Invalid("a public client needs at least one --redirect-uri".into()));
        }
        for scope in &new.extra_scopes {
            if scope.is_empty() || scope.chars().any(|c| c.is_whitespace() || c == '"' || c == '\\') {
                return Err(Error::Invalid(format!("invalid scope {scope:?}")));
            }
        }
        let secret = (!new.public).then(|| random_token(32));
        let join = |v: &[RedirectUri]| v.iter().map(RedirectUri::as_str).collect::<Vec<_>>().join("\n");
        sqlx::query(
            "INSERT INTO clients (client_id, secret_hash, is_public, first_party, redirect_uris, \
             post_logout_redirect_uris, backchannel_logout_uri, id_token_alg, extra_scopes, created_at, require_mfa) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(new.client_id.as_str())
        .bind(secret.as_deref().map(sha256_hex))
        .bind(i64::from(new.public))
        .bind(i64::from(new.first_party))
        .bind(join(&new.redirect_uris))
        .bind(join(&new.post_logout_redirect_uris))
        .bind(new.backchannel_logout_uri.as_ref().map(|u| u.as_str().to_owned()))
        .bind(new.id_token_alg.as_str())
        .bind(new.extra_scopes.join(" "))
        .bind(now())
        .bind(i64::from(new.require_mfa))
        .execute(self.db.pool())
        .await?;
        let client = self
            .get(new.client_id.as_str())
            .await?
            .ok_or_else(|| Error::NotFound(format!("client {}", new.client_id)))?;
        Ok((client, secret))
    }

    /// A client by id.
    pub async fn get(&self, client_id: &str) -> Result<Option<Client>> {
        let row = sqlx::query("SELECT * FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Every client, by id.
    pub async fn list(&self) -> Result<Vec<Client>> {
        let rows = sqlx::query("SELECT * FROM clients ORDER BY client_id").fetch_all(self.db.pool()).await?;
        rows.iter().map(from_row).collect()
    }

    /// Sets whether logins to `client_id` need a second factor: how many of
    /// its tokens were revoked (when it becomes required, every token it
    /// holds, so no one keeps a single-factor login to it), or none if there
    /// is no such client.
    pub async fn set_require_mfa(&self, client_id: &str, required: bool) -> Result<Option<u64>> {
        let mut tx = self.db.begin().await?;
        let n = sqlx::query("UPDATE clients SET require_mfa = $2 WHERE client_id = $1 AND require_mfa <> $2")
            .bind(client_id)
            .bind(i64::from(required))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let revoked = if n == 1 && required { Self::revoke_tokens_in(&mut tx, client_id).await? } else { 0 };
        tx.commit().await?;
        if n == 0 && self.get(client_id).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(revoked))
    }

    async fn revoke_tokens_in(tx: &mut civichub_store::Tx, client_id: &str) -> Result<u64> {
        Ok(sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE client_id = $2 AND revoked_at IS NULL")
            .bind(now())
            .bind(client_id)
            .execute(&mut **tx)
            .await?
            .rows_affected())
    }

    /// Removes a client and revokes every token it holds.
    pub async fn remove(&self, client_id: &ClientId) -> Result<()> {
        let mut tx = self.db.begin().await?;
        let gone = sqlx::query("DELETE FROM clients WHERE client_id = $1")
            .bind(client_id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Err(Error::NotFound(format!("client {client_id}")));
        }
        Self::revoke_tokens_in(&mut tx, client_id.as_str()).await?;
        sqlx::query("DELETE FROM consents WHERE client_id = $1")
            .bind(client_id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
