//! `GET|POST /authorize`: the authorization endpoint.
//!
//! CivicHub decides login and consent itself (SSO session, `prompt`,
//! `max_age`, remembered consent), then hands the request to oxide-auth's
//! authorization flow, which validates the protocol and issues the code.

use std::sync::Arc;

use oxide_auth_async::endpoint::authorization::AuthorizationFlow;
use url::Url;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::endpoints::consent;
use crate::http::{self, RequestContext, context, form_body, raw_query, with_identity};
use crate::oauth::{DbAuthorizer, DbIssuer, DbRegistrar, HubEndpoint, OAuthFailure, OAuthRequest, Solicitor};
use crate::oauth::Flow;
use crate::oidc::LoginContext;
use crate::Identity;
use civichub_store::now as store_now;

/// `GET /authorize?…` and `POST /authorize` (form), as OIDC Core §3.1.2.1 allows.
pub fn filter(id: Arc<Identity>) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let get = warp::path!("authorize").and(warp::get()).and(raw_query());
    let post = warp::path!("authorize")
        .and(warp::post())
        .and(form_body())
        .map(|b: bytes::Bytes| String::from_utf8_lossy(&b).into_owned());
    get.or(post).unify().and(with_identity(id)).and(context()).then(handle)
}

/// `redirect_uri?error=…&error_description=…&state=…&iss=…`.
pub fn error_redirect(id: &Identity, redirect_uri: &str, error: &str, description: &str, state: Option<&str>) -> Response {
    let Ok(mut url) = Url::parse(redirect_uri) else {
        return http::error_page(StatusCode::BAD_REQUEST, "回调地址无效。");
    };
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("error", error).append_pair("error_description", description);
        if let Some(state) = state {
            q.append_pair("state", state);
        }
        q.append_pair("iss", &id.settings.issuer_str());
    }
    http::redirect(StatusCode::FOUND, url.as_str())
}

/// The authorization request with `word` removed from `prompt` (and, for
/// `login`, without `max_age`), so that the request re-entered after login
/// or consent does not ask again.
pub fn without_prompt(raw: &str, word: &str) -> String {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).unwrap_or_default();
    let kept: Vec<(String, String)> = pairs
        .into_iter()
        .filter_map(|(k, v)| {
            // The login that `prompt=login` or `max_age` asked for is the one
            // about to happen: coming back, neither may ask for another
            // (`max_age=0` would loop). `auth_time` is in every ID token.
            if word == "login" && k == "max_age" {
                return None;
            }
            if k != "prompt" {
                return Some((k, v));
            }
            let rest: Vec<&str> = v.split_whitespace().filter(|p| *p != word).collect();
            (!rest.is_empty()).then(|| (k, rest.join(" ")))
        })
        .collect();
    serde_urlencoded::to_string(kept).unwrap_or_default()
}

async fn handle(raw: String, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let req = match OAuthRequest::new(&raw, b"", None) {
        Ok(r) => r,
        Err(_) => return http::error_page(StatusCode::BAD_REQUEST, "授权请求格式错误。"),
    };
    // Client and redirect URI first: until both are known good, never redirect.
    let Some(client_id) = req.param("client_id") else {
        return http::error_page(StatusCode::BAD_REQUEST, "授权请求缺少 client_id 参数。");
    };
    let client = match id.clients.get(&client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return http::error_page(StatusCode::BAD_REQUEST, "应用未注册（client_id 无效），无法继续。"),
        Err(e) => return http::server_error(e),
    };
    let Some(redirect_uri) = req.param("redirect_uri") else {
        return http::error_page(StatusCode::BAD_REQUEST, "授权请求缺少 redirect_uri 参数。");
    };
    if !client.redirect_uris.contains(&redirect_uri) {
        return http::error_page(
            StatusCode::BAD_REQUEST,
            "redirect_uri 与该应用登记的回调地址不一致，为保护您的账号，已拒绝跳转。",
        );
    }
    let state = req.param("state");
    let fail = |error: &str, description: &str| error_redirect(&id, &redirect_uri, error, description, state.as_deref());

    if req.param("response_type").as_deref() != Some("code") {
        return fail("unsupported_response_type", "only response_type=code is supported");
    }
    if req.param("request").is_some() || req.param("request_uri").is_some() {
        return fail("request_not_supported", "request objects are not supported");
    }
    let challenge = req.param("code_challenge");
    let method = req.param("code_challenge_method");
    if challenge.is_some() && method.as_deref() != Some("S256") {
        return fail("invalid_request", "code_challenge_method must be S256");
    }
    if client.public && challenge.is_none() {
        return fail("invalid_request", "public clients must use PKCE with code_challenge_method=S256");
    }
    let prompt = req.param("prompt").unwrap_or_default();
    let prompts: Vec<&str> = prompt.split_whitespace().collect();
    if prompts.contains(&"none") && prompts.len() > 1 {
        return fail("invalid_request", "prompt=none cannot be combined with other values");
    }
    let max_age = match req.param("max_age").map(|m| m.parse::<i64>()) {
        None => None,
        Some(Ok(m)) if m >= 0 => Some(m),
        Some(_) => return fail("invalid_request", "max_age must be a non-negative integer"),
    };

    let session = match id.sessions.from_cookie(ctx.session_cookie.as_deref()).await {
        Ok(s) => s,
        Err(e) => return http::server_error(e),
    };
    let too_old = |auth_time: i64| max_age.is_some_and(|m| store_now() - auth_time > m);
    let session = match session {
        Some(s) if !prompts.contains(&"login") && !too_old(s.auth_time) => s,
        _ => {
            if prompts.contains(&"none") {
                return fail("login_required", "the user is not signed in");
            }
            let return_to = format!("/authorize?{}", without_prompt(&raw, "login"));
            let mut login = vec![("return_to", return_to.as_str()), ("client", client.client_id.as_str())];
            let hint = req.param("login_hint");
            if let Some(hint) = hint.as_deref() {
                login.push(("login_hint", hint));
            }
            let query = serde_urlencoded::to_string(login).unwrap_or_default();
            return http::redirect(StatusCode::FOUND, &format!("/login?{query}"));
        }
    };

    // Multi-factor, when the client demands it or the request asks for it
    // (acr_values): a single-factor session is asked only for the second factor.
    let asks_mfa = req.param("acr_values").is_some_and(|v| v.split_whitespace().any(|a| a == crate::ACR_MULTI_FACTOR || a == "mfa"));
    if (client.require_mfa || asks_mfa) && session.acr != crate::ACR_MULTI_FACTOR {
        if prompts.contains(&"none") {
            return fail("interaction_required", "multi-factor authentication is needed");
        }
        match id.has_second_factor(&session.user_id).await {
            Ok(true) => {
                let pending = crate::Pending {
                    user_id: session.user_id.clone(),
                    amr: session.amr.clone(),
                    session_id: Some(session.id.clone()),
                    return_to: format!("/authorize?{raw}"),
                    link: None,
                };
                return match id.mfa.park(&pending).await {
                    Ok(key) => http::redirect(StatusCode::FOUND, &format!("/login/mfa?{}", serde_urlencoded::to_string([("key", key)]).unwrap_or_default())),
                    Err(e) => http::server_error(e),
                };
            }
            Ok(false) => {
                // No second factor yet: the person sets one up on the account
                // page (as a required action) and comes back here, where the
                // step-up above asks for it.
                let back = format!("/authorize?{raw}");
                return http::redirect(StatusCode::FOUND, &format!("/account?{}#mfa", serde_urlencoded::to_string([("return_to", back.as_str())]).unwrap_or_default()));
            }
            Err(e) => return http::server_error(e),
        }
    }

    let requested: Vec<String> = req
        .param("scope")
        .unwrap_or_default()
        .split_whitespace()
        .filter(|s| client.allows_scope(s))
        .map(str::to_owned)
        .collect();
    if !client.first_party {
        let remembered = match consent::covers(&id, &session.user_id, &client.client_id, &requested).await {
            Ok(c) => c,
            Err(e) => return http::server_error(e),
        };
        if !remembered || prompts.contains(&"consent") {
            if prompts.contains(&"none") {
                return fail("consent_required", "the user has not consented to this client");
            }
            return consent::page(&id, &ctx, &session, &client, &requested, &without_prompt(&raw, "consent")).await;
        }
    }

    let login = LoginContext {
        sid: session.sid.clone(),
        auth_time: session.auth_time,
        acr: session.acr.clone(),
        amr: session.amr.clone(),
        nonce: req.param("nonce"),
    };
    let endpoint = HubEndpoint::new(
        DbRegistrar::knowing(id.clone(), Flow::User, client.clone()),
        DbAuthorizer::new(id.clone(), Some(login), ctx.ip.clone()),
        DbIssuer::new(id.clone(), ctx.ip.clone()),
        Solicitor::Authorized(session.user_id.clone()),
        Vec::new(),
        client.public,
    );
    let mut flow = match AuthorizationFlow::prepare(endpoint) {
        Ok(f) => f,
        Err(e) => return http::server_error(format!("{e:?}")),
    };
    match flow.execute(req).await {
        Ok(mut response) => {
            if let Some(location) = response.location_mut() {
                location.query_pairs_mut().append_pair("iss", &id.settings.issuer_str());
            }
            response.into_reply()
        }
        Err(OAuthFailure::BadRequest(m)) => http::error_page(StatusCode::BAD_REQUEST, &m),
        Err(e) => http::server_error(format!("{e:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::without_prompt;

    #[test]
    fn prompt_words_are_removed_one_at_a_time() {
        assert_eq!(without_prompt("a=1&prompt=login", "login"), "a=1");
        assert_eq!(without_prompt("prompt=login+consent&b=2", "login"), "prompt=consent&b=2");
        assert_eq!(without_prompt("x=%E4%B8%AD", "login"), "x=%E4%B8%AD");
        assert_eq!(without_prompt("a=1&max_age=0", "login"), "a=1", "max_age=0 asks for one login, not a loop");
        assert_eq!(without_prompt("a=1&max_age=0", "consent"), "a=1&max_age=0");
    }
}
