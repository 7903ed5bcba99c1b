//! `GET|POST /login/mfa`: the second factor (a code, a recovery code or a
//! passkey) of a login waiting for one
//! (after a password, or a step-up of a live single-factor session for a
//! client or request that demands multi-factor authentication).

use std::sync::Arc;

use askama::Template;
use serde::Deserialize;
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::audit::Actor;
use crate::endpoints::login::{completed, establish};
use crate::endpoints::passkey::PasskeyForm;
use crate::throttle::{ip_key, user_key};
use crate::mfa::with_second_factor;
use crate::http::{self, RequestContext, context, form_body, with_identity};
use crate::{ACR_MULTI_FACTOR, Identity, Pending, Proof};

#[derive(Template)]
#[template(path = "mfa.html")]
struct MfaPage<'a> {
    csrf: &'a str,
    key: &'a str,
    step_up: bool,
    error: Option<&'a str>,
    /// Whether the person can answer with a passkey.
    passkeys: bool,
}

#[derive(Deserialize, Default)]
struct MfaQuery {
    key: Option<String>,
}


/// `GET /login/mfa?key=` and `POST /login/mfa`.
pub fn filter(id: Arc<Identity>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let show = warp::path!("login" / "mfa")
        .and(warp::get())
        .and(warp::query::<MfaQuery>().or(warp::any().map(MfaQuery::default)).unify())
        .and(with_identity(id.clone()))
        .and(context())
        .then(|q: MfaQuery, id: Arc<Identity>, ctx: RequestContext| async move {
            let key = q.key.unwrap_or_default();
            match id.mfa.pending(&key).await {
                Ok(Some(p)) => page(&id, &ctx, StatusCode::OK, &key, &p, None).await,
                Ok(None) => expired(),
                Err(e) => http::server_error(e),
            }
        });
    let submit = warp::path!("login" / "mfa").and(warp::post()).and(form_body()).and(with_identity(id)).and(context()).then(submit);
    show.or(submit).unify()
}

/// Counts a wrong second factor against the account and the address, as a
/// wrong password counts, and records it in the audit trail.
pub(crate) async fn second_factor_failed(id: &Identity, user: &crate::User, ip: Option<&str>) -> crate::Result<()> {
    let s = &id.settings;
    id.throttle.fail(&user_key(&user.username), s.max_failures_per_account, s).await?;
    address_failed(id, user, ip).await
}

/// Counts a wrong second factor against the address only (the account's
/// try was counted before it was checked), and records it in the audit trail.
async fn address_failed(id: &Identity, user: &crate::User, ip: Option<&str>) -> crate::Result<()> {
    let s = &id.settings;
    id.throttle.fail(&ip_key(ip), s.max_failures_per_address, s).await?;
    id.audit.record("mfa.failed", Actor { user_id: Some(&user.id), client_id: None, ip }, json!({})).await
}

fn expired() -> Response {
    let page = http::MessagePage { title: "无法完成请求", message: "这次登录已过期或已完成，请重新登录。", is_error: true, link: Some(("/login", "重新登录")) };
    http::render(StatusCode::BAD_REQUEST, &page)
}

async fn page(id: &Identity, ctx: &RequestContext, status: StatusCode, key: &str, pending: &Pending, error: Option<&str>) -> Response {
    let (csrf, fresh) = http::csrf_token(ctx);
    let passkeys = id.passkeys.available()
        && match id.passkeys.count(&pending.user_id).await {
            Ok(n) => n > 0,
            Err(e) => return http::server_error(e),
        };
    let page = MfaPage { csrf: &csrf, key, step_up: pending.session_id.is_some(), error, passkeys };
    http::with_csrf(http::render(status, &page), &csrf, fresh, id.settings.secure_cookies())
}

async fn submit(body: bytes::Bytes, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let Some(form) = PasskeyForm::parse(&body) else {
        return http::error_page(StatusCode::BAD_REQUEST, "表单格式错误。");
    };
    let key = form.key.clone().unwrap_or_default();
    let pending = match id.mfa.pending(&key).await {
        Ok(Some(p)) => p,
        Ok(None) => return expired(),
        Err(e) => return http::server_error(e),
    };
    if !http::csrf_ok(ctx.csrf_cookie.as_deref(), form.csrf.as_deref()) {
        return page(&id, &ctx, StatusCode::FORBIDDEN, &key, &pending, Some("页面已过期，请重新输入。")).await;
    }
    let user = match id.users.get(&pending.user_id).await {
        Ok(u) if !u.disabled => u,
        Ok(_) => return http::error_page(StatusCode::FORBIDDEN, "该账号已停用。"),
        Err(e) => return http::server_error(e),
    };
    // Codes are throttled like passwords: per account and per address.
    let user_key = user_key(&user.username);
    // The account's try is counted before the factor is checked, the
    // address's failures after (see the password login).
    let ip_key = ip_key(ctx.ip.as_deref());
    let s = &id.settings;
    let throttled = match id.throttle.attempt(&user_key, &ip_key, s).await {
        Ok(Err(_)) => return page(&id, &ctx, StatusCode::TOO_MANY_REQUESTS, &key, &pending, Some("失败次数过多，请稍后再试。")).await,
        Ok(Ok(throttled)) => throttled,
        Err(e) => return http::server_error(e),
    };
    // What proved it, for the audit trail, and its `amr` method.
    let proved: Option<(&str, &str)> = match form.answer() {
        Some((ceremony, credential)) => match id.passkeys.finish_second_factor(&user.id, &ceremony, &credential).await {
            Ok(used) => Some(("passkey", used.amr())),
            Err(crate::Error::Invalid(_)) => None,
            Err(e) => return http::server_error(e),
        },
        None => match id.mfa.verify(&user.id, form.code.as_deref().unwrap_or_default(), civichub_store::now()).await {
            Ok(p) => p.map(|p| (if p == Proof::Totp { "totp" } else { "recovery_code" }, "otp")),
            Err(e) => return http::server_error(e),
        },
    };
    let Some((factor, method)) = proved else {
        // The account's try stays counted.
        if let Err(e) = address_failed(&id, &user, ctx.ip.as_deref()).await {
            return http::server_error(e);
        }
        let msg = if form.credential.is_some() { "通行密钥验证未通过，请重试或输入验证码。" } else { "验证码不正确、已过期或已使用过。" };
        return page(&id, &ctx, StatusCode::UNAUTHORIZED, &key, &pending, Some(msg)).await;
    };
    if let Err(e) = id.throttle.succeeded(throttled, true).await {
        return http::server_error(e);
    }
    if !matches!(id.mfa.finish(&key).await, Ok(true)) {
        return expired();
    }
    if let Err(e) = completed(&id, &user, pending.link.as_deref(), &ctx).await {
        return http::server_error(e);
    }
    let amr = with_second_factor(&pending.amr, method);
    let _ = id.audit.record("mfa.verified", Actor { user_id: Some(&user.id), client_id: None, ip: ctx.ip.as_deref() }, json!({ "factor": factor })).await;
    let amr: Vec<&str> = amr.iter().map(String::as_str).collect();
    if let Some(session_id) = &pending.session_id {
        // Step-up: the live session now has both factors.
        return match id.sessions.by_id(session_id).await {
            Ok(Some(session)) if session.user_id == user.id => match id.sessions.reauthenticate(&session, &amr, ACR_MULTI_FACTOR).await {
                Ok(()) => http::redirect(StatusCode::SEE_OTHER, &pending.return_to),
                Err(e) => http::server_error(e),
            },
            Ok(_) => expired(),
            Err(e) => http::server_error(e),
        };
    }
    establish(&id, &ctx, &user, &amr, ACR_MULTI_FACTOR, None, &pending.return_to).await
}
