//! `/account`, behind single sign-on: the person's profile, the upstream
//! logins linked to them (link and unlink), their password (change, or set
//! one when they only ever signed in through an upstream), and their recent
//! sign-ins; their passkeys (the registration's options come from
//! [`super::passkey`]) and authenticator app.

use std::sync::Arc;

use askama::Template;
use serde::Deserialize;
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::audit::Actor;
use crate::http::{self, RequestContext, context, form_body, with_identity};
use crate::password::{self, Verdict};
use crate::values::{Password, Username};
use crate::{Identity, beijing};
use crate::endpoints::login::safe_return;
use crate::endpoints::mfa::second_factor_failed;
use crate::endpoints::passkey::{PasskeyForm, RECENT_AUTH_SECS, may_change_credentials, reauthenticate_url, recent_sign_in};
use crate::throttle::{ip_key, user_key};

/// Sign-ins the page lists.
const SIGN_INS: i64 = 10;

struct LinkRow {
    provider: String,
    label: String,
    linked: bool,
}

struct PasskeyRow {
    id: String,
    name: String,
    created: String,
    last_used: String,
}

struct SignIn {
    when: String,
    method: String,
    ip: String,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    csrf: String,
    notice: Option<String>,
    error: Option<String>,
    username: String,
    name: String,
    department: String,
    email: String,
    phone: String,
    has_password: bool,
    links: Vec<LinkRow>,
    signins: Vec<SignIn>,
    mfa_enrolled: bool,
    recovery_left: i64,
    pending_secret: Option<String>,
    pending_qr: String,
    /// Shown once, right after enrolment.
    recovery_codes: Option<Vec<String>>,
    passkey_list: Vec<PasskeyRow>,
    passkeys_available: bool,
    /// Whether this session may add or change what signs the person in
    /// now (passkeys, an authenticator app, a first password).
    credentials_unlocked: bool,
    /// Where the person goes once a second factor is set up.
    continue_to: Option<String>,
    /// Where to prove again who one is, coming back to passkeys, the
    /// authenticator app, or the password.
    reauthenticate: String,
    reauthenticate_mfa: String,
    reauthenticate_password: String,
    recent_minutes: i64,
}

#[derive(Deserialize, Default)]
struct CodeForm {
    csrf: Option<String>,
    code: Option<String>,
    return_to: Option<String>,
}

#[derive(Deserialize, Default)]
struct Flash {
    linked: Option<String>,
    done: Option<String>,
    /// Where to continue once a second factor is set up (a system that requires one sent the person here).
    return_to: Option<String>,
}

/// A local path to continue to, from a form or query.
fn continue_to(return_to: Option<&str>) -> Option<String> {
    return_to.filter(|r| !r.is_empty()).map(|r| safe_return(Some(r)).to_owned()).filter(|r| r != "/")
}

/// The account page's second-factor section, still offering to continue to `next`.
fn mfa_section(next: Option<&str>) -> String {
    match next {
        Some(n) => format!("/account?{}#mfa", serde_urlencoded::to_string([("return_to", n)]).unwrap_or_default()),
        None => "/account#mfa".to_owned(),
    }
}

#[derive(Deserialize)]
struct PasswordForm {
    csrf: Option<String>,
    current: Option<String>,
    new: Option<String>,
    confirm: Option<String>,
}

/// How a sign-in happened, as the page says it: its `amr` values, named.
fn method_label(id: &Identity, amr: &str) -> String {
    amr.split_whitespace()
        .filter(|m| *m != "mfa")
        .map(|m| match m {
            "pwd" => "密码".to_owned(),
            "otp" => "验证码".to_owned(),
            "hwk" | "swk" => "通行密钥".to_owned(),
            other => id.upstream_by_amr(other).map(|u| u.label().trim_end_matches("登录").to_owned()).unwrap_or_else(|| other.to_owned()),
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

/// The `otpauth://` URI an authenticator app scans, as a QR code in SVG.
fn qr(username: &str, secret: &str) -> String {
    let issuer = "CivicHub";
    let label = format!("{issuer}:{username}");
    let uri = format!(
        "otpauth://totp/{}?{}",
        url::form_urlencoded::byte_serialize(label.as_bytes()).collect::<String>(),
        serde_urlencoded::to_string([("secret", secret), ("issuer", issuer), ("algorithm", "SHA1"), ("digits", "6"), ("period", "30")]).unwrap_or_default()
    );
    match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).build(),
        Err(e) => {
            tracing::warn!("drawing the enrolment QR code: {e}");
            String::new()
        }
    }
}

/// `GET /account`, `POST /account/password`, `POST /account/unlink/{provider}`.
pub fn filter(id: Arc<Identity>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let show = warp::path!("account")
        .and(warp::get())
        .and(warp::query::<Flash>().or(warp::any().map(Flash::default)).unify())
        .and(with_identity(id.clone()))
        .and(context())
        .then(|flash: Flash, id: Arc<Identity>, ctx: RequestContext| async move {
            let notice = match (flash.linked, flash.done.as_deref()) {
                (Some(p), _) => Some(format!("已关联{}", id.upstream(&p).map(|u| u.label().trim_end_matches("登录").to_owned()).unwrap_or(p))),
                (None, Some("password")) => Some("密码已保存，其他设备上的登录已退出。".into()),
                (None, Some("unlinked")) => Some("已解除关联。".into()),
                (None, Some("mfa-removed")) => Some("两步验证已停用。".into()),
                (None, Some("passkey-added")) => Some("通行密钥已添加。".into()),
                (None, Some("passkey-removed")) => Some("通行密钥已删除。".into()),
                _ => None,
            };
            page_with(&id, &ctx, StatusCode::OK, notice, None, None, continue_to(flash.return_to.as_deref())).await
        });
    let password = warp::path!("account" / "password").and(warp::post()).and(form_body()).and(with_identity(id.clone())).and(context()).then(change_password);
    let unlink = warp::path!("account" / "unlink" / String)
        .and(warp::post())
        .and(form_body())
        .and(with_identity(id.clone()))
        .and(context())
        .then(unlink);
    let totp = warp::path!("account" / "totp" / String).and(warp::post()).and(form_body()).and(with_identity(id.clone())).and(context()).then(totp);
    let add_passkey = warp::path!("account" / "passkeys").and(warp::post()).and(form_body()).and(with_identity(id.clone())).and(context()).then(add_passkey);
    let remove_passkey = warp::path!("account" / "passkeys" / String / "remove")
        .and(warp::post())
        .and(form_body())
        .and(with_identity(id))
        .and(context())
        .then(remove_passkey);
    show.or(password).unify().or(unlink).unify().or(totp).unify().or(add_passkey).unify().or(remove_passkey).unify()
}

async fn page(id: &Identity, ctx: &RequestContext, status: StatusCode, notice: Option<String>, error: Option<String>, recovery_codes: Option<Vec<String>>) -> Response {
    page_with(id, ctx, status, notice, error, recovery_codes, None).await
}

/// The page, offering to continue to `continue_to` (a system that requires
/// a second factor) once one is set up.
async fn page_with(
    id: &Identity,
    ctx: &RequestContext,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
    recovery_codes: Option<Vec<String>>,
    continue_to: Option<String>,
) -> Response {
    let (session, user) = match http::signed_in(id, ctx.session_cookie.as_deref(), "/account").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let credentials_unlocked = match may_change_credentials(id, &session).await {
        Ok(u) => u,
        Err(e) => return http::server_error(e),
    };
    let loaded = async {
        let links = id.federation.links_of(&user.id).await?;
        let stored = match user.username.parse::<Username>() {
            Ok(u) => id.users.credentials(&u).await?.and_then(|(_, h)| h),
            Err(_) => None,
        };
        let signins = id.audit.of_user(&user.id, "login.succeeded", SIGN_INS).await?;
        let enrolled = id.mfa.enrolled(&user.id).await?;
        let passkeys = id.passkeys.list(&user.id).await?;
        let left = if enrolled || !passkeys.is_empty() { id.mfa.recovery_codes_left(&user.id).await? } else { 0 };
        let pending = if enrolled { None } else { id.mfa.pending_secret(&user.id).await? };
        Ok::<_, crate::Error>((links, stored.is_some(), signins, enrolled, left, pending, passkeys))
    };
    let (links, has_password, signins, mfa_enrolled, recovery_left, pending_secret, passkeys) = match loaded.await {
        Ok(l) => l,
        Err(e) => return http::server_error(e),
    };
    let (csrf, fresh) = http::csrf_token(ctx);
    let pending_qr = pending_secret.as_deref().map(|s| qr(&user.username, s)).unwrap_or_default();
    let page = AccountPage {
        passkey_list: passkeys
            .into_iter()
            .map(|p| PasskeyRow { id: p.id, name: p.name, created: beijing(p.created_at), last_used: p.last_used_at.map(beijing).unwrap_or_else(|| "从未".into()) })
            .collect(),
        passkeys_available: id.passkeys.available(),
        credentials_unlocked,
        reauthenticate: reauthenticate_url(&user.username, "/account#passkeys"),
        reauthenticate_mfa: reauthenticate_url(&user.username, &mfa_section(continue_to.as_deref())),
        reauthenticate_password: reauthenticate_url(&user.username, "/account#password"),
        continue_to,
        recent_minutes: RECENT_AUTH_SECS / 60,
        mfa_enrolled,
        recovery_left,
        pending_secret,
        pending_qr,
        recovery_codes,
        csrf: csrf.clone(),
        notice,
        error,
        username: user.username.clone(),
        name: user.name.clone().unwrap_or_default(),
        department: user.department.clone().unwrap_or_default(),
        email: user.email.clone().unwrap_or_default(),
        phone: user.phone.clone().unwrap_or_default(),
        has_password,
        links: id
            .upstreams()
            .iter()
            .map(|u| LinkRow { provider: u.name().to_owned(), label: u.label().trim_end_matches("登录").to_owned(), linked: links.iter().any(|(p, _)| p == u.name()) })
            .collect(),
        signins: signins
            .iter()
            .map(|e| SignIn {
                when: beijing(e.at),
                method: method_label(id, e.detail["method"].as_str().unwrap_or("pwd")),
                ip: e.ip.clone().unwrap_or_default(),
            })
            .collect(),
    };
    http::with_csrf(http::render(status, &page), &csrf, fresh, id.settings.secure_cookies())
}

async fn change_password(body: bytes::Bytes, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let (session, user) = match http::signed_in(&id, ctx.session_cookie.as_deref(), "/account").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Ok(form) = serde_urlencoded::from_bytes::<PasswordForm>(&body) else {
        return page(&id, &ctx, StatusCode::BAD_REQUEST, None, Some("表单格式错误。".into()), None).await;
    };
    if !http::csrf_ok(ctx.csrf_cookie.as_deref(), form.csrf.as_deref()) {
        return page(&id, &ctx, StatusCode::FORBIDDEN, None, Some("页面已过期，请重新提交。".into()), None).await;
    }
    let refuse = |status, msg: &str| page(&id, &ctx, status, None, Some(msg.to_owned()), None);
    let (Some(new), Some(confirm)) = (form.new, form.confirm) else {
        return refuse(StatusCode::BAD_REQUEST, "请输入新密码两次。").await;
    };
    if new != confirm {
        return refuse(StatusCode::BAD_REQUEST, "两次输入的新密码不一致。").await;
    }
    let new = match Password::new(new) {
        Ok(p) => p,
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "新密码至少 8 位，至多 1024 位。").await,
    };
    let Ok(username) = user.username.parse::<Username>() else { return http::server_error("a stored username does not parse") };
    let stored = match id.users.credentials(&username).await {
        Ok(c) => c.and_then(|(_, h)| h),
        Err(e) => return http::server_error(e),
    };
    // The current password proves it is the person, not someone at their unlocked screen;
    // wrong guesses count as failed logins. Without one (a person who signs in
    // through DingTalk or another provider), a recent sign-in does.
    if let Some(stored) = stored {
        let key = user_key(username.as_str());
        match id.throttle.check(&[&key]).await {
            Ok(Some(_)) => return refuse(StatusCode::TOO_MANY_REQUESTS, "失败次数过多，请稍后再试。").await,
            Ok(_) => {}
            Err(e) => return http::server_error(e),
        }
        let current = Password::attempt(form.current.unwrap_or_default());
        if !matches!(password::verify(Some(stored), current).await, Verdict::Match { .. }) {
            if let Err(e) = id.throttle.fail(&key, id.settings.max_failures_per_account, &id.settings).await {
                return http::server_error(e);
            }
            return refuse(StatusCode::UNAUTHORIZED, "当前密码不正确。").await;
        }
    } else if let Err(r) = recent_sign_in(&id, &session, &user.username, "/account#password").await {
        return r;
    }
    let saved = async {
        let hash = password::hash(new).await?;
        // Other devices sign in again with the new password, and what they
        // were granted (offline tokens included) stops working.
        id.sessions.change_password(&session, &hash, ctx.ip.as_deref()).await?;
        id.audit.record("password.changed", Actor { user_id: Some(&user.id), client_id: None, ip: ctx.ip.as_deref() }, json!({})).await
    };
    match saved.await {
        Ok(()) => http::redirect(StatusCode::SEE_OTHER, "/account?done=password"),
        Err(e) => http::server_error(e),
    }
}

async fn unlink(provider: String, body: bytes::Bytes, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let (_, user) = match http::signed_in(&id, ctx.session_cookie.as_deref(), "/account").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let csrf = form.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str());
    if !http::csrf_ok(ctx.csrf_cookie.as_deref(), csrf) {
        return page(&id, &ctx, StatusCode::FORBIDDEN, None, Some("页面已过期，请重新提交。".into()), None).await;
    }
    let done = async {
        if id.federation.unlink(&user.id, &provider).await? {
            id.audit.record("user.unlinked", Actor { user_id: Some(&user.id), client_id: None, ip: ctx.ip.as_deref() }, json!({ "provider": provider })).await?;
        }
        Ok::<_, crate::Error>(())
    };
    match done.await {
        Ok(()) => http::redirect(StatusCode::SEE_OTHER, "/account?done=unlinked"),
        Err(crate::Error::Conflict(_)) => {
            page(&id, &ctx, StatusCode::CONFLICT, None, Some("这是您唯一的登录方式：请先在下方设置密码，再解除关联。".into()), None).await
        }
        Err(crate::Error::Invalid(_)) => {
            let message = "您的账号由通讯录同步管理（人员变动、离职时据此更新或停用），不能解除这项关联。";
            page(&id, &ctx, StatusCode::CONFLICT, None, Some(message.into()), None).await
        }
        Err(e) => http::server_error(e),
    }
}

/// `POST /account/totp/{begin|confirm|remove}`: enrol an authenticator app
/// (a new secret to scan, then a code to confirm it, which shows the
/// recovery codes once), or remove it with a current code.
async fn totp(step: String, body: bytes::Bytes, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let (session, user) = match http::signed_in(&id, ctx.session_cookie.as_deref(), "/account").await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let form = serde_urlencoded::from_bytes::<CodeForm>(&body).unwrap_or_default();
    let next = continue_to(form.return_to.as_deref());
    if !http::csrf_ok(ctx.csrf_cookie.as_deref(), form.csrf.as_deref()) {
        return page(&id, &ctx, StatusCode::FORBIDDEN, None, Some("页面已过期，请重新提交。".into()), None).await;
    }
    let actor = Actor { user_id: Some(&user.id), client_id: None, ip: ctx.ip.as_deref() };
    let code = form.code.unwrap_or_default();
    let back = mfa_section(next.as_deref());
    // Enrolling an app is adding a way to sign in, removing it taking one away:
    // only with a recent sign-in (with both factors, for someone who has two).
    if let Err(r) = recent_sign_in(&id, &session, &user.username, &back).await {
        return r;
    }
    match step.as_str() {
        "begin" => {
            match id.mfa.begin(&user.id).await {
                Ok(_) | Err(crate::Error::Conflict(_)) => http::redirect(StatusCode::SEE_OTHER, &back),
                Err(e) => http::server_error(e),
            }
        }
        "confirm" => match id.mfa.confirm(&user.id, &code, civichub_store::now()).await {
            Ok(Some(codes)) => {
                if let Err(e) = id.audit.record("mfa.enrolled", actor, json!({ "factor": "totp" })).await {
                    return http::server_error(e);
                }
                page_with(&id, &ctx, StatusCode::OK, None, None, Some(codes), next).await
            }
            Ok(None) => page_with(&id, &ctx, StatusCode::BAD_REQUEST, None, Some("验证码不正确，请核对手机时间后重试。".into()), None, next).await,
            Err(e) => http::server_error(e),
        },
        "remove" => match throttled_verify(&id, &user, &code, &ctx).await {
            Err(too_many) => too_many,
            Ok(Ok(Some(_))) => {
                let removed = async {
                    id.mfa.remove_totp(&user.id).await?;
                    id.audit.record("mfa.removed", actor, json!({ "factor": "totp", "by": "user" })).await
                };
                match removed.await {
                    Ok(()) => http::redirect(StatusCode::SEE_OTHER, "/account?done=mfa-removed"),
                    Err(e) => http::server_error(e),
                }
            }
            Ok(Ok(None)) => page(&id, &ctx, StatusCode::UNAUTHORIZED, None, Some("验证码不正确或已使用过。".into()), None).await,
            Ok(Err(e)) => http::server_error(e),
        },
        _ => http::error_page(StatusCode::NOT_FOUND, "没有这个操作。"),
    }
}

/// Checks a code from the authenticator app (or a recovery code): wrong
/// ones count, after they are checked, against the account and the
/// address, and too many lock both for a while (`Err`: the page saying so).
async fn throttled_verify(id: &Identity, user: &crate::User, code: &str, ctx: &RequestContext) -> Result<crate::Result<Option<crate::Proof>>, Response> {
    match id.throttle.check(&[&user_key(&user.username), &ip_key(ctx.ip.as_deref())]).await {
        Ok(Some(_)) => return Err(page(id, ctx, StatusCode::TOO_MANY_REQUESTS, None, Some("失败次数过多，请稍后再试。".into()), None).await),
        Ok(_) => {}
        Err(e) => return Ok(Err(e)),
    }
    let verified = id.mfa.verify(&user.id, code, civichub_store::now()).await;
    if let Ok(None) = verified
        && let Err(e) = second_factor_failed(id, user, ctx.ip.as_deref()).await
    {
        return Ok(Err(e));
    }
    Ok(verified)
}

/// Who posted a passkey form on the account page, and the form, if its CSRF token is good.
/// A person who signed in long ago, or with one factor while having two,
/// proves again who they are first.
async fn passkey_form(id: &Identity, ctx: &RequestContext, body: &[u8]) -> Result<(crate::User, PasskeyForm), Response> {
    let (session, user) = http::signed_in(id, ctx.session_cookie.as_deref(), "/account").await?;
    let form = PasskeyForm::parse(body).unwrap_or_default();
    if !http::csrf_ok(ctx.csrf_cookie.as_deref(), form.csrf.as_deref()) {
        return Err(page(id, ctx, StatusCode::FORBIDDEN, None, Some("页面已过期，请重新提交。".into()), None).await);
    }
    recent_sign_in(id, &session, &user.username, "/account#passkeys").await?;
    Ok((user, form))
}


/// `POST /account/passkeys`: the browser's answer to a registration. The
/// first second factor also brings the recovery codes, shown once.
async fn add_passkey(body: bytes::Bytes, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let (user, form) = match passkey_form(&id, &ctx, &body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some((ceremony, credential)) = form.answer() else {
        return page(&id, &ctx, StatusCode::BAD_REQUEST, None, Some("没有收到通行密钥的应答，请重试。".into()), None).await;
    };
    let added = async {
        let first = !id.has_second_factor(&user.id).await?;
        let key = id.passkeys.finish_registration(&user.id, &ceremony, form.name.as_deref().unwrap_or_default(), &credential).await?;
        id.audit
            .record("mfa.enrolled", Actor { user_id: Some(&user.id), client_id: None, ip: ctx.ip.as_deref() }, json!({ "factor": "passkey", "name": key.name }))
            .await?;
        let codes = if first && id.mfa.recovery_codes_left(&user.id).await? == 0 { Some(id.mfa.issue_recovery_codes(&user.id).await?) } else { None };
        Ok::<_, crate::Error>(codes)
    };
    match added.await {
        Ok(Some(codes)) => page_with(&id, &ctx, StatusCode::OK, Some("通行密钥已添加。".into()), None, Some(codes), continue_to(form.return_to.as_deref())).await,
        Ok(None) => http::redirect(StatusCode::SEE_OTHER, "/account?done=passkey-added#passkeys"),
        Err(crate::Error::Invalid(msg)) => page(&id, &ctx, StatusCode::BAD_REQUEST, None, Some(msg), None).await,
        Err(crate::Error::Conflict(msg)) => page(&id, &ctx, StatusCode::CONFLICT, None, Some(format!("{msg}。")), None).await,
        Err(e) => http::server_error(e),
    }
}

/// `POST /account/passkeys/{id}/remove`.
async fn remove_passkey(passkey: String, body: bytes::Bytes, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let user = match passkey_form(&id, &ctx, &body).await {
        Ok((user, _)) => user,
        Err(r) => return r,
    };
    let removed = async {
        if let Some(name) = id.passkeys.remove(&user.id, &passkey).await? {
            id.audit
                .record("mfa.removed", Actor { user_id: Some(&user.id), client_id: None, ip: ctx.ip.as_deref() }, json!({ "factor": "passkey", "name": name, "by": "user" }))
                .await?;
        }
        Ok::<_, crate::Error>(())
    };
    match removed.await {
        Ok(()) => http::redirect(StatusCode::SEE_OTHER, "/account?done=passkey-removed#passkeys"),
        Err(crate::Error::Conflict(_)) => {
            page(&id, &ctx, StatusCode::CONFLICT, None, Some("这是您唯一的登录方式：请先设置密码或关联其他账号，再删除这个通行密钥。".into()), None).await
        }
        Err(e) => http::server_error(e),
    }
}
