//! The OpenID Connect layer around oxide-auth: claims, ID tokens, the
//! discovery document, logout tokens and `id_token_hint` checks, all built
//! with the `openidconnect` crate's types and signing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeZone, Utc};
use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGenderClaim, CoreGrantType,
    CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{
    AccessToken, AdditionalClaims, AdditionalProviderMetadata, Audience, AuthUrl, AuthenticationContextClass,
    AuthenticationMethodReference, EndSessionUrl, EndUserEmail, EndUserName, EndUserPhoneNumber, EndUserUsername,
    IdToken, IdTokenClaims, IdTokenVerifier, IssuerUrl, JsonWebKeySetUrl, LogoutProviderMetadata, Nonce,
    PrivateSigningKey, ProviderMetadata, ResponseTypes, Scope, StandardClaims, SubjectIdentifier, TokenUrl,
    UserInfoClaims, UserInfoUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::keys::LoadedKey;
use crate::users::User;
use crate::{Error, Result, Settings};

/// Claims CivicHub adds to ID tokens and userinfo beyond the standard ones.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct HubClaims {
    /// The SSO session id, for Back-Channel Logout.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sid: Option<String>,
    /// Department (with the `department` scope).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub department: Option<String>,
    /// Employee number (with the `department` scope).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub employee_number: Option<String>,
    /// Roles (with the `department` scope).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub roles: Option<Vec<String>>,
}
impl AdditionalClaims for HubClaims {}

/// ID token claims with CivicHub's additions.
pub type HubIdTokenClaims = IdTokenClaims<HubClaims, CoreGenderClaim>;
/// An ID token with CivicHub's additions.
pub type HubIdToken = IdToken<HubClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm>;

/// What a grant remembers of the login behind it, carried from the
/// authorization code to every token issued from it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LoginContext {
    /// SSO session id.
    pub sid: String,
    /// When the person authenticated.
    pub auth_time: i64,
    /// Authentication context class reached.
    pub acr: String,
    /// Authentication methods used.
    pub amr: Vec<String>,
    /// The client's nonce, echoed in the first ID token only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

fn time(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_else(Utc::now)
}

/// The standard and CivicHub claims `user` releases under `scopes`.
pub fn user_claims(user: &User, scopes: &[&str]) -> (StandardClaims<CoreGenderClaim>, HubClaims) {
    let has = |s: &str| scopes.contains(&s);
    let mut standard = StandardClaims::new(SubjectIdentifier::new(user.id.clone()));
    if has("profile") {
        standard = standard
            .set_name(user.name.clone().map(|n| EndUserName::new(n).into()))
            .set_preferred_username(Some(EndUserUsername::new(user.username.clone())))
            .set_updated_at(Some(time(user.updated_at)));
    }
    if has("email")
        && let Some(email) = &user.email {
            standard = standard.set_email(Some(EndUserEmail::new(email.clone()))).set_email_verified(Some(true));
        }
    if has("phone")
        && let Some(phone) = &user.phone {
            standard = standard.set_phone_number(Some(EndUserPhoneNumber::new(phone.clone())));
        }
    let mut extra = HubClaims::default();
    if has("department") {
        extra.department = user.department.clone();
        extra.employee_number = user.employee_no.clone();
        extra.roles = Some(user.roles.clone());
    }
    (standard, extra)
}

/// The userinfo document for `user` under `scopes`.
pub fn userinfo(user: &User, scopes: &[&str]) -> UserInfoClaims<HubClaims, CoreGenderClaim> {
    let (standard, extra) = user_claims(user, scopes);
    UserInfoClaims::new(standard, extra)
}

/// Everything an ID token says.
pub struct IdTokenInput<'a> {
    /// The person.
    pub user: &'a User,
    /// The audience.
    pub client_id: &'a str,
    /// Granted scopes.
    pub scopes: &'a [&'a str],
    /// The login behind the grant.
    pub login: &'a LoginContext,
    /// Include the nonce (first issue only, not on refresh).
    pub with_nonce: bool,
    /// The access token issued beside it, for `at_hash`.
    pub access_token: &'a str,
}

/// Signs an ID token with `key`.
pub fn id_token(settings: &Settings, key: &LoadedKey, input: IdTokenInput<'_>) -> Result<String> {
    let now = Utc::now();
    let (standard, mut extra) = user_claims(input.user, input.scopes);
    extra.sid = Some(input.login.sid.clone());
    let claims = HubIdTokenClaims::new(
        IssuerUrl::new(settings.issuer_str()).map_err(|e| Error::Invalid(e.to_string()))?,
        vec![Audience::new(input.client_id.to_owned())],
        now + chrono::Duration::seconds(settings.id_token_ttl),
        now,
        standard,
        extra,
    )
    .set_auth_time(Some(time(input.login.auth_time)))
    .set_auth_context_ref(Some(AuthenticationContextClass::new(input.login.acr.clone())))
    .set_auth_method_refs(Some(input.login.amr.iter().cloned().map(AuthenticationMethodReference::new).collect()))
    .set_authorized_party(Some(openidconnect::ClientId::new(input.client_id.to_owned())))
    .set_nonce(input.login.nonce.clone().filter(|_| input.with_nonce).map(Nonce::new));
    let token = HubIdToken::new(
        claims,
        &key.key,
        key.jws_alg(),
        Some(&AccessToken::new(input.access_token.to_owned())),
        None,
    )
    .map_err(|e| Error::Crypto(e.to_string()))?;
    Ok(token.to_string())
}

/// Signs a JWT whose payload `openidconnect` has no type for (logout tokens).
pub fn sign_jwt(key: &LoadedKey, typ: &str, payload: &serde_json::Value) -> Result<String> {
    let alg = key.alg.as_str();
    let header = json!({ "alg": alg, "typ": typ, "kid": key.kid });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let signature = key.key.sign(&key.jws_alg(), input.as_bytes()).map_err(|e| Error::Crypto(e.to_string()))?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

/// A Back-Channel Logout 1.0 logout token for `sub`/`sid`, addressed to `client_id`.
pub fn logout_token(settings: &Settings, key: &LoadedKey, client_id: &str, sub: &str, sid: &str) -> Result<String> {
    let now = Utc::now().timestamp();
    sign_jwt(
        key,
        "logout+jwt",
        &json!({
            "iss": settings.issuer_str(),
            "aud": client_id,
            "iat": now,
            "exp": now + 120,
            "jti": civichub_store::random_token(16),
            "sub": sub,
            "sid": sid,
            "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        }),
    )
}

/// What a verified `id_token_hint` tells.
#[derive(Debug, Clone)]
pub struct HintClaims {
    /// The client the token was issued to.
    pub client_id: String,
    /// The user.
    pub sub: String,
    /// The session.
    pub sid: Option<String>,
}

/// Verifies an `id_token_hint`: our signature and issuer, any age (RP-Initiated
/// Logout allows an expired hint).
pub fn verify_hint(settings: &Settings, jwks: CoreJsonWebKeySet, hint: &str) -> Result<HintClaims> {
    let invalid = |why: &str| Error::Invalid(format!("id_token_hint is not valid: {why}"));
    let payload = hint.split('.').nth(1).ok_or_else(|| invalid("not a JWT"))?;
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid("not a JWT"))?;
    #[derive(Deserialize)]
    struct Peek {
        aud: serde_json::Value,
        iat: i64,
    }
    let peek: Peek = serde_json::from_slice(&payload).map_err(|_| invalid("unreadable claims"))?;
    let client_id = match &peek.aud {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.first().and_then(|v| v.as_str()).unwrap_or_default().to_owned(),
        _ => return Err(invalid("no audience")),
    };
    let token: HubIdToken = hint.parse().map_err(|_| invalid("not an ID token"))?;
    let issued = time(peek.iat);
    let verifier: IdTokenVerifier<CoreJsonWebKey> = IdTokenVerifier::new_public_client(
        openidconnect::ClientId::new(client_id.clone()),
        IssuerUrl::new(settings.issuer_str()).map_err(|e| Error::Invalid(e.to_string()))?,
        jwks,
    )
    .set_allowed_algs(vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256, CoreJwsSigningAlgorithm::EcdsaP256Sha256])
    .set_time_fn(move || issued);
    let claims = token.claims(&verifier, |_: Option<&Nonce>| Ok(())).map_err(|e| invalid(&e.to_string()))?;
    Ok(HintClaims {
        client_id,
        sub: claims.subject().to_string(),
        sid: claims.additional_claims().sid.clone(),
    })
}

/// Discovery fields `openidconnect` has no slot for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HubMetadata {
    /// RFC 7662.
    pub introspection_endpoint: String,
    /// RFC 7009.
    pub revocation_endpoint: String,
    /// RFC 7636: only S256.
    pub code_challenge_methods_supported: Vec<String>,
    /// Back-Channel Logout 1.0.
    pub backchannel_logout_supported: bool,
    /// Logout tokens carry `sid`.
    pub backchannel_logout_session_supported: bool,
    /// Authentication methods at the introspection endpoint.
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    /// Authentication methods at the revocation endpoint.
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    /// RFC 9207: `iss` comes back with every authorization response.
    pub authorization_response_iss_parameter_supported: bool,
}
impl AdditionalProviderMetadata for HubMetadata {}

/// The provider metadata type served at `/.well-known/openid-configuration`.
pub type HubProviderMetadata = ProviderMetadata<
    LogoutProviderMetadata<HubMetadata>,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The discovery document.
pub fn discovery(settings: &Settings) -> Result<HubProviderMetadata> {
    let url = |p: &str| settings.url(p);
    let bad = |e: url::ParseError| Error::Invalid(e.to_string());
    let auth_methods = || vec!["client_secret_basic".to_owned(), "client_secret_post".to_owned()];
    let metadata = HubProviderMetadata::new(
        IssuerUrl::new(settings.issuer_str()).map_err(bad)?,
        AuthUrl::new(url("/authorize")).map_err(bad)?,
        JsonWebKeySetUrl::new(url("/jwks")).map_err(bad)?,
        vec![ResponseTypes::new(vec![CoreResponseType::Code])],
        vec![CoreSubjectIdentifierType::Public],
        vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256, CoreJwsSigningAlgorithm::EcdsaP256Sha256],
        LogoutProviderMetadata {
            end_session_endpoint: Some(EndSessionUrl::new(url("/end-session")).map_err(bad)?),
            additional_metadata: HubMetadata {
                introspection_endpoint: url("/introspect"),
                revocation_endpoint: url("/revoke"),
                code_challenge_methods_supported: vec!["S256".into()],
                backchannel_logout_supported: true,
                backchannel_logout_session_supported: true,
                introspection_endpoint_auth_methods_supported: auth_methods(),
                revocation_endpoint_auth_methods_supported: auth_methods(),
                authorization_response_iss_parameter_supported: true,
            },
        },
    )
    .set_token_endpoint(Some(TokenUrl::new(url("/token")).map_err(bad)?))
    .set_userinfo_endpoint(Some(UserInfoUrl::new(url("/userinfo")).map_err(bad)?))
    .set_scopes_supported(Some(
        crate::clients::STANDARD_SCOPES.iter().map(|s| Scope::new((*s).to_owned())).collect(),
    ))
    .set_grant_types_supported(Some(vec![
        CoreGrantType::AuthorizationCode,
        CoreGrantType::RefreshToken,
        CoreGrantType::ClientCredentials,
    ]))
    .set_response_modes_supported(Some(vec![CoreResponseMode::Query]))
    .set_token_endpoint_auth_methods_supported(Some(vec![
        CoreClientAuthMethod::ClientSecretBasic,
        CoreClientAuthMethod::ClientSecretPost,
        CoreClientAuthMethod::None,
    ]))
    .set_acr_values_supported(Some(vec![
        AuthenticationContextClass::new(crate::ACR_SINGLE_FACTOR.into()),
        AuthenticationContextClass::new(crate::ACR_MULTI_FACTOR.into()),
    ]))
    .set_claims_supported(Some(
        [
            "sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", "azp", "at_hash", "name",
            "preferred_username", "updated_at", "email", "email_verified", "phone_number", "department",
            "employee_number", "roles",
        ]
        .iter()
        .map(|c| CoreClaimName::new((*c).to_owned()))
        .collect(),
    ))
    .set_claims_parameter_supported(Some(false))
    .set_request_parameter_supported(Some(false))
    .set_request_uri_parameter_supported(Some(false))
    .set_ui_locales_supported(Some(vec![
        openidconnect::LanguageTag::new("zh-CN".into()),
        openidconnect::LanguageTag::new("en".into()),
    ]));
    Ok(metadata)
}
