//! Client authentication for the introspection and revocation endpoints:
//! `client_secret_basic` or `client_secret_post` (RFC 6749 §2.3.1).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::Identity;
use crate::clients::Client;
use crate::http;
use crate::oauth::OAuthRequest;

fn unauthorized() -> Response {
    let mut r = http::oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed");
    r.headers_mut().insert(
        warp::http::header::WWW_AUTHENTICATE,
        warp::http::HeaderValue::from_static("Basic realm=\"civichub\""),
    );
    r
}

fn percent_decode(s: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&format!("v={s}")).ok()?;
    pairs.into_iter().next().map(|(_, v)| v)
}

/// The `(client_id, secret)` a request presents, from the Basic header or the body.
pub fn credentials(req: &OAuthRequest) -> Option<(String, Option<String>)> {
    if let Some(header) = req.auth() {
        let encoded = crate::http::credentials_of(header, "Basic")?;
        let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        return Some((percent_decode(id)?, Some(percent_decode(secret)?)));
    }
    Some((req.body_param("client_id")?, req.body_param("client_secret")))
}

/// Authenticates the calling client, or answers 401 `invalid_client`.
/// A public client identifies itself by id alone, where `allow_public` says
/// that is enough (revocation, RFC 7009 §2.1); a confidential one needs its secret.
pub async fn authenticate(id: &Identity, req: &OAuthRequest, allow_public: bool) -> Result<Client, Response> {
    let Some((client_id, secret)) = credentials(req) else { return Err(unauthorized()) };
    let client = match id.clients.get(&client_id).await {
        Ok(Some(client)) => client,
        Ok(None) => return Err(unauthorized()),
        Err(e) => return Err(http::server_error_json(e)),
    };
    let ok = match (client.public, secret) {
        (true, None) => allow_public,
        (false, Some(secret)) => client.secret_matches(secret.as_bytes()),
        _ => false,
    };
    if ok { Ok(client) } else { Err(unauthorized()) }
}

/// Prepares credentials for oxide-auth, which reads the Basic header
/// without the form-decoding RFC 6749 §2.3.1 asks for: a Basic header is
/// decoded and written back raw; with `body_as_basic`, `client_secret_post`
/// credentials become such a header too (oxide-auth's refresh flow reads
/// only the header).
pub fn normalize_for_oxide(req: &mut OAuthRequest, body_as_basic: bool) {
    let raw = |id: &str, secret: &str| Some(format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))));
    if req.auth().is_some() {
        if let Some((id, Some(secret))) = credentials(req) {
            req.set_auth(raw(&id, &secret));
        }
        return;
    }
    if body_as_basic
        && let (Some(id), Some(secret)) = (req.body_param("client_id"), req.body_param("client_secret")) {
            req.set_auth(raw(&id, &secret));
        }
}
