//! Passkeys (WebAuthn, with webauthn-rs): registration on the account page,
//! passwordless login with discoverable credentials, and a passkey as the
//! second factor after a password.
//!
//! **Invariant:** a ceremony's state lives in the database and is consumed
//! once, by whichever hub node the browser finishes on: an assertion can
//! never be replayed against the same challenge.
//!
//! **Invariant:** a credential's signature counter only moves forward
//! (compare-and-set), so an assertion from a cloned authenticator that lags
//! behind is refused.

use std::sync::Arc;

use civichub_store::{Db, Row, now, random_token};
use serde::Serialize;
use url::Url;
use webauthn_rs::prelude::{
    CreationChallengeResponse, CredentialID, DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, RequestChallengeResponse, Uuid, Webauthn, WebauthnBuilder,
};
use webauthn_rs_proto::{ResidentKeyRequirement, UserVerificationPolicy};

use crate::{Error, Result};

/// How long a browser has to finish a ceremony, in seconds.
const CEREMONY_SECS: i64 = 300;
/// Longest name a person may give a passkey.
const MAX_NAME_CHARS: usize = 40;

/// What a ceremony under way is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ceremony {
    /// Registering a passkey for a signed-in person.
    Register,
    /// A login that lets the browser pick the credential (discoverable).
    Login,
    /// The second factor of someone known.
    SecondFactor,
}

impl Ceremony {
    fn as_str(self) -> &'static str {
        match self {
            Ceremony::Register => "register",
            Ceremony::Login => "login",
            Ceremony::SecondFactor => "second_factor",
        }
    }
}

/// A registered passkey, as the account page lists it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PasskeyInfo {
    /// The credential id (base64url).
    pub id: String,
    /// The name its owner gave it.
    pub name: String,
    /// When it was registered (Unix seconds).
    pub created_at: i64,
    /// When it was last used to sign in.
    pub last_used_at: Option<i64>,
    /// Whether it may be synced to other devices (a password manager's
    /// passkey) rather than bound to one piece of hardware.
    pub backup_eligible: bool,
}

/// A passkey that just proved its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasskeyUse {
    /// Whose.
    pub user_id: String,
    /// Which (credential id, base64url).
    pub passkey_id: String,
    /// Synced (software-secured) rather than bound to hardware.
    pub backup_eligible: bool,
}

impl PasskeyUse {
    /// The `amr` value (RFC 8176): `swk` for a synced passkey, whose key a
    /// password manager holds, `hwk` for one bound to its authenticator.
    pub fn amr(&self) -> &'static str {
        if self.backup_eligible { "swk" } else { "hwk" }
    }
}

/// People's passkeys.
#[derive(Clone)]
pub struct Passkeys {
    db: Db,
    webauthn: Option<Arc<Webauthn>>,
}

impl std::fmt::Debug for Passkeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passkeys").field("available", &self.available()).finish()
    }
}

fn refused(what: &str, e: impl std::fmt::Display) -> Error {
    tracing::info!("passkey {what} refused: {e}");
    Error::Invalid("通行密钥验证未通过，请重试。".into())
}

fn b64(id: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

impl Passkeys {
    /// For the relying party at `issuer`: its host is the WebAuthn RP ID and
    /// its origin the only one accepted. Browsers refuse passkeys for IP
    /// addresses, so an issuer such as `http://127.0.0.1:8080` has none
    /// (use `http://localhost:8080`).
    pub fn new(db: Db, issuer: &Url) -> Passkeys {
        let webauthn = issuer.domain().and_then(|rp_id| {
            let origin = Url::parse(&issuer.origin().ascii_serialization()).ok()?;
            match WebauthnBuilder::new(rp_id, &origin).and_then(|b| b.rp_name("CivicHub 统一身份认证").build()) {
                Ok(w) => Some(Arc::new(w)),
                Err(e) => {
                    tracing::warn!("passkeys are off: {e}");
                    None
                }
            }
        });
        Passkeys { db, webauthn }
    }

    /// Whether passkeys work at this issuer.
    pub fn available(&self) -> bool {
        self.webauthn.is_some()
    }

    fn webauthn(&self) -> Result<&Webauthn> {
        self.webauthn.as_deref().ok_or_else(|| Error::Invalid("本平台的地址是 IP 地址，浏览器不支持通行密钥；请管理员以域名配置 --issuer。".into()))
    }

    /// The WebAuthn user handle of `user_id`, made on first use (random,
    /// so it says nothing about the person).
    async fn handle(&self, user_id: &str) -> Result<Uuid> {
        let read = async || -> Result<Option<Uuid>> {
            let row = sqlx::query("SELECT handle FROM webauthn_handles WHERE user_id = $1").bind(user_id).fetch_optional(self.db.pool()).await?;
            row.map(|r| r.try_get::<String, _>("handle")?.parse::<Uuid>().map_err(|e| Error::Corrupt(e.to_string()))).transpose()
        };
        if let Some(h) = read().await? {
            return Ok(h);
        }
        let mut bytes = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        let fresh = uuid_from_random(bytes);
        // Two nodes racing: one insert wins, both read the winner.
        let _ = sqlx::query("INSERT INTO webauthn_handles (user_id, handle) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING")
            .bind(user_id)
            .bind(fresh.to_string())
            .execute(self.db.pool())
            .await?;
        read().await?.ok_or_else(|| Error::Corrupt("webauthn handle vanished".into()))
    }

    async fn user_of_handle(&self, handle: &Uuid) -> Result<Option<String>> {
        let row = sqlx::query("SELECT user_id FROM webauthn_handles WHERE handle = $1").bind(handle.to_string()).fetch_optional(self.db.pool()).await?;
        Ok(row.map(|r| r.try_get("user_id")).transpose()?)
    }

    async fn park<S: Serialize>(&self, kind: Ceremony, user_id: Option<&str>, state: &S) -> Result<String> {
        let key = random_token(24);
        sqlx::query("INSERT INTO webauthn_ceremonies (id, kind, user_id, state, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&key)
            .bind(kind.as_str())
            .bind(user_id)
            .bind(serde_json::to_string(state)?)
            .bind(now() + CEREMONY_SECS)
            .execute(self.db.pool())
            .await?;
        Ok(key)
    }

    /// Takes the ceremony under `key` (once, on any node): its state, if it
    /// is of `kind`, for `user_id` where one is given, and not expired.
    async fn take<S: serde::de::DeserializeOwned>(&self, kind: Ceremony, user_id: Option<&str>, key: &str) -> Result<S> {
        let row = sqlx::query("SELECT user_id, state FROM webauthn_ceremonies WHERE id = $1 AND kind = $2 AND expires_at >= $3")
            .bind(key)
            .bind(kind.as_str())
            .bind(now())
            .fetch_optional(self.db.pool())
            .await?;
        let expired = || Error::Invalid("通行密钥操作已过期，请重试。".into());
        let row = row.ok_or_else(expired)?;
        if row.try_get::<Option<String>, _>("user_id")?.as_deref() != user_id {
            return Err(expired());
        }
        let taken = sqlx::query("DELETE FROM webauthn_ceremonies WHERE id = $1").bind(key).execute(self.db.pool()).await?.rows_affected();
        if taken != 1 {
            return Err(expired());
        }
        Ok(serde_json::from_str(&row.try_get::<String, _>("state")?)?)
    }

    async fn credentials(&self, user_id: &str) -> Result<Vec<Passkey>> {
        let rows = sqlx::query("SELECT credential FROM passkeys WHERE user_id = $1 ORDER BY created_at").bind(user_id).fetch_all(self.db.pool()).await?;
        rows.iter().map(|r| Ok(serde_json::from_str(&r.try_get::<String, _>("credential")?)?)).collect()
    }

    /// Starts registering a passkey for `user_id` (`username` and
    /// `display_name` are what the authenticator shows): the options for
    /// `navigator.credentials.create()` and the key to finish with. The
    /// person's passkeys are excluded, and the credential is asked to be
    /// discoverable, so it can sign in without a username.
    pub async fn begin_registration(&self, user_id: &str, username: &str, display_name: &str) -> Result<(String, CreationChallengeResponse)> {
        let webauthn = self.webauthn()?;
        let handle = self.handle(user_id).await?;
        let exclude: Vec<CredentialID> = self.credentials(user_id).await?.iter().map(|p| p.cred_id().clone()).collect();
        let (mut options, state) = webauthn
            .start_passkey_registration(handle, username, display_name, Some(exclude))
            .map_err(|e| Error::Invalid(format!("cannot start a passkey registration: {e}")))?;
        if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
            selection.resident_key = Some(ResidentKeyRequirement::Required);
            selection.require_resident_key = true;
            selection.user_verification = UserVerificationPolicy::Required;
        }
        let key = self.park::<PasskeyRegistration>(Ceremony::Register, Some(user_id), &state).await?;
        Ok((key, options))
    }

    /// Finishes the registration under `key` with what the browser answered;
    /// the passkey is kept under `name`.
    pub async fn finish_registration(&self, user_id: &str, key: &str, name: &str, credential: &RegisterPublicKeyCredential) -> Result<PasskeyInfo> {
        let webauthn = self.webauthn()?;
        let name = name.trim();
        let name = if name.is_empty() { "通行密钥".to_owned() } else { name.chars().take(MAX_NAME_CHARS).collect() };
        let state: PasskeyRegistration = self.take(Ceremony::Register, Some(user_id), key).await?;
        let passkey = webauthn.finish_passkey_registration(credential, &state).map_err(|e| refused("registration", e))?;
        let id = b64(passkey.cred_id().as_ref());
        let backup_eligible = credential_backup_eligible(&passkey);
        let at = now();
        // A credential id belongs to one person only (WebAuthn §7.1 step 22).
        let stored = sqlx::query(
            "INSERT INTO passkeys (id, user_id, name, credential, counter, backup_eligible, created_at) VALUES ($1, $2, $3, $4, 0, $5, $6) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&id)
        .bind(user_id)
        .bind(&name)
        .bind(serde_json::to_string(&passkey)?)
        .bind(i64::from(backup_eligible))
        .bind(at)
        .execute(self.db.pool())
        .await?
        .rows_affected();
        if stored != 1 {
            return Err(Error::Conflict("这个通行密钥已经注册过".into()));
        }
        Ok(PasskeyInfo { id, name, created_at: at, last_used_at: None, backup_eligible })
    }

    /// Starts a passwordless login: options for `navigator.credentials.get()`
    /// with no allowed credentials (the browser offers the passkeys it holds
    /// for this site, in a dialog or the username field's autofill) and the
    /// key to finish with.
    pub async fn begin_login(&self) -> Result<(String, RequestChallengeResponse)> {
        let (options, state) = self.webauthn()?.start_discoverable_authentication().map_err(|e| Error::Invalid(format!("cannot start a passkey login: {e}")))?;
        let key = self.park::<DiscoverableAuthentication>(Ceremony::Login, None, &state).await?;
        Ok((key, options))
    }

    /// Finishes the login under `key`: the person the passkey belongs to.
    /// A credential that is not registered, or registered to someone other
    /// than the user handle the authenticator gave, is refused.
    pub async fn finish_login(&self, key: &str, credential: &PublicKeyCredential) -> Result<PasskeyUse> {
        let webauthn = self.webauthn()?;
        let state: DiscoverableAuthentication = self.take(Ceremony::Login, None, key).await?;
        let (handle, cred_id) = webauthn.identify_discoverable_authentication(credential).map_err(|e| refused("login", e))?;
        let id = b64(cred_id);
        let owner = self.user_of_handle(&handle).await?.ok_or_else(|| refused("login", "unknown user handle"))?;
        let (user_id, passkey) = self.stored(&id).await?.ok_or_else(|| refused("login", "unknown credential"))?;
        if user_id != owner {
            return Err(refused("login", "the credential belongs to someone else"));
        }
        let result = webauthn.finish_discoverable_authentication_v2(credential, state, &passkey).map_err(|e| refused("login", e))?;
        self.used(&user_id, &id, passkey, &result).await
    }

    /// Starts a passkey as the second factor of `user_id`: none if they
    /// have no passkey.
    pub async fn begin_second_factor(&self, user_id: &str) -> Result<Option<(String, RequestChallengeResponse)>> {
        let webauthn = self.webauthn()?;
        let creds = self.credentials(user_id).await?;
        if creds.is_empty() {
            return Ok(None);
        }
        let (options, state) = webauthn.start_passkey_authentication(&creds).map_err(|e| Error::Invalid(format!("cannot start a passkey check: {e}")))?;
        let key = self.park::<PasskeyAuthentication>(Ceremony::SecondFactor, Some(user_id), &state).await?;
        Ok(Some((key, options)))
    }

    /// Finishes the second factor under `key`: only a passkey of `user_id` passes.
    pub async fn finish_second_factor(&self, user_id: &str, key: &str, credential: &PublicKeyCredential) -> Result<PasskeyUse> {
        let webauthn = self.webauthn()?;
        let state: PasskeyAuthentication = self.take(Ceremony::SecondFactor, Some(user_id), key).await?;
        let result = webauthn.finish_passkey_authentication(credential, &state).map_err(|e| refused("second factor", e))?;
        let id = b64(result.cred_id().as_ref());
        let (owner, passkey) = self.stored(&id).await?.ok_or_else(|| refused("second factor", "unknown credential"))?;
        if owner != user_id {
            return Err(refused("second factor", "the credential belongs to someone else"));
        }
        self.used(user_id, &id, passkey, &result).await
    }

    async fn stored(&self, id: &str) -> Result<Option<(String, Passkey)>> {
        let row = sqlx::query("SELECT user_id, credential FROM passkeys WHERE id = $1").bind(id).fetch_optional(self.db.pool()).await?;
        row.map(|r| Ok((r.try_get("user_id")?, serde_json::from_str(&r.try_get::<String, _>("credential")?)?))).transpose()
    }

    /// Records a use: the counter moves forward (or the use is refused as
    /// coming from a clone), the last-used time and backup state are kept.
    async fn used(&self, user_id: &str, id: &str, mut passkey: Passkey, result: &webauthn_rs::prelude::AuthenticationResult) -> Result<PasskeyUse> {
        passkey.update_credential(result);
        let counter = i64::from(result.counter());
        // Authenticators without a counter always send 0 (and their stored
        // counter stays 0); any other value must be greater than the one
        // stored, also against a racing node, and never goes back to 0.
        let moved = sqlx::query(
            "UPDATE passkeys SET credential = $3, counter = $4, backup_eligible = $5, last_used_at = $6 \
             WHERE id = $1 AND user_id = $2 AND (counter < $4 OR (counter = 0 AND $4 = 0))",
        )
        .bind(id)
        .bind(user_id)
        .bind(serde_json::to_string(&passkey)?)
        .bind(counter)
        .bind(i64::from(result.backup_eligible()))
        .bind(now())
        .execute(self.db.pool())
        .await?
        .rows_affected();
        if moved != 1 {
            return Err(refused("use", "the signature counter did not move forward"));
        }
        Ok(PasskeyUse { user_id: user_id.to_owned(), passkey_id: id.to_owned(), backup_eligible: result.backup_eligible() })
    }

    /// The passkeys of `user_id`, oldest first.
    pub async fn list(&self, user_id: &str) -> Result<Vec<PasskeyInfo>> {
        let rows = sqlx::query("SELECT id, name, created_at, last_used_at, backup_eligible FROM passkeys WHERE user_id = $1 ORDER BY created_at, id")
            .bind(user_id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PasskeyInfo {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    created_at: r.try_get("created_at")?,
                    last_used_at: r.try_get("last_used_at")?,
                    backup_eligible: r.try_get::<i64, _>("backup_eligible")? != 0,
                })
            })
            .collect()
    }

    /// How many passkeys `user_id` has.
    pub async fn count(&self, user_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM passkeys WHERE user_id = $1").bind(user_id).fetch_one(self.db.pool()).await?;
        Ok(row.try_get("n")?)
    }

    /// Removes the passkey `id` of `user_id` (and the recovery codes, if it
    /// was the last second factor); its name, if it was there. The last way
    /// a person signs in stays ([`Error::Conflict`](crate::Error::Conflict)).
    pub async fn remove(&self, user_id: &str, id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT name FROM passkeys WHERE id = $1 AND user_id = $2").bind(id).bind(user_id).fetch_optional(self.db.pool()).await?;
        let Some(row) = row else { return Ok(None) };
        let mut tx = self.db.begin().await?;
        crate::users::keep_a_way_in(&mut tx, user_id, crate::users::WayIn::Passkey(id)).await?;
        let n = sqlx::query("DELETE FROM passkeys WHERE id = $1 AND user_id = $2").bind(id).bind(user_id).execute(&mut *tx).await?.rows_affected();
        sqlx::query(crate::mfa::ORPHAN_RECOVERY_CODES).bind(user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok((n == 1).then(|| row.try_get("name")).transpose()?)
    }

}

/// A random (version 4) UUID from 16 random bytes.
fn uuid_from_random(bytes: [u8; 16]) -> Uuid {
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Whether a fresh passkey said it may be synced (the BE flag), read from
/// its stored form (webauthn-rs keeps the flag inside the credential).
fn credential_backup_eligible(passkey: &Passkey) -> bool {
    serde_json::to_value(passkey).ok().and_then(|v| v["cred"]["backup_eligible"].as_bool()).unwrap_or(false)
}
