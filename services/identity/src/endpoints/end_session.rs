//! `GET|POST /end-session`: RP-Initiated Logout 1.0.
//!
//! With a valid `id_token_hint` the session ends at once; without one the
//! person is asked to confirm, so no third-party page can log them out.
//! Ending the session queues Back-Channel Logout notices to its clients.

use std::sync::Arc;

use askama::Template;
use url::Url;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::http::{self, MessagePage, RequestContext, context, form_body, raw_query, with_identity};
use crate::oauth::OAuthRequest;
use crate::sessions::SESSION_COOKIE;
use crate::{Identity, oidc};

#[derive(Template)]
#[template(path = "logout.html")]
struct ConfirmPage<'a> {
    csrf: &'a str,
    params: Vec<(&'a str, String)>,
}

/// `GET /end-session?…` and `POST /end-session`.
pub fn filter(id: Arc<Identity>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let get = warp::path!("end-session").and(warp::get()).and(raw_query()).map(|q: String| (q, false));
    let post = warp::path!("end-session")
        .and(warp::post())
        .and(form_body())
        .map(|b: bytes::Bytes| (String::from_utf8_lossy(&b).into_owned(), true));
    get.or(post)
        .unify()
        .and(with_identity(id))
        .and(context())
        .then(|(raw, posted): (String, bool), id, ctx| handle(raw, posted, id, ctx))
}

const PASSED_ON: [&str; 4] = ["id_token_hint", "post_logout_redirect_uri", "state", "client_id"];

async fn handle(raw: String, posted: bool, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let Ok(req) = OAuthRequest::new(&raw, b"", None) else {
        return http::error_page(StatusCode::BAD_REQUEST, "退出请求格式错误。");
    };
    let hint = match req.param("id_token_hint") {
        None => None,
        Some(h) => {
            let jwks = match id.keys.jwks().await {
                Ok(j) => j,
                Err(e) => return http::server_error(e),
            };
            match oidc::verify_hint(&id.settings, jwks, &h) {
                Ok(c) => Some(c),
                Err(_) => return http::error_page(StatusCode::BAD_REQUEST, "id_token_hint 无效，无法确认退出请求的来源。"),
            }
        }
    };
    let client_id = req.param("client_id").or_else(|| hint.as_ref().map(|h| h.client_id.clone()));
    if let (Some(param), Some(h)) = (req.param("client_id"), hint.as_ref())
        && param != h.client_id {
            return http::error_page(StatusCode::BAD_REQUEST, "client_id 与 id_token_hint 不一致。");
        }
    let post_logout = req.param("post_logout_redirect_uri");
    if let Some(uri) = &post_logout {
        let registered = match &client_id {
            Some(c) => match id.clients.get(c).await {
                Ok(Some(client)) => client.post_logout_redirect_uris.contains(uri),
                Ok(None) => false,
                Err(e) => return http::server_error(e),
            },
            None => false,
        };
        if !registered {
            return http::error_page(StatusCode::BAD_REQUEST, "post_logout_redirect_uri 未在该应用登记，已拒绝跳转。");
        }
    }
    let session = match id.sessions.from_cookie(ctx.session_cookie.as_deref()).await {
        Ok(s) => s,
        Err(e) => return http::server_error(e),
    };
    let confirmed = posted && req.param("confirm").as_deref() == Some("yes");
    if confirmed && !http::csrf_ok(ctx.csrf_cookie.as_deref(), req.param("csrf").as_deref()) {
        return http::error_page(StatusCode::FORBIDDEN, "页面已过期或来源不可信，请重新操作。");
    }
    if let Some(session) = &session {
        let hinted = hint.as_ref().is_some_and(|h| h.sub == session.user_id);
        if !hinted && !confirmed {
            let (csrf, fresh) = http::csrf_token(&ctx);
            let params = PASSED_ON.iter().filter_map(|k| req.param(k).map(|v| (*k, v))).collect();
            let page = ConfirmPage { csrf: &csrf, params };
            return http::with_csrf(http::render(StatusCode::OK, &page), &csrf, fresh, id.settings.secure_cookies());
        }
        if let Err(e) = id.sessions.end(session, ctx.ip.as_deref()).await {
            return http::server_error(e);
        }
        id.backchannel_wakeup.notify_one();
    }
    let reply = match post_logout.and_then(|u| Url::parse(&u).ok()) {
        Some(mut url) => {
            if let Some(state) = req.param("state") {
                url.query_pairs_mut().append_pair("state", &state);
            }
            http::redirect(if posted { StatusCode::SEE_OTHER } else { StatusCode::FOUND }, url.as_str())
        }
        None => http::render(
            StatusCode::OK,
            &MessagePage { title: "已退出登录", message: "您已安全退出统一身份认证。", is_error: false, link: Some(("/login", "重新登录")) },
        ),
    };
    http::with_cookie(reply, SESSION_COOKIE, "", Some(0), id.settings.secure_cookies())
}
