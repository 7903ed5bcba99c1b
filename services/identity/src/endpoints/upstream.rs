//! `GET /login/upstream/{name}` sends the browser to an upstream identity
//! provider; `GET /login/upstream/{name}/callback` is where it comes back.
//! The upstream account is then a CivicHub account: the one linked to it,
//! else the one its verified mobile number or e-mail address names (where
//! the upstream allows), else it waits for a password login to link it.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::endpoints::login::{establish, safe_return};
use crate::endpoints::passkey::recent_sign_in;
use crate::federation::FLOW_SECS;
use crate::http::{self, RequestContext, context, with_identity};
use crate::{Contact, ExternalIdentity, Identity, Upstream, UpstreamError};

/// `GET /login/upstream/{name}` and its callback.
pub fn filter(id: Arc<Identity>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let start = warp::path!("login" / "upstream" / String)
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_identity(id.clone()))
        .and(context())
        .then(start);
    let callback = warp::path!("login" / "upstream" / String / "callback")
        .and(warp::get())
        .and(warp::query::<HashMap<String, String>>())
        .and(with_identity(id.clone()))
        .and(context())
        .then(callback);
    let logout = warp::path!("login" / "upstream" / String / "backchannel-logout")
        .and(warp::post())
        .and(crate::http::limited_body(64 * 1024))
        .and(with_identity(id))
        .then(backchannel_logout);
    start.or(callback).unify().or(logout).unify()
}

fn redirect_uri(id: &Identity, name: &str) -> String {
    format!("{}/login/upstream/{name}/callback", id.settings.issuer_str().trim_end_matches('/'))
}

async fn start(name: String, q: HashMap<String, String>, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let Some(upstream) = id.upstream(&name) else {
        return http::error_page(StatusCode::NOT_FOUND, "没有这种登录方式。");
    };
    let return_to = safe_return(q.get("return_to").map(String::as_str));
    let link = q.get("intent").map(String::as_str) == Some("link");
    if link {
        // A new way into the account: only for someone who signed in just now.
        let (session, user) = match http::signed_in(&id, ctx.session_cookie.as_deref(), return_to).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        if let Err(r) = recent_sign_in(&id, &session, &user.username, return_to).await {
            return r;
        }
    }
    // The browser's own cookie is kept (a login started in another tab goes on),
    // when it looks like one this hub made (URL-safe Base64).
    let browser = ctx
        .upstream_cookie
        .clone()
        .filter(|b| b.len() >= 32 && b.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or_else(|| civichub_store::random_token(32));
    let flow = match id.federation.begin(&name, return_to, link, &browser).await {
        Ok(f) => f,
        Err(e) => return http::server_error(e),
    };
    match upstream.authorize_url(&flow, &redirect_uri(&id, &name)).await {
        Ok(url) => http::with_cookie(http::redirect(StatusCode::FOUND, url.as_str()), http::UPSTREAM_COOKIE, &browser, Some(2 * FLOW_SECS), id.settings.secure_cookies()),
        Err(e) => failed(upstream.as_ref(), &e),
    }
}

/// The page for an upstream that said no or could not be asked.
fn failed(upstream: &dyn Upstream, e: &UpstreamError) -> Response {
    match e {
        UpstreamError::Refused(why) => http::error_page(StatusCode::FORBIDDEN, &format!("{}未成功：{why}", upstream.label())),
        UpstreamError::Failed(why) => {
            tracing::warn!("login through {}: {why}", upstream.name());
            http::error_page(StatusCode::BAD_GATEWAY, &format!("暂时无法完成{}，请稍后再试或使用用户名和密码登录。", upstream.label()))
        }
    }
}

async fn callback(name: String, q: HashMap<String, String>, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let Some(upstream) = id.upstream(&name) else {
        return http::error_page(StatusCode::NOT_FOUND, "没有这种登录方式。");
    };
    let Some(state) = q.get("state") else {
        return http::error_page(StatusCode::BAD_REQUEST, "登录回调缺少 state 参数。");
    };
    let browser = ctx.upstream_cookie.clone().unwrap_or_default();
    let (flow, return_to, link) = match id.federation.take(&name, state, &browser).await {
        Ok(Some(f)) => f,
        Ok(None) => return http::error_page(StatusCode::BAD_REQUEST, "这次登录已完成、已过期，或不是在这个浏览器中发起的，请返回重新登录。"),
        Err(e) => return http::server_error(e),
    };
    if let Some(error) = q.get("error") {
        let why = q.get("error_description").cloned().unwrap_or_else(|| error.clone());
        return failed(upstream.as_ref(), &UpstreamError::Refused(format!("登录被取消或拒绝（{why}）")));
    }
    let who = match upstream.finish(&flow, &q, &redirect_uri(&id, &name)).await {
        Ok(w) => w,
        Err(e) => return failed(upstream.as_ref(), &e),
    };
    if link {
        return link_to_signed_in(&id, upstream.as_ref(), &who, &ctx, &return_to).await;
    }
    let user_id = match account(&id, upstream.as_ref(), &who, &ctx).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            // Parked for this browser only: the link it offers cannot be handed to someone else.
            return match id.federation.park(&name, &who, &return_to, &browser).await {
                Ok(key) => {
                    let query = serde_urlencoded::to_string([("return_to", return_to.as_str()), ("link", key.as_str())]).unwrap_or_default();
                    http::redirect(StatusCode::SEE_OTHER, &format!("/login?{query}"))
                }
                Err(e) => http::server_error(e),
            };
        }
        Err(e) => return http::server_error(e),
    };
    let user = match id.users.get(&user_id).await {
        Ok(u) => u,
        Err(e) => return http::server_error(e),
    };
    if user.disabled {
        return http::error_page(StatusCode::FORBIDDEN, "该账号已停用，请联系本单位信息化管理员。");
    }
    establish(&id, &ctx, &user, &[upstream.amr()], crate::ACR_SINGLE_FACTOR, Some((upstream.name(), &who)), &return_to).await
}

/// `POST /login/upstream/{name}/backchannel-logout`: the upstream's logout
/// token ends the sessions its login started here (and so tells this hub's
/// own clients, by their back-channel). 200 when done, 400 for a token that
/// does not check (OpenID Connect Back-Channel Logout 1.0, 2.8).
async fn backchannel_logout(name: String, body: bytes::Bytes, id: Arc<Identity>) -> Response {
    let fail = |description: &str| {
        let mut r = http::json(StatusCode::BAD_REQUEST, &json!({ "error": "invalid_request", "error_description": description }));
        r.headers_mut().insert("cache-control", warp::http::HeaderValue::from_static("no-store"));
        r
    };
    let Some(upstream) = id.upstream(&name) else { return fail("no such upstream") };
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let Some(token) = form.get("logout_token") else { return fail("logout_token is required") };
    let logout = match upstream.logout(token).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("a back-channel logout from {name} was refused: {e}");
            return fail(&e.to_string());
        }
    };
    let ended = async {
        let mut ended = 0;
        for session_id in id.federation.sessions_of(&name, &logout).await? {
            if let Some(session) = id.sessions.by_id(&session_id).await? {
                id.sessions.end(&session, None).await?;
                ended += 1;
            }
        }
        Ok::<_, crate::Error>(ended)
    };
    match ended.await {
        Ok(n) => {
            tracing::info!("{name} logged out {n} session(s) here");
            let mut r = warp::reply::Reply::into_response(warp::reply());
            r.headers_mut().insert("cache-control", warp::http::HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => http::server_error_json(e),
    }
}

/// Links `who` to the person signed in in this browser (from the account page).
async fn link_to_signed_in(id: &Identity, upstream: &dyn Upstream, who: &ExternalIdentity, ctx: &RequestContext, return_to: &str) -> Response {
    let linked = async {
        let Some(session) = id.sessions.from_cookie(ctx.session_cookie.as_deref()).await? else {
            return Ok::<_, crate::Error>(Err(http::error_page(StatusCode::UNAUTHORIZED, "登录已失效，请重新登录后再关联。")));
        };
        if let Some(other) = id.federation.linked(upstream.name(), &who.subject).await?
            && other != session.user_id
        {
            return Ok(Err(http::error_page(StatusCode::CONFLICT, &format!("该{}账号已关联另一个统一身份账号，请先在那个账号中解除关联。", upstream.label().trim_end_matches("登录")))));
        }
        id.link_account(&session.user_id, upstream.name(), &who.subject, "account", ctx.ip.as_deref()).await?;
        Ok(Ok(()))
    };
    match linked.await {
        Ok(Ok(())) => {
            let sep = if return_to.contains('?') { '&' } else { '?' };
            http::redirect(StatusCode::SEE_OTHER, &format!("{return_to}{sep}linked={}", upstream.name()))
        }
        Ok(Err(page)) => page,
        Err(e) => http::server_error(e),
    }
}

/// The CivicHub account of `who`: linked, or matched (and then linked) by a
/// contact detail the upstream verified, where it allows that.
async fn account(id: &Identity, upstream: &dyn Upstream, who: &ExternalIdentity, ctx: &RequestContext) -> crate::Result<Option<String>> {
    if let Some(user_id) = id.federation.linked(upstream.name(), &who.subject).await? {
        return Ok(Some(user_id));
    }
    let candidates = [
        (upstream.links_by_phone(), Contact::Phone, who.verified_phone.as_deref(), "phone"),
        (upstream.links_by_email(), Contact::Email, who.verified_email.as_deref(), "email"),
    ];
    for (allowed, contact, value, by) in candidates {
        let (true, Some(value)) = (allowed, value) else { continue };
        if let Some(user_id) = id.federation.only_user_with(contact, value).await? {
            id.link_account(&user_id, upstream.name(), &who.subject, by, ctx.ip.as_deref()).await?;
            return Ok(Some(user_id));
        }
    }
    Ok(None)
}
