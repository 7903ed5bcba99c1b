//! Staff sign in through an upstream OpenID Connect provider (a provincial or
//! national government identity service): an [`Upstream`] of CivicHub's
//! identity service, with the `openidconnect` crate as the relying party.
//!
//! Discovery is read when first needed and kept for an hour; the login is
//! the authorization code flow with PKCE (S256), `state` and `nonce`, and
//! the ID token is verified against the upstream's JWKS (a key the cached
//! document does not know makes it read the document and keys again once).
//! Which claims name the person is configuration ([`UpstreamConfig`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use civichub_identity::{ExternalIdentity, Flow, Upstream, UpstreamError, UpstreamLogout};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata};
use openidconnect::JsonWebKey;
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

/// How long a discovery document (and its keys) is trusted.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// How far a logout token's `iat` may be from now, in seconds.
const LOGOUT_TOKEN_AGE: i64 = 300;
/// The event a logout token carries.
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// What identifies an upstream account with a CivicHub user before they are linked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkBy {
    /// Only an explicit link: a first login is linked by one password login.
    #[default]
    Sub,
    /// The one user with the e-mail address the upstream has verified.
    Email,
}

/// One upstream provider, as configured. Its `Debug` leaves the secret out.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Short name in paths and account links (lower-case letters, digits, `-`).
    pub name: String,
    /// The button's text (default "使用 NAME 登录").
    #[serde(default)]
    pub label: Option<String>,
    /// The issuer URL; discovery is at `/.well-known/openid-configuration` below it.
    pub issuer: String,
    /// The client id CivicHub is registered with there.
    pub client_id: String,
    /// Its secret (client_secret_basic).
    pub client_secret: String,
    /// Scopes asked for (default `openid profile email`).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// How an unlinked account finds its user.
    #[serde(default)]
    pub link_by: LinkBy,
    /// The claim with the display name (default `name`).
    #[serde(default)]
    pub name_claim: Option<String>,
    /// The claim with the e-mail address (default `email`, trusted only with `email_verified`).
    #[serde(default)]
    pub email_claim: Option<String>,
    /// The claim with the mobile number (default `phone_number`, trusted only with `phone_number_verified`).
    #[serde(default)]
    pub phone_claim: Option<String>,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("link_by", &self.link_by)
            .finish_non_exhaustive()
    }
}

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field is missing or malformed; the text says which.
    #[error("upstream OIDC provider: {0}")]
    Invalid(String),
}

impl UpstreamConfig {
    /// Reads the one-line form of the `--upstream-oidc` flag:
    /// `name=zjzw,issuer=https://…,client_id=…,client_secret=…[,scopes=openid email][,link_by=email][,label=…]`.
    pub fn parse_flag(spec: &str) -> Result<UpstreamConfig, ConfigError> {
        let mut map = serde_json::Map::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| ConfigError::Invalid(format!("{part:?} is not key=value")))?;
            let key = k.trim().replace('-', "_");
            let value = if key == "scopes" { Value::from(v.split_whitespace().collect::<Vec<_>>()) } else { Value::from(v.trim()) };
            map.insert(key, value);
        }
        let config: UpstreamConfig = serde_json::from_value(Value::Object(map)).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Checks the fields a login needs.
    pub fn check(&self) -> Result<(), ConfigError> {
        civichub_identity::Federation::check_name(&self.name).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let url = Url::parse(&self.issuer).map_err(|e| ConfigError::Invalid(format!("{}: issuer {:?}: {e}", self.name, self.issuer)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::Invalid(format!("{}: the issuer must be an http(s) URL", self.name)));
        }
        if self.client_id.is_empty() || self.client_secret.is_empty() {
            return Err(ConfigError::Invalid(format!("{}: client_id and client_secret are required", self.name)));
        }
        Ok(())
    }
}

/// An upstream OpenID Connect provider.
#[derive(Debug)]
pub struct OidcUpstream {
    config: UpstreamConfig,
    label: String,
    http: reqwest::Client,
    discovered: tokio::sync::Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

fn failed(what: &str, e: impl std::fmt::Display) -> UpstreamError {
    UpstreamError::Failed(format!("{what}: {e}"))
}

impl OidcUpstream {
    /// The provider of `config` (checked); nothing is fetched yet.
    pub fn new(config: UpstreamConfig) -> Result<OidcUpstream, ConfigError> {
        config.check()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // Following redirects would let a provider point CivicHub elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let label = config.label.clone().unwrap_or_else(|| format!("使用 {} 登录", config.name));
        Ok(OidcUpstream { config, label, http, discovered: tokio::sync::Mutex::new(None) })
    }

    /// The discovery document (with its keys), read again when `fresh` or stale.
    async fn metadata(&self, fresh: bool) -> Result<CoreProviderMetadata, UpstreamError> {
        let mut cached = self.discovered.lock().await;
        if let Some((at, m)) = cached.as_ref()
            && !fresh
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone()).map_err(|e| failed("issuer", e))?;
        let m = CoreProviderMetadata::discover_async(issuer, &self.http).await.map_err(|e| failed("discovery", e))?;
        *cached = Some((Instant::now(), m.clone()));
        Ok(m)
    }

    fn client(&self, metadata: CoreProviderMetadata, redirect_uri: &str) -> Result<RpClient, UpstreamError> {
        let redirect = RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| failed("redirect URI", e))?;
        Ok(CoreClient::from_provider_metadata(metadata, ClientId::new(self.config.client_id.clone()), Some(ClientSecret::new(self.config.client_secret.clone())))
            .set_redirect_uri(redirect))
    }

    /// A claim of the verified ID token, by name.
    fn claim<'a>(payload: &'a Value, name: &str) -> Option<&'a str> {
        payload.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
    }
}

type RpClient = openidconnect::core::CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

#[async_trait]
impl Upstream for OidcUpstream {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn label(&self) -> &str {
        &self.label
    }

    fn amr(&self) -> &str {
        "fed"
    }

    fn links_by_email(&self) -> bool {
        self.config.link_by == LinkBy::Email
    }

    async fn authorize_url(&self, flow: &Flow, redirect_uri: &str) -> Result<Url, UpstreamError> {
        let client = self.client(self.metadata(false).await?, redirect_uri)?;
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(flow.pkce_verifier.clone()));
        let state = flow.state.clone();
        let nonce = flow.nonce.clone();
        let mut request = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, move || CsrfToken::new(state), move || Nonce::new(nonce))
            .set_pkce_challenge(challenge);
        let scopes = if self.config.scopes.is_empty() { vec!["profile".to_owned(), "email".to_owned()] } else { self.config.scopes.clone() };
        for s in scopes.into_iter().filter(|s| s != "openid") {
            request = request.add_scope(Scope::new(s));
        }
        Ok(request.url().0)
    }

    async fn finish(&self, flow: &Flow, query: &HashMap<String, String>, redirect_uri: &str) -> Result<ExternalIdentity, UpstreamError> {
        let Some(code) = query.get("code") else {
            return Err(UpstreamError::Refused("the provider sent no authorization code".into()));
        };
        // RFC 9207: where the provider names itself, it must be the one asked.
        if let Some(iss) = query.get("iss")
            && iss.trim_end_matches('/') != self.config.issuer.trim_end_matches('/')
        {
            return Err(UpstreamError::Failed(format!("the callback names issuer {iss}, not {}", self.config.issuer)));
        }
        let client = self.client(self.metadata(false).await?, redirect_uri)?;
        let token = client
            .exchange_code(AuthorizationCode::new(code.clone()))
            .map_err(|e| failed("token endpoint", e))?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| failed("code exchange", e))?;
        let id_token = token.id_token().ok_or_else(|| UpstreamError::Failed("the token response has no ID token".into()))?;
        let nonce = Nonce::new(flow.nonce.clone());
        let verified = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(c) => c.subject().as_str().to_owned(),
            Err(first) => {
                // Keys may have rotated since discovery: read them again, once.
                let client = self.client(self.metadata(true).await?, redirect_uri)?;
                id_token.claims(&client.id_token_verifier(), &nonce).map_err(|_| failed("ID token", first))?.subject().as_str().to_owned()
            }
        };
        // The payload of the token just verified, for the configured claims.
        let raw = id_token.to_string();
        let payload: Value = raw
            .split('.')
            .nth(1)
            .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let c = &self.config;
        let verified_if = |claim: &str, flag: &str| {
            Self::claim(&payload, claim).filter(|_| payload.get(flag).and_then(Value::as_bool) == Some(true)).map(str::to_owned)
        };
        Ok(ExternalIdentity {
            subject: verified,
            name: Self::claim(&payload, c.name_claim.as_deref().unwrap_or("name")).map(str::to_owned),
            verified_email: verified_if(c.email_claim.as_deref().unwrap_or("email"), "email_verified"),
            verified_phone: verified_if(c.phone_claim.as_deref().unwrap_or("phone_number"), "phone_number_verified"),
            session: Self::claim(&payload, "sid").map(str::to_owned),
        })
    }

    async fn logout(&self, logout_token: &str) -> Result<UpstreamLogout, UpstreamError> {
        let refused = |why: &str| UpstreamError::Refused(format!("logout token: {why}"));
        let parts: Vec<&str> = logout_token.split('.').collect();
        let [header, payload, signature] = parts.as_slice() else { return Err(refused("not a signed JWT")) };
        let decode = |part: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).map_err(|_| refused("not base64url"));
        let header: Value = serde_json::from_slice(&decode(header)?).map_err(|_| refused("header is not JSON"))?;
        let claims: Value = serde_json::from_slice(&decode(payload)?).map_err(|_| refused("payload is not JSON"))?;
        let signature = decode(signature)?;
        let alg: CoreJwsSigningAlgorithm = serde_json::from_value(header["alg"].clone()).map_err(|_| refused("unknown alg"))?;
        if alg == CoreJwsSigningAlgorithm::None {
            return Err(refused("unsigned"));
        }
        let kid = header["kid"].as_str();
        let signed = &logout_token[..logout_token.rfind('.').unwrap_or(0)];
        let checks = |m: &CoreProviderMetadata| {
            m.jwks()
                .keys()
                .iter()
                .filter(|k| kid.is_none() || k.key_id().map(|i| i.as_str()) == kid)
                .any(|k| k.verify_signature(&alg, signed.as_bytes(), &signature).is_ok())
        };
        // Keys may have rotated since discovery: read them again, once.
        if !checks(&self.metadata(false).await?) && !checks(&self.metadata(true).await?) {
            return Err(refused("the signature does not check against the provider's keys"));
        }
        if claims["iss"].as_str().map(|i| i.trim_end_matches('/')) != Some(self.config.issuer.trim_end_matches('/')) {
            return Err(refused("another issuer"));
        }
        let audience = match &claims["aud"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !audience.contains(&self.config.client_id.as_str()) {
            return Err(refused("not addressed to CivicHub"));
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        if claims["iat"].as_i64().is_none_or(|iat| (now - iat).abs() > LOGOUT_TOKEN_AGE) {
            return Err(refused("iat is missing or not recent"));
        }
        if claims["jti"].as_str().is_none_or(str::is_empty) || claims.get("nonce").is_some() {
            return Err(refused("jti is missing, or a nonce is present"));
        }
        if claims["events"].get(BACKCHANNEL_EVENT).is_none_or(|e| !e.is_object()) {
            return Err(refused("no back-channel logout event"));
        }
        let logout = UpstreamLogout {
            subject: claims["sub"].as_str().map(str::to_owned),
            session: claims["sid"].as_str().map(str::to_owned),
        };
        if logout.subject.is_none() && logout.session.is_none() {
            return Err(refused("neither sub nor sid"));
        }
        Ok(logout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_form_reads_like_the_file_form() {
        let c = UpstreamConfig::parse_flag("name=zjzw,issuer=https://id.zj.gov.cn,client_id=civichub,client_secret=s3cret,scopes=openid email,link-by=email,label=浙里办登录").unwrap();
        assert_eq!((c.name.as_str(), c.issuer.as_str(), c.client_id.as_str()), ("zjzw", "https://id.zj.gov.cn", "civichub"));
        assert_eq!(c.scopes, vec!["openid", "email"]);
        assert_eq!((c.link_by, c.label.as_deref()), (LinkBy::Email, Some("浙里办登录")));
        for bad in ["name=zjzw", "name=ZJ,issuer=https://x,client_id=a,client_secret=b", "name=a,issuer=ftp://x,client_id=a,client_secret=b", "name=a,colour=red", "nonsense"] {
            assert!(UpstreamConfig::parse_flag(bad).is_err(), "{bad}");
        }
    }
}
