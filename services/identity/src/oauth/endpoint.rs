//! The per-request oxide-auth endpoint: our primitives, PKCE, and the
//! pass-through of CivicHub's grant extensions.

use async_trait::async_trait;
use oxide_auth::code_grant::accesstoken::Request as TokenRequest;
use oxide_auth::code_grant::authorization::Request as AuthRequest;
use oxide_auth::endpoint::{OAuthError, OwnerConsent, Scope, Scopes, Solicitation, Template};
use oxide_auth::code_grant::extensions::Pkce;
use oxide_auth::primitives::grant::{Extensions, Value};
use oxide_auth_async::endpoint::{AccessTokenExtension, AuthorizationExtension, Endpoint, Extension, OwnerSolicitor};
use oxide_auth_async::primitives::{Authorizer, Issuer, Registrar};
use serde_json::{Map, Value as Json};

use super::primitives::{DbAuthorizer, DbIssuer, DbRegistrar, GrantRejected};
use super::web::{OAuthFailure, OAuthRequest, OAuthResponse};

/// Who has already agreed to the grant: the handler decides login and
/// consent before the flow runs, so the solicitor only reports the outcome.
pub enum Solicitor {
    /// The owner (a user id, or the client itself for client credentials).
    Authorized(String),
    /// Nobody agreed.
    Denied,
}

#[async_trait]
impl OwnerSolicitor<OAuthRequest> for Solicitor {
    async fn check_consent(&mut self, _: &mut OAuthRequest, _: Solicitation<'_>) -> OwnerConsent<OAuthResponse> {
        match self {
            Solicitor::Authorized(owner) => OwnerConsent::Authorized(owner.clone()),
            Solicitor::Denied => OwnerConsent::Denied,
        }
    }
}

/// PKCE (S256 only; required for public clients) and the carrying of
/// CivicHub's private grant extensions from code to token.
pub struct HubExtension {
    pkce: Pkce,
    rejected: GrantRejected,
}

impl HubExtension {
    fn new(pkce_required: bool, rejected: GrantRejected) -> Self {
        HubExtension { pkce: if pkce_required { Pkce::required() } else { Pkce::optional() }, rejected }
    }
}

#[async_trait]
impl AuthorizationExtension for HubExtension {
    async fn extend(&mut self, request: &(dyn AuthRequest + Sync)) -> Result<Extensions, ()> {
        let mut extensions = Extensions::new();
        let challenge = self
            .pkce
            .challenge(request.extension("code_challenge_method"), request.extension("code_challenge"))?;
        if let Some(challenge) = challenge {
            extensions.set(&self.pkce, challenge);
        }
        Ok(extensions)
    }
}

#[async_trait]
impl AccessTokenExtension for HubExtension {
    async fn extend(&mut self, request: &(dyn TokenRequest + Sync), mut data: Extensions) -> Result<Extensions, ()> {
        let challenge = data.remove(&self.pkce);
        let verifier = request.extension("code_verifier");
        // A verifier for a code that had no challenge is refused too (RFC 9700
        // §2.1.1: it would let an attacker downgrade a PKCE flow).
        if (challenge.is_none() && verifier.is_some()) || self.pkce.verify(challenge, verifier).is_err() {
            self.rejected.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(());
        }
        let mut carried = Extensions::new();
        for (name, value) in data.private() {
            carried.set_raw(name.to_owned(), Value::private(value.map(str::to_owned)));
        }
        Ok(carried)
    }
}

impl Extension for HubExtension {
    fn authorization(&mut self) -> Option<&mut (dyn AuthorizationExtension + Send)> {
        Some(self)
    }

    fn access_token(&mut self) -> Option<&mut (dyn AccessTokenExtension + Send)> {
        Some(self)
    }
}

/// One request's oxide-auth endpoint.
pub struct HubEndpoint {
    registrar: DbRegistrar,
    authorizer: DbAuthorizer,
    issuer: DbIssuer,
    solicitor: Solicitor,
    scopes: Vec<Scope>,
    extension: HubExtension,
}

impl HubEndpoint {
    /// Assembles an endpoint. `scopes` are what a protected resource demands
    /// (empty for the grant flows).
    pub fn new(
        registrar: DbRegistrar,
        authorizer: DbAuthorizer,
        mut issuer: DbIssuer,
        solicitor: Solicitor,
        scopes: Vec<Scope>,
        pkce_required: bool,
    ) -> Self {
        let rejected = authorizer.rejected.clone();
        issuer.rejected = rejected.clone();
        issuer.client = registrar.seen.clone();
        HubEndpoint { registrar, authorizer, issuer, solicitor, scopes, extension: HubExtension::new(pkce_required, rejected) }
    }

    /// Whether the presented code, PKCE verifier or refresh token was refused.
    pub fn grant_rejected(&self) -> GrantRejected {
        self.authorizer.rejected.clone()
    }
}

impl Endpoint<OAuthRequest> for HubEndpoint {
    type Error = OAuthFailure;

    fn registrar(&self) -> Option<&(dyn Registrar + Sync)> {
        Some(&self.registrar)
    }

    fn authorizer_mut(&mut self) -> Option<&mut (dyn Authorizer + Send)> {
        Some(&mut self.authorizer)
    }

    fn issuer_mut(&mut self) -> Option<&mut (dyn Issuer + Send)> {
        Some(&mut self.issuer)
    }

    fn owner_solicitor(&mut self) -> Option<&mut (dyn OwnerSolicitor<OAuthRequest> + Send)> {
        Some(&mut self.solicitor)
    }

    fn scopes(&mut self) -> Option<&mut dyn Scopes<OAuthRequest>> {
        Some(&mut self.scopes)
    }

    fn response(&mut self, _: &mut OAuthRequest, kind: Template) -> Result<OAuthResponse, Self::Error> {
        let mut extra = Map::new();
        if kind.status() == oxide_auth::endpoint::ResponseStatus::Ok
            && let Some(id_token) = self.issuer.id_token.take() {
                extra.insert("id_token".into(), Json::String(id_token));
            }
        Ok(OAuthResponse::with_extra(extra))
    }

    fn error(&mut self, err: OAuthError) -> Self::Error {
        OAuthFailure::OAuth(err)
    }

    fn web_error(&mut self, err: OAuthFailure) -> Self::Error {
        err
    }

    fn extension(&mut self) -> Option<&mut (dyn Extension + Send)> {
        Some(&mut self.extension)
    }
}
