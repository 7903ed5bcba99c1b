//! `GET|POST /login`: the login page: a password, a passkey (see
//! [`super::passkey`]), or a button per upstream identity provider. A password login may also link an upstream account
//! that matched nobody (`link`, parked by the upstream callback).

use std::sync::Arc;

use askama::Template;
use serde::Deserialize;
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::audit::{Actor, Audit};
use crate::throttle::{ip_key, user_key};
use crate::http::{self, RequestContext, context, form_body, with_identity};
use crate::password::{self, Verdict};
use crate::sessions::{SESSION_COOKIE, Sessions};
use crate::values::{Password, Username};
use crate::{ACR_SINGLE_FACTOR, Identity};

/// A button to log in through an upstream.
struct UpstreamButton {
    href: String,
    label: String,
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    csrf: &'a str,
    return_to: &'a str,
    username: &'a str,
    client: Option<&'a str>,
    error: Option<&'a str>,
    /// The parked upstream account this login links, and what to call it.
    link: Option<(&'a str, String)>,
    upstreams: Vec<UpstreamButton>,
    /// Whether passkeys work here (the issuer is a domain name).
    passkeys: bool,
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    return_to: Option<String>,
    login_hint: Option<String>,
    client: Option<String>,
    link: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    csrf: Option<String>,
    username: Option<String>,
    password: Option<String>,
    return_to: Option<String>,
    link: Option<String>,
    /// The client the login is for, kept for the page shown again after a refusal.
    client: Option<String>,
}

/// Only local paths may be returned to after login: never another site.
pub(crate) fn safe_return(to: Option<&str>) -> &str {
    match to {
        // Browsers drop tabs and newlines from URLs, so `/\t/evil.example` would
        // become `//evil.example`: no control character at all.
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && !p.chars().any(char::is_control) => p,
        _ => "/",
    }
}

/// `GET /login` and `POST /login`.
pub fn filter(id: Arc<Identity>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let show = warp::path!("login")
        .and(warp::get())
        .and(warp::query::<LoginQuery>().or(warp::any().map(LoginQuery::default)).unify())
        .and(with_identity(id.clone()))
        .and(context())
        .then(|q: LoginQuery, id: Arc<Identity>, ctx: RequestContext| async move {
            let view = View { return_to: safe_return(q.return_to.as_deref()), client: q.client.as_deref(), link: q.link.as_deref() };
            page(&id, &ctx, StatusCode::OK, &view, q.login_hint.as_deref().unwrap_or(""), None).await
        });
    let submit = warp::path!("login")
        .and(warp::post())
        .and(form_body())
        .and(with_identity(id))
        .and(context())
        .then(submit);
    show.or(submit).unify()
}

/// What a login page is for.
pub(crate) struct View<'a> {
    pub return_to: &'a str,
    pub client: Option<&'a str>,
    pub link: Option<&'a str>,
}

pub(crate) async fn page(id: &Identity, ctx: &RequestContext, status: StatusCode, view: &View<'_>, username: &str, error: Option<&str>) -> Response {
    let (csrf, fresh) = http::csrf_token(ctx);
    let link = match view.link {
        Some(key) => match id.federation.parked(key, ctx.upstream_cookie.as_deref().unwrap_or_default()).await {
            Ok(Some(p)) => {
                let label = id.upstream(&p.provider).map(|u| u.label().trim_end_matches("登录").to_owned()).unwrap_or(p.provider);
                Some((key, format!("{label}账号{}", p.name.map(|n| format!("「{n}」")).unwrap_or_default())))
            }
            Ok(None) => None,
            Err(e) => return http::server_error(e),
        },
        None => None,
    };
    let upstreams = id
        .upstreams()
        .iter()
        .map(|u| UpstreamButton {
            href: format!("/login/upstream/{}?{}", u.name(), serde_urlencoded::to_string([("return_to", view.return_to)]).unwrap_or_default()),
            label: u.label().to_owned(),
        })
        .collect();
    // Only a registered client is named: the hint must not say what a crafted link wants it to.
    let client = match view.client {
        Some(c) => match id.clients.get(c).await {
            Ok(found) => found.is_some().then_some(c),
            Err(e) => return http::server_error(e),
        },
        None => None,
    };
    let page = LoginPage { csrf: &csrf, return_to: view.return_to, username, client, error, link, upstreams, passkeys: id.passkeys.available() };
    http::with_csrf(http::render(status, &page), &csrf, fresh, id.settings.secure_cookies())
}

fn minutes(secs: i64) -> i64 {
    (secs + 59) / 60
}

async fn submit(body: bytes::Bytes, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return http::error_page(StatusCode::BAD_REQUEST, "登录表单格式错误。");
    };
    let return_to = safe_return(form.return_to.as_deref()).to_owned();
    let view = View { return_to: &return_to, client: form.client.as_deref(), link: form.link.as_deref() };
    let typed = form.username.clone().unwrap_or_default();
    if !http::csrf_ok(ctx.csrf_cookie.as_deref(), form.csrf.as_deref()) {
        return page(&id, &ctx, StatusCode::FORBIDDEN, &view, &typed, Some("页面已过期，请重新登录。")).await;
    }
    let (Some(username), Some(pw)) = (form.username, form.password) else {
        return page(&id, &ctx, StatusCode::BAD_REQUEST, &view, &typed, Some("请输入用户名和密码。")).await;
    };
    let Ok(username) = username.parse::<Username>() else {
        return page(&id, &ctx, StatusCode::UNAUTHORIZED, &view, &typed, Some("用户名或密码错误。")).await;
    };
    let s = &id.settings;
    let user_key = user_key(username.as_str());
    let ip_key = ip_key(ctx.ip.as_deref());
    // The account's try is counted before the password is checked and handed
    // back if it is right (`Throttle::attempt`); the address counts failures.
    let throttled = match id.throttle.attempt(&user_key, &ip_key, s).await {
        Ok(Err(until)) => {
            let _ = id
                .audit
                .record("login.throttled", Actor { ip: ctx.ip.as_deref(), ..Default::default() }, json!({ "username": username.as_str() }))
                .await;
            let wait = minutes(until - civichub_store::now());
            let msg = format!("登录失败次数过多，账号或来源地址已被暂时锁定，请 {wait} 分钟后再试。");
            return page(&id, &ctx, StatusCode::TOO_MANY_REQUESTS, &view, username.as_str(), Some(&msg)).await;
        }
        Ok(Ok(throttled)) => throttled,
        Err(e) => return http::server_error(e),
    };
    let found = match id.users.credentials(&username).await {
        Ok(f) => f,
        Err(e) => return http::server_error(e),
    };
    let (user, stored) = match found {
        Some((user, stored)) if !user.disabled => (Some(user), stored),
        _ => (None, None),
    };
    let attempt = Password::attempt(pw);
    let read_hash = stored.clone();
    let verdict = password::verify(stored, attempt.clone()).await;
    let (user, rehash) = match (user, verdict) {
        (Some(user), Verdict::Match { rehash }) => (user, rehash),
        _ => {
            // The account's try stays counted.
            let failed = async {
                id.throttle.fail(&ip_key, s.max_failures_per_address, s).await?;
                id.audit
                    .record("login.failed", Actor { ip: ctx.ip.as_deref(), ..Default::default() }, json!({ "username": username.as_str() }))
                    .await
            };
            if let Err(e) = failed.await {
                return http::server_error(e);
            }
            return page(&id, &ctx, StatusCode::UNAUTHORIZED, &view, username.as_str(), Some("用户名或密码错误。")).await;
        }
    };
    if let (true, Some(read_hash)) = (rehash, read_hash) {
        match password::hash(attempt).await {
            Ok(h) => {
                if let Err(e) = id.users.rehash_password(&user.id, &read_hash, &h).await {
                    tracing::warn!("storing rehashed password: {e}");
                }
            }
            Err(e) => tracing::warn!("rehashing password: {e}"),
        }
    }
    // An enrolled second factor is asked for before the session starts; until
    // it is given, the account's failure count stands and no upstream
    // account is linked.
    let second_factor = match id.has_second_factor(&user.id).await {
        Ok(second) => second,
        Err(e) => return http::server_error(e),
    };
    // The right password hands its try back; the account's count starts
    // again only once every factor is given.
    if let Err(e) = id.throttle.succeeded(throttled, !second_factor).await {
        return http::server_error(e);
    }
    if second_factor {
        let pending = crate::Pending {
            user_id: user.id.clone(),
            amr: vec!["pwd".into()],
            session_id: None,
            return_to: return_to.clone(),
            link: form.link.clone(),
        };
        return match id.mfa.park(&pending).await {
            Ok(key) => http::redirect(StatusCode::SEE_OTHER, &format!("/login/mfa?{}", serde_urlencoded::to_string([("key", key)]).unwrap_or_default())),
            Err(e) => http::server_error(e),
        };
    }
    if let Err(e) = completed(&id, &user, form.link.as_deref(), &ctx).await {
        return http::server_error(e);
    }
    establish(&id, &ctx, &user, &["pwd"], ACR_SINGLE_FACTOR, None, &return_to).await
}

/// A login proved every factor it needs (its failure count already started
/// again, [`crate::throttle::Throttle::succeeded`]): the upstream account
/// parked under `link` (if any) is linked (by the password login, says the
/// audit trail).
pub(crate) async fn completed(id: &Identity, user: &crate::User, link: Option<&str>, ctx: &RequestContext) -> crate::Result<()> {
    if let Some(key) = link {
        match id.federation.unpark(key, ctx.upstream_cookie.as_deref().unwrap_or_default()).await? {
            Some(p) => id.link_account(&user.id, &p.provider, &p.subject, "password", ctx.ip.as_deref()).await?,
            None => tracing::info!("a login came with an expired or used account link"),
        }
    }
    Ok(())
}

/// Signs `user` in with `method` (an `amr` value) in this browser and sends
/// it to `return_to`: a live session of someone else ends first, one of the
/// same person is renewed. A login through an upstream (`from`) is
/// remembered with the session, for the upstream's logout.
pub(crate) async fn establish(
    id: &Identity,
    ctx: &RequestContext,
    user: &crate::User,
    amr: &[&str],
    acr: &str,
    from: Option<(&str, &crate::ExternalIdentity)>,
    return_to: &str,
) -> Response {
    let method = amr.join(" ");
    let s = &id.settings;
    let started = async {
        // A live session of someone else in this browser ends first.
        if let Some(old) = id.sessions.from_cookie(ctx.session_cookie.as_deref()).await? {
            if old.user_id != user.id {
                id.sessions.end(&old, ctx.ip.as_deref()).await?;
            } else {
                id.sessions.reauthenticate(&old, amr, acr).await?;
                if let Some((provider, who)) = from {
                    id.federation.remember_session(&old.id, provider, who).await?;
                }
                return Ok::<_, crate::Error>(None);
            }
        }
        let mut tx = id.db.begin().await?;
        let (cookie, session) = Sessions::start_in(&mut tx, &user.id, amr, acr, ctx.ip.as_deref(), s).await?;
        Audit::record_in(
            &mut tx,
            "login.succeeded",
            Actor { user_id: Some(&user.id), client_id: None, ip: ctx.ip.as_deref() },
            json!({ "method": method, "sid": session.sid }),
        )
        .await?;
        tx.commit().await?;
        if let Some((provider, who)) = from {
            id.federation.remember_session(&session.id, provider, who).await?;
        }
        Ok(Some((cookie, session)))
    };
    match started.await {
        Ok(Some((cookie, _))) => {
            let reply = http::redirect(StatusCode::SEE_OTHER, return_to);
            http::with_cookie(reply, SESSION_COOKIE, &cookie, None, s.secure_cookies())
        }
        Ok(None) => {
            let _ = id
                .audit
                .record(
                    "login.succeeded",
                    Actor { user_id: Some(&user.id), client_id: None, ip: ctx.ip.as_deref() },
                    json!({ "method": method, "reauthentication": true }),
                )
                .await;
            http::redirect(StatusCode::SEE_OTHER, return_to)
        }
        Err(e) => http::server_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_return;

    #[test]
    fn only_local_paths_are_returned_to() {
        assert_eq!(safe_return(Some("/authorize?x=1")), "/authorize?x=1");
        assert_eq!(safe_return(Some("//evil.example/")), "/");
        assert_eq!(safe_return(Some("https://evil.example/")), "/");
        assert_eq!(safe_return(Some("/\\evil")), "/");
        assert_eq!(safe_return(Some("/\t/evil.example")), "/", "a browser drops the tab");
        assert_eq!(safe_return(Some("/\u{7f}/evil.example")), "/");
        assert_eq!(safe_return(None), "/");
    }
}
