//! CivicHub's OpenID Connect provider and single sign-on hub, as a library.
//!
//! oxide-auth runs the OAuth 2.0 flows over database-backed primitives
//! ([`oauth`]); the OpenID Connect layer ([`oidc`]) adds ID tokens,
//! discovery, JWKS and logout with the `openidconnect` crate; [`routes`]
//! serves it all over warp. Nothing here knows about the `civichub` binary.

mod audit;
mod backchannel;
mod bearer;
mod clients;
mod directory;
mod endpoints;
mod error;
mod federation;
pub mod http;
mod janitor;
mod keys;
mod mfa;
pub mod oauth;
pub mod oidc;
mod passkeys;
mod password;
mod sessions;
mod settings;
mod throttle;
mod ratelimit;
mod users;
mod values;

use std::sync::Arc;
use std::time::Duration;

use civichub_store::Db;
use warp::Filter;
use warp::filters::BoxedFilter;

pub use audit::{Actor, Audit, AuditEvent};
pub use bearer::{BearerError, Principal, reply};
pub use clients::{Client, Clients, NewClient, STANDARD_SCOPES};
pub use endpoints::admin_clients::ADMIN_CLIENTS_SCOPE;
pub use directory::{Directory, DirectoryChange, HeldDepartment, OrgDepartment, OrgPerson, OrgSnapshot};
pub use error::{Error, Result};
pub use federation::{Contact, ExternalIdentity, Federation, Flow, PendingLink, Upstream, UpstreamError, UpstreamLogout};
pub use http::{BodyTooLarge, BodyUnreadable, NulInInput, limited_body, no_nul_in_query};
pub use janitor::{GRACE_SECS, Swept};
pub use keys::{Keys, RETIRED_KEY_PUBLISHED_SECS};
pub use mfa::{Mfa, Pending, Proof, RECOVERY_CODES, STEP_SECS, base32, hotp};
pub use passkeys::{PasskeyInfo, PasskeyUse, Passkeys};
pub use password::{Verdict, current_params as password_params, hash_blocking, verify_blocking};
pub use sessions::{BACKCHANNEL_TOPIC, SESSION_COOKIE, Session, Sessions};
pub use settings::Settings;
pub use throttle::Throttle;
pub use ratelimit::{RateLimiter, rate_limit};
pub use users::{NewUser, User, Users};
pub use values::{ClientId, Password, RedirectUri, SigningAlg, Username};

/// Unix seconds as Beijing time (`2026-11-29 14:05`), as people read it on
/// their account page and in notices about it.
pub fn beijing(secs: i64) -> String {
    let offset = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
    chrono::DateTime::from_timestamp(secs, 0).map(|t| t.with_timezone(&offset).format("%Y-%m-%d %H:%M").to_string()).unwrap_or_default()
}

/// `acr` of a password (single-factor) login.
pub const ACR_SINGLE_FACTOR: &str = "1";
/// `acr` of a login with a second factor.
pub const ACR_MULTI_FACTOR: &str = "2";

/// A page of the platform offered on the home page after login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HomeLink {
    /// What the link says.
    pub label: String,
    /// Where it goes (a path on this host).
    pub href: String,
    /// Shown to someone with one of these roles; to everyone when empty.
    pub roles: Vec<String>,
}

/// The identity service: everything the endpoints share.
pub struct Identity {
    /// The hub's database.
    pub db: Db,
    /// Behaviour and issuer.
    pub settings: Settings,
    /// The user directory.
    pub users: Users,
    /// Registered clients.
    pub clients: Clients,
    /// Signing keys.
    pub keys: Keys,
    /// SSO sessions.
    pub sessions: Sessions,
    /// The audit trail.
    pub audit: Audit,
    /// Login throttling.
    pub throttle: Throttle,
    /// Logins through upstream identity providers, and account links.
    pub federation: Federation,
    /// Second factors.
    pub mfa: Mfa,
    /// Passkeys (WebAuthn).
    pub passkeys: Passkeys,
    upstreams: std::sync::RwLock<Vec<Arc<dyn Upstream>>>,
    home_links: std::sync::RwLock<Vec<HomeLink>>,
    http: reqwest::Client,
    backchannel_wakeup: tokio::sync::Notify,
    token_writer: oauth::TokenWriter,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("issuer", &self.settings.issuer.as_str()).finish()
    }
}

impl Identity {
    /// Opens the identity service on `db`, creating signing keys on first start.
    pub async fn open(db: Db, settings: Settings) -> Result<Arc<Identity>> {
        let keys = Keys::new(db.clone());
        keys.ensure().await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Invalid(format!("HTTP client: {e}")))?;
        Ok(Arc::new(Identity {
            users: Users::new(db.clone()),
            clients: Clients::new(db.clone()),
            sessions: Sessions::new(db.clone()),
            audit: Audit::new(db.clone()),
            throttle: Throttle::new(db.clone()),
            federation: Federation::new(db.clone()),
            mfa: Mfa::new(db.clone()),
            passkeys: Passkeys::new(db.clone(), &settings.issuer),
            upstreams: std::sync::RwLock::new(Vec::new()),
            home_links: std::sync::RwLock::new(Vec::new()),
            keys,
            token_writer: oauth::TokenWriter::start(db.clone()),
            db,
            settings,
            http,
            backchannel_wakeup: tokio::sync::Notify::new(),
        }))
    }

    /// Whether `user_id` has a second factor (an authenticator app or a
    /// passkey, where passkeys work), so that a password alone no longer
    /// signs them in.
    pub async fn has_second_factor(&self, user_id: &str) -> Result<bool> {
        Ok(self.mfa.enrolled(user_id).await? || (self.passkeys.available() && self.passkeys.count(user_id).await? > 0))
    }

    /// Links `user_id` to `subject` at `provider` and records it in the audit
    /// trail (`by`: what proved the link), in one transaction.
    pub(crate) async fn link_account(&self, user_id: &str, provider: &str, subject: &str, by: &str, ip: Option<&str>) -> Result<()> {
        let mut tx = self.db.begin().await?;
        users::link_in(&mut tx, user_id, provider, subject, civichub_store::now()).await?;
        let actor = Actor { user_id: Some(user_id), client_id: None, ip };
        Audit::record_in(&mut tx, "user.linked", actor, serde_json::json!({ "provider": provider, "subject": subject, "by": by })).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Offers logins through `upstream` (a button on the login page).
    pub fn add_upstream(&self, upstream: Arc<dyn Upstream>) -> Result<()> {
        Federation::check_name(upstream.name())?;
        let mut all = self.upstreams.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if all.iter().any(|u| u.name() == upstream.name()) {
            return Err(Error::Conflict(format!("upstream {}", upstream.name())));
        }
        all.push(upstream);
        Ok(())
    }

    /// Offers `link` on the home page (`/`) to the signed-in people it is for:
    /// the binary names the pages it serves, the identity crate knows none.
    pub fn add_home_link(&self, link: HomeLink) {
        self.home_links.write().unwrap_or_else(std::sync::PoisonError::into_inner).push(link);
    }

    /// The home-page links for someone with `roles`, in the order added.
    pub fn home_links_for(&self, roles: &[String]) -> Vec<HomeLink> {
        let all = self.home_links.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        all.iter().filter(|l| l.roles.is_empty() || l.roles.iter().any(|r| roles.iter().any(|mine| mine == r))).cloned().collect()
    }

    /// The upstream identity providers offered, in the order added.
    pub fn upstreams(&self) -> Vec<Arc<dyn Upstream>> {
        self.upstreams.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The upstream whose logins carry `amr`.
    pub fn upstream_by_amr(&self, amr: &str) -> Option<Arc<dyn Upstream>> {
        self.upstreams().into_iter().find(|u| u.amr() == amr)
    }

    /// The upstream named `name`.
    pub fn upstream(&self, name: &str) -> Option<Arc<dyn Upstream>> {
        self.upstreams().into_iter().find(|u| u.name() == name)
    }

    /// Starts the background work: Back-Channel Logout delivery and housekeeping.
    pub fn spawn_workers(self: &Arc<Self>) {
        tokio::spawn(backchannel::relay(self.clone()));
        tokio::spawn(self.clone().janitor());
    }
}

/// Every identity endpoint.
pub fn routes(id: Arc<Identity>) -> BoxedFilter<(warp::reply::Response,)> {
    use endpoints::*;
    discovery::filter(id.clone())
        .or(authorize::filter(id.clone()))
        .unify()
        .or(login::filter(id.clone()))
        .unify()
        .or(upstream::filter(id.clone()))
        .unify()
        .or(account::filter(id.clone()))
        .unify()
        .or(mfa::filter(id.clone()))
        .unify()
        .or(passkey::filter(id.clone()))
        .unify()
        .or(admin_clients::filter(id.clone()))
        .unify()
        .or(consent::filter(id.clone()))
        .unify()
        .or(token::filter(id.clone()))
        .unify()
        .or(userinfo::filter(id.clone()))
        .unify()
        .or(introspect::filter(id.clone()))
        .unify()
        .or(revoke::filter(id.clone()))
        .unify()
        .or(end_session::filter(id.clone()))
        .unify()
        .or(assets::filter(id))
        .unify()
        .boxed()
}
