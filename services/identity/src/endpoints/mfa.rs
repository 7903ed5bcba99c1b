//! `GET|POST /login/mfa`: the second factor of a login waiting for one
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
use crate::endpoints::login::establish;
use crate::http::{self, RequestContext, context, form_body, with_identity};
use crate::{ACR_MULTI_FACTOR, Identity, Proof};

#[derive(Template)]
#[template(path = "mfa.html")]
struct MfaPage<'a> {
    csrf: &'a str,
    key: &'a str,
    step_up: bool,
    error: Option<&'a str>,
}

#[derive(Deserialize, Default)]
struct MfaQuery {
    key: Option<String>,
}

#[derive(Deserialize)]
struct MfaForm {
    csrf: Option<String>,
    key: Option<String>,
    code: Option<String>,
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
                Ok(Some(p)) => page(&id, &ctx, StatusCode::OK, &key, p.session_id.is_some(), None),
                Ok(None) => expired(),
                Err(e) => http::server_error(e),
            }
        });
    let submit = warp::path!("login" / "mfa").and(warp::post()).and(form_body()).and(with_identity(id)).and(context()).then(submit);
    show.or(submit).unify()
}

fn expired() -> Response {
    http::error_page(StatusCode::BAD_REQUEST, "这次登录已过期或已完成，请重新登录。")
}

fn page(id: &Identity, ctx: &RequestContext, status: StatusCode, key: &str, step_up: bool, error: Option<&str>) -> Response {
    let (csrf, fresh) = http::csrf_token(ctx);
    let page = MfaPage { csrf: &csrf, key, step_up, error };
    http::with_csrf(http::render(status, &page), &csrf, fresh, id.settings.secure_cookies())
}

async fn submit(body: bytes::Bytes, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<MfaForm>(&body) else {
        return http::error_page(StatusCode::BAD_REQUEST, "表单格式错误。");
    };
    let key = form.key.unwrap_or_default();
    let pending = match id.mfa.pending(&key).await {
        Ok(Some(p)) => p,
        Ok(None) => return expired(),
        Err(e) => return http::server_error(e),
    };
    let step_up = pending.session_id.is_some();
    if !http::csrf_ok(ctx.csrf_cookie.as_deref(), form.csrf.as_deref()) {
        return page(&id, &ctx, StatusCode::FORBIDDEN, &key, step_up, Some("页面已过期，请重新输入。"));
    }
    let user = match id.users.get(&pending.user_id).await {
        Ok(u) if !u.disabled => u,
        Ok(_) => return http::error_page(StatusCode::FORBIDDEN, "该账号已停用。"),
        Err(e) => return http::server_error(e),
    };
    // Codes are throttled like passwords: per account and per address.
    let s = &id.settings;
    let user_key = format!("user:{}", user.username);
    let ip_key = format!("ip:{}", ctx.ip.as_deref().unwrap_or("unknown"));
    match id.throttle.check(&[&user_key, &ip_key]).await {
        Ok((Some(_), _)) => return page(&id, &ctx, StatusCode::TOO_MANY_REQUESTS, &key, step_up, Some("失败次数过多，请稍后再试。")),
        Ok(_) => {}
        Err(e) => return http::server_error(e),
    }
    let proof = match id.mfa.verify(&user.id, form.code.as_deref().unwrap_or_default(), civichub_store::now()).await {
        Ok(p) => p,
        Err(e) => return http::server_error(e),
    };
    let Some(proof) = proof else {
        let failed = async {
            id.throttle.fail(&user_key, s.max_failures_per_account, s).await?;
            id.throttle.fail(&ip_key, s.max_failures_per_address, s).await?;
            id.audit.record("mfa.failed", Actor { user_id: Some(&user.id), client_id: None, ip: ctx.ip.as_deref() }, json!({})).await
        };
        if let Err(e) = failed.await {
            return http::server_error(e);
        }
        return page(&id, &ctx, StatusCode::UNAUTHORIZED, &key, step_up, Some("验证码不正确、已过期或已使用过。"));
    };
    if !matches!(id.mfa.finish(&key).await, Ok(true)) {
        return expired();
    }
    let _ = id
        .audit
        .record(
            "mfa.verified",
            Actor { user_id: Some(&user.id), client_id: None, ip: ctx.ip.as_deref() },
            json!({ "factor": if proof == Proof::Totp { "totp" } else { "recovery_code" } }),
        )
        .await;
    let mut amr: Vec<&str> = pending.amr.iter().map(String::as_str).filter(|m| *m != "mfa" && *m != "otp").collect();
    amr.extend(["otp", "mfa"]);
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
