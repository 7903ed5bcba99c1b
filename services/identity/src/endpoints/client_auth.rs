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
        let encoded = header.strip_prefix("Basic ")?;
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

/// Turns `client_secret_post` credentials into a Basic header, for the flows
/// of oxide-auth that read only the header.
pub fn body_credentials_as_basic(req: &mut OAuthRequest) {
    if req.auth().is_some() {
        return;
    }
    if let (Some(id), Some(secret)) = (req.body_param("client_id"), req.body_param("client_secret")) {
        let enc = |s: &str| serde_urlencoded::to_string([("v", s)]).unwrap_or_default().trim_start_matches("v=").to_owned();
        let basic = STANDARD.encode(format!("{}:{}", enc(&id), enc(&secret)));
        req.set_auth(Some(format!("Basic {basic}")));
    }
}
