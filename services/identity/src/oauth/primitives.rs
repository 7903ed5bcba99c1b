//! oxide-auth's registrar, authorizer and issuer, kept in the hub's database
//! so every hub node sees the same clients, codes and tokens.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use civichub_store::{Row, Tx, now, ordered_id, ordered_secret, secret_key};
use oxide_auth::primitives::grant::Grant;
use oxide_auth::primitives::issuer::{IssuedToken, RefreshedToken, TokenType};
use oxide_auth::primitives::registrar::{BoundClient, ClientUrl, ExactUrl, PreGrant, RegisteredUrl, RegistrarError};
use oxide_auth::primitives::scope::Scope;
use oxide_auth_async::primitives::{Authorizer, Issuer, Registrar};
use serde_json::json;

use crate::audit::{Actor, Audit};
use crate::oauth::grant::StoredGrant;
use crate::oauth::writer::{AuditRow, CodeRow, Rows, TokenRow};
use crate::oidc::{self, IdTokenInput, LoginContext};
use crate::sessions::may_issue_in;
use crate::{Error, Identity, Result};

/// Which kind of grant the registrar negotiates a scope for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// A person signs in (authorization code).
    User,
    /// A system acts for itself (client credentials): only service scopes.
    Service,
}

/// oxide-auth's registrar over the client table.
pub struct DbRegistrar {
    id: Arc<Identity>,
    flow: Flow,
    /// The client this request is about: oxide-auth asks for it up to three
    /// times, and the issuer needs it too.
    pub(crate) seen: SeenClient,
}

/// The client a request has read, shared by its registrar and issuer so
/// that one request reads it once.
pub(crate) type SeenClient = Arc<std::sync::Mutex<Option<crate::Client>>>;

/// Client `client_id`: the one in `seen` if it is that one, else read and
/// kept there.
async fn read_client(id: &Identity, seen: &SeenClient, client_id: &str) -> Result<Option<crate::Client>> {
    if let Some(client) = seen.lock().ok().and_then(|s| s.as_ref().filter(|c| c.client_id == client_id).cloned()) {
        return Ok(Some(client));
    }
    let client = id.clients.get(client_id).await?;
    if let (Some(client), Ok(mut seen)) = (&client, seen.lock()) {
        *seen = Some(client.clone());
    }
    Ok(client)
}

impl DbRegistrar {
    /// A registrar negotiating scopes for `flow`.
    pub fn new(id: Arc<Identity>, flow: Flow) -> Self {
        DbRegistrar { id, flow, seen: SeenClient::default() }
    }

    /// A registrar for a request that has already read its client.
    pub fn knowing(id: Arc<Identity>, flow: Flow, client: crate::Client) -> Self {
        DbRegistrar { id, flow, seen: Arc::new(std::sync::Mutex::new(Some(client))) }
    }

    async fn client(&self, client_id: &str) -> std::result::Result<crate::Client, RegistrarError> {
        read_client(&self.id, &self.seen, client_id)
            .await
            .map_err(|_| RegistrarError::PrimitiveError)?
            .ok_or(RegistrarError::Unspecified)
    }
}

#[async_trait]
impl Registrar for DbRegistrar {
    async fn bound_redirect<'a>(&self, bound: ClientUrl<'a>) -> std::result::Result<BoundClient<'a>, RegistrarError> {
        let client = self.client(&bound.client_id).await?;
        let redirect_uri = match bound.redirect_uri {
            Some(uri) => {
                if !client.redirect_uris.iter().any(|r| r == uri.as_str()) {
                    return Err(RegistrarError::Unspecified);
                }
                RegisteredUrl::Exact(uri.into_owned())
            }
            None => match client.redirect_uris.first() {
                Some(first) => RegisteredUrl::Exact(ExactUrl::new(first.clone()).map_err(|_| RegistrarError::PrimitiveError)?),
                // Client credentials: no redirect at all.
                None => RegisteredUrl::Semantic(
                    url::Url::parse("urn:ietf:wg:oauth:2.0:oob").map_err(|_| RegistrarError::PrimitiveError)?,
                ),
            },
        };
        Ok(BoundClient { client_id: bound.client_id, redirect_uri: Cow::Owned(redirect_uri) })
    }

    async fn negotiate<'a>(&self, bound: BoundClient<'a>, scope: Option<Scope>) -> std::result::Result<PreGrant, RegistrarError> {
        let client = self.client(&bound.client_id).await?;
        let requested = scope.map(|s| s.to_string()).unwrap_or_default();
        let granted: Vec<&str> = match self.flow {
            Flow::User => {
                let asked: Vec<&str> = requested.split_whitespace().filter(|s| client.allows_scope(s)).collect();
                if asked.is_empty() { vec!["openid"] } else { asked }
            }
            Flow::Service => {
                let asked: Vec<&str> = requested
                    .split_whitespace()
                    .filter(|s| client.extra_scopes.iter().any(|e| e == s))
                    .collect();
                if requested.trim().is_empty() {
                    client.extra_scopes.iter().map(String::as_str).collect()
                } else {
                    asked
                }
            }
        };
        let scope_text = if granted.is_empty() { "service".to_owned() } else { granted.join(" ") };
        Ok(PreGrant {
            client_id: bound.client_id.into_owned(),
            redirect_uri: bound.redirect_uri.into_owned(),
            scope: scope_text.parse().map_err(|_| RegistrarError::Unspecified)?,
        })
    }

    async fn check(&self, client_id: &str, passphrase: Option<&[u8]>) -> std::result::Result<(), RegistrarError> {
        let client = self.client(client_id).await?;
        match (client.public, passphrase) {
            (true, None) => Ok(()),
            (false, Some(secret)) if client.secret_matches(secret) => Ok(()),
            _ => Err(RegistrarError::Unspecified),
        }
    }
}

/// oxide-auth's authorizer over the `auth_codes` table. Carries the login of
/// the request it serves, which the code remembers for the ID token.
pub struct DbAuthorizer {
    id: Arc<Identity>,
    login: Option<LoginContext>,
    ip: Option<String>,
    pub(crate) rejected: GrantRejected,
}

/// Set when a presented grant (code, PKCE verifier) was refused, so the token
/// endpoint can answer RFC 6749's `invalid_grant` where oxide-auth says
/// `invalid_request`.
pub type GrantRejected = Arc<std::sync::atomic::AtomicBool>;

impl DbAuthorizer {
    /// An authorizer issuing codes for `login`.
    pub fn new(id: Arc<Identity>, login: Option<LoginContext>, ip: Option<String>) -> Self {
        DbAuthorizer { id, login, ip, rejected: GrantRejected::default() }
    }

    async fn extract_code(&self, code: &str) -> Result<Option<Grant>> {
        let hash = secret_key(code);
        let ip = self.ip.clone();
        // In the token writer's group transaction: concurrent redemptions
        // commit together instead of one write transaction each.
        let claimed = self
            .id
            .token_writer
            .transact(move |tx| Box::pin(async move { claim_code(tx, &hash, ip.as_deref()).await }))
            .await?;
        let Some((grant_json, expires_at)) = claimed else { return Ok(None) };
        if expires_at < now() {
            return Ok(None);
        }
        let stored: StoredGrant = serde_json::from_str(&grant_json)?;
        // A code outlives neither the login it came from nor its person:
        // after a logout or a disable it gets nothing.
        if let Some(login) = &stored.login
            && !self.id.sessions.is_live(&login.sid).await?
        {
            return Ok(None);
        }
        Ok(Some(stored.to_grant()?))
    }
}

/// Claims a code on `tx`: the first redemption gets its stored grant and
/// expiry back; a code already redeemed gets nothing and, as RFC 6749
/// §4.1.2 says, revokes what it issued.
async fn claim_code(tx: &mut Tx, hash: &str, ip: Option<&str>) -> Result<Option<(String, i64)>> {
    let claimed = sqlx::query(
        "UPDATE auth_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL RETURNING grant_json, expires_at",
    )
    .bind(now())
    .bind(hash)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = claimed {
        return Ok(Some((row.try_get("grant_json")?, row.try_get("expires_at")?)));
    }
    let Some(row) = sqlx::query("SELECT grant_json, family FROM auth_codes WHERE code_hash = $1")
        .bind(hash)
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(None);
    };
    let stored: StoredGrant = serde_json::from_str(&row.try_get::<String, _>("grant_json")?)?;
    if stored.login.is_some() {
        crate::sessions::take_person_in(tx, &stored.owner_id, " FOR SHARE").await?;
    }
    let revoked = revoke_family(tx, &row.try_get::<String, _>("family")?).await?;
    Audit::record_in(
        tx,
        "code.replayed",
        Actor { user_id: Some(&stored.owner_id), client_id: Some(&stored.client_id), ip },
        json!({ "revoked_tokens": revoked }),
    )
    .await?;
    Ok(None)
}

/// What a person's grant needs still standing to be given tokens; nothing
/// for a service's.
#[derive(Clone)]
struct Standing(Option<(String, String, bool)>);

impl Standing {
    /// `grant`'s login; `outlives_session` for a refresh of an
    /// `offline_access` grant, which needs only its person enabled.
    fn of(grant: &StoredGrant, outlives_session: bool) -> Standing {
        Standing(grant.login.as_ref().map(|l| (grant.owner_id.clone(), l.sid.clone(), outlives_session)))
    }

    /// Whether it still stands, asked in the transaction that writes the
    /// tokens ([`may_issue_in`]).
    async fn holds_in(&self, tx: &mut Tx) -> Result<bool> {
        match &self.0 {
            Some((user_id, sid, outlives_session)) => may_issue_in(tx, user_id, sid, *outlives_session).await,
            None => Ok(true),
        }
    }
}

/// A new token family's id: time-ordered, so new rows append to the
/// `tokens_family` index.
fn new_family() -> String {
    ordered_id(10)
}

/// Revokes every token of a family; returns how many were live.
/// Tokens deferred on `tx` by a group transaction's earlier writes are
/// written first, so they are revoked too.
pub(crate) async fn revoke_family(tx: &mut Tx, family: &str) -> Result<u64> {
    tx.flush().await?;
    Ok(sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL")
        .bind(now())
        .bind(family)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

#[async_trait]
impl Authorizer for DbAuthorizer {
    async fn authorize(&mut self, grant: Grant) -> std::result::Result<String, ()> {
        let code = ordered_secret();
        let mut stored = StoredGrant::from_grant(&grant).map_err(|_| ())?;
        stored.login = self.login.clone();
        stored.family = Some(new_family());
        let expires_at = now() + self.id.settings.code_ttl;
        stored.until = expires_at;
        let json = serde_json::to_string(&stored).map_err(|_| ())?;
        let rows = Rows {
            codes: vec![CodeRow {
                code_hash: secret_key(&code),
                grant_json: json,
                family: stored.family.clone().unwrap_or_default(),
                expires_at,
            }],
            // Remember the client in the session, so logout can tell it.
            session_clients: self.login.iter().map(|l| (l.sid.clone(), stored.client_id.clone())).collect(),
            ..Rows::default()
        };
        self.id.token_writer.write(rows).await.map_err(|e| tracing::error!("storing authorization code: {e}"))?;
        Ok(code)
    }

    async fn extract(&mut self, code: &str) -> std::result::Result<Option<Grant>, ()> {
        let grant = self.extract_code(code).await.map_err(|e| tracing::error!("redeeming authorization code: {e}"))?;
        if grant.is_none() {
            self.rejected.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(grant)
    }
}

/// oxide-auth's issuer over the `tokens` table: opaque bearer tokens, stored
/// hashed, with rotating refresh tokens. It also signs the ID token, which
/// the endpoint adds to oxide-auth's token response.
pub struct DbIssuer {
    id: Arc<Identity>,
    ip: Option<String>,
    /// The ID token signed beside the last issued access token.
    pub id_token: Option<String>,
    /// Set when a refresh token turned out to be spent (another request
    /// rotated it first), for the token endpoint's `invalid_grant`.
    pub(crate) rejected: GrantRejected,
    /// The client the request's registrar read.
    pub(crate) client: SeenClient,
    /// Whether the refresh token being spent was granted `offline_access`:
    /// oxide-auth hands [`Issuer::refresh`] the scope the client asked for
    /// this time, which may leave it out, and the new refresh token stays
    /// offline all the same (it keeps the old one's scope).
    offline_refresh: bool,
}

struct Minted {
    access: String,
    refresh: Option<String>,
    until: i64,
}

impl DbIssuer {
    /// An issuer for a request from `ip`.
    pub fn new(id: Arc<Identity>, ip: Option<String>) -> Self {
        DbIssuer { id, ip, id_token: None, rejected: GrantRejected::default(), client: SeenClient::default(), offline_refresh: false }
    }

    fn refresh_expiry(&self, grant: &StoredGrant) -> i64 {
        let s = &self.id.settings;
        match &grant.login {
            Some(_) if grant.has_scope("offline_access") || self.offline_refresh => now() + s.offline_token_ttl,
            Some(login) => login.auth_time + s.session_ttl,
            None => now(),
        }
    }

    /// Mints an access token, a refresh token for a person's grant, and the
    /// ID token when `openid` was granted. Reads only: no transaction is
    /// open while it uses the pool.
    async fn mint(&mut self, grant: &mut StoredGrant, with_nonce: bool) -> Result<Minted> {
        if grant.family.is_none() {
            grant.family = Some(new_family());
        }
        let access = ordered_secret();
        let until = now() + self.id.settings.access_token_ttl;
        let refresh = grant.login.as_ref().map(|_| ordered_secret());
        if let (Some(login), true) = (&grant.login, grant.has_scope("openid")) {
            let user = self.id.users.get(&grant.owner_id).await?;
            let client = read_client(&self.id, &self.client, &grant.client_id).await?.ok_or_else(|| Error::NotFound("client".into()))?;
            let key = self.id.keys.signing_key(client.signing_alg()).await?;
            let scopes = grant.scopes();
            self.id_token = Some(oidc::id_token(
                &self.id.settings,
                &key,
                IdTokenInput { user: &user, client_id: &grant.client_id, scopes: &scopes, login, with_nonce, access_token: &access },
            )?);
        }
        Ok(Minted { access, refresh, until })
    }

    /// The rows that store what [`mint`](Self::mint) made, with its audit
    /// record.
    fn rows(&self, grant: &StoredGrant, minted: &Minted, event: &'static str) -> Result<(Vec<TokenRow>, AuditRow)> {
        let now = now();
        let grant_json = serde_json::to_string(grant)?;
        let row = |kind: &'static str, token: &str, expires_at: i64| TokenRow {
            token_hash: secret_key(token),
            kind,
            family: grant.family.clone().unwrap_or_default(),
            client_id: grant.client_id.clone(),
            user_id: grant.login.as_ref().map(|_| grant.owner_id.clone()),
            sid: grant.login.as_ref().map(|l| l.sid.clone()),
            scope: grant.scope.clone(),
            grant_json: grant_json.clone(),
            issued_at: now,
            expires_at,
        };
        let mut tokens = vec![row("access", &minted.access, minted.until)];
        if let Some(refresh) = &minted.refresh {
            tokens.push(row("refresh", refresh, self.refresh_expiry(grant)));
        }
        let audit = AuditRow {
            at: now,
            event,
            user_id: grant.login.as_ref().map(|_| grant.owner_id.clone()),
            client_id: Some(grant.client_id.clone()),
            ip: self.ip.clone(),
            detail: json!({ "scope": grant.scope, "refresh_token": minted.refresh.is_some(), "id_token": self.id_token.is_some() }).to_string(),
        };
        Ok((tokens, audit))
    }

    async fn issue_grant(&mut self, grant: Grant) -> Result<Option<IssuedToken>> {
        let mut stored = StoredGrant::from_grant(&grant)?;
        let minted = self.mint(&mut stored, true).await?;
        let (tokens, audit) = self.rows(&stored, &minted, "token.issued")?;
        let standing = Standing::of(&stored, false);
        let written = self
            .id
            .token_writer
            .transact(move |tx| {
                Box::pin(async move {
                    // A code outlives neither its login nor its person, up to
                    // the commit of what it buys.
                    if !standing.holds_in(tx).await? {
                        return Ok(false);
                    }
                    Rows { tokens, audit: vec![audit], ..Rows::default() }.defer(tx);
                    Ok(true)
                })
            })
            .await?;
        Ok(self.answer(written, minted))
    }

    /// What the client gets for `minted` if its rows were `written`;
    /// otherwise nothing, and no ID token either.
    fn answer(&mut self, written: bool, minted: Minted) -> Option<IssuedToken> {
        if !written {
            self.id_token = None;
            return None;
        }
        Some(IssuedToken {
            token: minted.access,
            refresh: minted.refresh,
            until: Utc.timestamp_opt(minted.until, 0).single().unwrap_or_else(Utc::now),
            token_type: TokenType::Bearer,
        })
    }

    async fn rotate(&mut self, old: &str, grant: Grant) -> Result<Option<RefreshedToken>> {
        let mut stored = StoredGrant::from_grant(&grant)?;
        let minted = self.mint(&mut stored, false).await?;
        let (tokens, audit) = self.rows(&stored, &minted, "token.refreshed")?;
        let old = secret_key(old);
        let standing = Standing::of(&stored, stored.has_scope("offline_access") || self.offline_refresh);
        // In the token writer's group transaction: concurrent refreshes
        // commit together instead of one write transaction each.
        let rotated = self
            .id
            .token_writer
            .transact(move |tx| {
                Box::pin(async move {
                    // Checked (and, on PostgreSQL, locked) before the old
                    // token is spent: a logout, disable or password change
                    // committing meanwhile either comes first and is seen,
                    // or waits and then revokes the new tokens too.
                    if !standing.holds_in(tx).await? {
                        return Ok(false);
                    }
                    let rotated = sqlx::query(
                        "UPDATE tokens SET rotated_at = $1 WHERE token_hash = $2 AND kind = 'refresh' \
                         AND rotated_at IS NULL AND revoked_at IS NULL RETURNING scope",
                    )
                    .bind(now())
                    .bind(&old)
                    .fetch_optional(&mut **tx)
                    .await?;
                    let Some(rotated) = rotated else {
                        // Lost a race with another use of the same refresh token: treat as reuse.
                        if let Some(family) = &stored.family {
                            revoke_family(tx, family).await?;
                        }
                        return Ok(false);
                    };
                    // A refresh that narrowed the access token's scope keeps the
                    // refresh token's own (RFC 6749 §6).
                    let scope: String = rotated.try_get("scope")?;
                    let mut tokens = tokens;
                    for t in tokens.iter_mut().filter(|t| t.kind == "refresh" && t.scope != scope) {
                        t.grant_json = serde_json::to_string(&StoredGrant { scope: scope.clone(), ..stored.clone() })?;
                        t.scope = scope.clone();
                    }
                    Rows { tokens, audit: vec![audit], ..Rows::default() }.defer(tx);
                    Ok(true)
                })
            })
            .await?;
        Ok(self.answer(rotated, minted).map(|t| RefreshedToken { token: t.token, refresh: t.refresh, until: t.until, token_type: t.token_type }))
    }

    /// oxide-auth's answer for what [`issue_grant`](Self::issue_grant) or
    /// [`rotate`](Self::rotate) did: `None`, a grant refused, is marked for
    /// the token endpoint's `invalid_grant`; an error is logged.
    fn settle<T>(&self, outcome: Result<Option<T>>, doing: &str) -> std::result::Result<T, ()> {
        match outcome {
            Ok(Some(t)) => Ok(t),
            Ok(None) => {
                self.rejected.store(true, std::sync::atomic::Ordering::Relaxed);
                Err(())
            }
            Err(e) => {
                tracing::error!("{doing}: {e}");
                Err(())
            }
        }
    }

    async fn recover(&mut self, token: &str, kind: &str) -> Result<Option<Grant>> {
        let row = sqlx::query(
            "SELECT grant_json, family, expires_at, rotated_at, revoked_at, user_id, client_id FROM tokens \
             WHERE token_hash = $1 AND kind = $2",
        )
        .bind(secret_key(token))
        .bind(kind)
        .fetch_optional(self.id.db.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
            return Ok(None);
        }
        if row.try_get::<Option<i64>, _>("rotated_at")?.is_some() {
            // A rotated refresh token came back: it leaked. Revoke the whole family.
            let family: String = row.try_get("family")?;
            let user_id: Option<String> = row.try_get("user_id")?;
            let client_id: String = row.try_get("client_id")?;
            let mut tx = self.id.db.begin().await?;
            let revoked = revoke_family(&mut tx, &family).await?;
            Audit::record_in(
                &mut tx,
                "token.refresh_reuse_detected",
                Actor { user_id: user_id.as_deref(), client_id: Some(&client_id), ip: self.ip.as_deref() },
                json!({ "revoked_tokens": revoked }),
            )
            .await?;
            tx.commit().await?;
            return Ok(None);
        }
        let expires_at: i64 = row.try_get("expires_at")?;
        if expires_at <= now() {
            return Ok(None);
        }
        let mut stored: StoredGrant = serde_json::from_str(&row.try_get::<String, _>("grant_json")?)?;
        stored.until = expires_at;
        if kind == "refresh" {
            self.offline_refresh = stored.has_scope("offline_access");
        }
        Ok(Some(stored.to_grant()?))
    }
}

#[async_trait]
impl Issuer for DbIssuer {
    async fn issue(&mut self, grant: Grant) -> std::result::Result<IssuedToken, ()> {
        let issued = self.issue_grant(grant).await;
        self.settle(issued, "issuing token")
    }

    async fn refresh(&mut self, token: &str, grant: Grant) -> std::result::Result<RefreshedToken, ()> {
        let refreshed = self.rotate(token, grant).await;
        self.settle(refreshed, "refreshing token")
    }

    async fn recover_token(&mut self, token: &str) -> std::result::Result<Option<Grant>, ()> {
        self.recover(token, "access").await.map_err(|e| tracing::error!("reading access token: {e}"))
    }

    async fn recover_refresh(&mut self, token: &str) -> std::result::Result<Option<Grant>, ()> {
        self.recover(token, "refresh").await.map_err(|e| tracing::error!("reading refresh token: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use civichub_store::{Db, DbUrl};

    use super::*;

    /// Group transactions defer token rows to their commit; a family revoked
    /// later in the same transaction (a refresh that lost a race, a replayed
    /// code) must still reach them.
    #[tokio::test]
    async fn revoking_a_family_reaches_the_tokens_its_own_transaction_deferred() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::connect(&DbUrl::sqlite_in(dir.path())).await.expect("db");
        let token = |hash: &str, family: &str| TokenRow {
            token_hash: hash.into(),
            kind: "access",
            family: family.into(),
            client_id: "records".into(),
            user_id: None,
            sid: None,
            scope: "openid".into(),
            grant_json: "{}".into(),
            issued_at: 1,
            expires_at: i64::MAX,
        };
        let mut tx = db.begin().await.expect("begin");
        Rows { tokens: vec![token("a", "spent"), token("b", "other")], ..Rows::default() }.defer(&mut tx);
        assert_eq!(revoke_family(&mut tx, "spent").await.expect("revoke"), 1, "the deferred token of the family");
        tx.commit().await.expect("commit");
        let revoked: Vec<(String, Option<i64>)> = sqlx::query("SELECT token_hash, revoked_at FROM tokens ORDER BY token_hash")
            .fetch_all(db.pool())
            .await
            .expect("tokens")
            .iter()
            .map(|r| (r.try_get("token_hash").expect("hash"), r.try_get("revoked_at").expect("revoked_at")))
            .collect();
        assert!(revoked[0].1.is_some() && revoked[1].1.is_none(), "only the family's token is revoked: {revoked:?}");
        assert_eq!(revoked.len(), 2, "both tokens written");
    }
}
