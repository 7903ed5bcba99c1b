//! Passkey ceremonies over HTTP. The page's script posts its form to an
//! `…/options` endpoint for the WebAuthn options (JSON: `{"key", "publicKey"}`),
//! asks the browser, and submits the same form with the answer in
//! `credential` and the key in `ceremony`:
//! - `POST /login/passkey/options`, `POST /login/passkey`: passwordless login
//!   (a discoverable credential, from a button or the username autofill);
//! - `POST /login/mfa/passkey/options`: a passkey as the second factor of a
//!   login waiting at `/login/mfa` (which takes the answer);
//! - `POST /account/passkeys/options`: registering one (`/account` takes the answer).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::audit::Actor;
use crate::endpoints::login::{self, View, establish, safe_return};
use crate::http::{self, RequestContext, context, form_body, with_identity};
use crate::mfa::with_second_factor;
use crate::{ACR_MULTI_FACTOR, Error, Identity, RateLimiter, rate_limit};

/// How long after signing in a person may add or change what signs them in
/// (passkeys, an authenticator app, a first password) without proving again
/// who they are.
pub(crate) const RECENT_AUTH_SECS: i64 = 600;

/// Whether `session` may add or change what signs its person in: they signed
/// in within [`RECENT_AUTH_SECS`], with their second factor if they have one.
/// A passkey signs in on its own and an authenticator app or a password
/// outlives the session, so an unlocked screen, a borrowed session or a
/// single-factor login must not be enough to add one (or to strip them).
pub(crate) async fn may_change_credentials(id: &Identity, session: &crate::Session) -> crate::Result<bool> {
    if civichub_store::now() - session.auth_time > RECENT_AUTH_SECS {
        return Ok(false);
    }
    Ok(session.acr == ACR_MULTI_FACTOR || !id.has_second_factor(&session.user_id).await?)
}

/// `Ok` when `session` may add or change what signs its person in now;
/// otherwise the reply: sign in again, then back to `back`.
pub(crate) async fn recent_sign_in(id: &Identity, session: &crate::Session, username: &str, back: &str) -> Result<(), Response> {
    match may_change_credentials(id, session).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(http::redirect(StatusCode::SEE_OTHER, &reauthenticate_url(username, back))),
        Err(e) => Err(http::server_error(e)),
    }
}

/// Where to prove again who one is, then come back to `back` (a path on the
/// account page).
pub(crate) fn reauthenticate_url(username: &str, back: &str) -> String {
    format!("/login?{}", serde_urlencoded::to_string([("return_to", back), ("login_hint", username)]).unwrap_or_default())
}

/// The fields of every form that may carry a passkey's answer (the
/// second-factor page's also carries a typed `code`).
#[derive(Deserialize, Default)]
pub(crate) struct PasskeyForm {
    /// A code typed on the second-factor page.
    pub code: Option<String>,
    pub csrf: Option<String>,
    /// The login waiting for its second factor (`/login/mfa`).
    pub key: Option<String>,
    /// The ceremony the answer belongs to.
    pub ceremony: Option<String>,
    /// The browser's answer (WebAuthn JSON).
    pub credential: Option<String>,
    pub return_to: Option<String>,
    /// A name for a passkey being registered.
    pub name: Option<String>,
}

impl PasskeyForm {
    pub(crate) fn parse(body: &[u8]) -> Option<PasskeyForm> {
        serde_urlencoded::from_bytes(body).ok()
    }

    /// The browser's answer, as `T`, and the ceremony it finishes.
    pub(crate) fn answer<T: serde::de::DeserializeOwned>(&self) -> Option<(String, T)> {
        let credential = serde_json::from_str(self.credential.as_deref()?).ok()?;
        Some((self.ceremony.clone()?, credential))
    }
}

fn json_error(status: StatusCode, description: &str) -> Response {
    http::json(status, &json!({ "error": "invalid_request", "error_description": description }))
}

/// The form posted to an options endpoint, if its CSRF token is good.
fn checked(body: &[u8], ctx: &RequestContext) -> Result<PasskeyForm, Response> {
    let form = PasskeyForm::parse(body).unwrap_or_default();
    if !http::csrf_ok(ctx.csrf_cookie.as_deref(), form.csrf.as_deref()) {
        return Err(json_error(StatusCode::FORBIDDEN, "页面已过期，请刷新后重试。"));
    }
    Ok(form)
}

/// The JSON an options endpoint answers: the ceremony key and the options.
fn options<T: serde::Serialize>(key: String, public_key: &T) -> Response {
    http::json(StatusCode::OK, &json!({ "key": key, "publicKey": public_key }))
}

/// Maps a library error to a JSON reply: refusals are the person's to read.
fn options_error(e: Error) -> Response {
    match e {
        Error::Invalid(msg) => json_error(StatusCode::BAD_REQUEST, &msg),
        e => http::server_error_json(e),
    }
}

/// Ceremonies an address may start a minute without signing in (each is a
/// database row until it expires; every login page starts one for the
/// autofill, and an office may sit behind one address).
const ANONYMOUS_CEREMONIES_PER_MINUTE: u32 = 300;

/// Every passkey route except the account page's own.
pub fn filter(id: Arc<Identity>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let limiter = Arc::new(RateLimiter::new(ANONYMOUS_CEREMONIES_PER_MINUTE));
    let login_options = warp::path!("login" / "passkey" / "options")
        .and(warp::post())
        .and(rate_limit(limiter.clone()))
        .and(form_body())
        .and(with_identity(id.clone()))
        .and(context())
        .then(|limited: Option<Response>, body: bytes::Bytes, id: Arc<Identity>, ctx: RequestContext| async move {
            if let Some(r) = limited {
                return r;
            }
            if let Err(r) = checked(&body, &ctx) {
                return r;
            }
            match id.passkeys.begin_login().await {
                Ok((key, o)) => options(key, &o.public_key),
                Err(e) => options_error(e),
            }
        });
    let login = warp::path!("login" / "passkey").and(warp::post()).and(form_body()).and(with_identity(id.clone())).and(context()).then(finish_login);
    let second_factor_options = warp::path!("login" / "mfa" / "passkey" / "options")
        .and(warp::post())
        .and(rate_limit(limiter))
        .and(form_body())
        .and(with_identity(id.clone()))
        .and(context())
        .then(|limited: Option<Response>, body: bytes::Bytes, id: Arc<Identity>, ctx: RequestContext| async move {
            if let Some(r) = limited {
                return r;
            }
            let form = match checked(&body, &ctx) {
                Ok(f) => f,
                Err(r) => return r,
            };
            let pending = match id.mfa.pending(form.key.as_deref().unwrap_or_default()).await {
                Ok(Some(p)) => p,
                Ok(None) => return json_error(StatusCode::BAD_REQUEST, "这次登录已过期或已完成，请重新登录。"),
                Err(e) => return http::server_error_json(e),
            };
            match id.passkeys.begin_second_factor(&pending.user_id).await {
                Ok(Some((key, o))) => options(key, &o.public_key),
                Ok(None) => json_error(StatusCode::BAD_REQUEST, "您还没有注册通行密钥，请输入验证码。"),
                Err(e) => options_error(e),
            }
        });
    let register_options = warp::path!("account" / "passkeys" / "options")
        .and(warp::post())
        .and(form_body())
        .and(with_identity(id))
        .and(context())
        .then(|body: bytes::Bytes, id: Arc<Identity>, ctx: RequestContext| async move {
            if let Err(r) = checked(&body, &ctx) {
                return r;
            }
            let (session, user) = match http::signed_in(&id, ctx.session_cookie.as_deref(), "/account").await {
                Ok(s) => s,
                Err(_) => return json_error(StatusCode::UNAUTHORIZED, "请先登录。"),
            };
            match may_change_credentials(&id, &session).await {
                Ok(true) => {}
                Ok(false) => return json_error(StatusCode::FORBIDDEN, "为保护账号，添加通行密钥前请重新验证身份。"),
                Err(e) => return http::server_error_json(e),
            }
            let display = user.name.clone().unwrap_or_else(|| user.username.clone());
            match id.passkeys.begin_registration(&user.id, &user.username, &display).await {
                Ok((key, o)) => options(key, &o.public_key),
                Err(e) => options_error(e),
            }
        });
    login_options.or(login).unify().or(second_factor_options).unify().or(register_options).unify()
}

/// `POST /login/passkey`: the answer of a passwordless login.
async fn finish_login(body: bytes::Bytes, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let form = PasskeyForm::parse(&body).unwrap_or_default();
    let return_to = safe_return(form.return_to.as_deref()).to_owned();
    let view = View { return_to: &return_to, client: None, link: None };
    if !http::csrf_ok(ctx.csrf_cookie.as_deref(), form.csrf.as_deref()) {
        return login::page(&id, &ctx, StatusCode::FORBIDDEN, &view, "", Some("页面已过期，请重新登录。")).await;
    }
    let ip_key = crate::throttle::ip_key(ctx.ip.as_deref());
    match id.throttle.check(&[&ip_key]).await {
        Ok(Some(_)) => return login::page(&id, &ctx, StatusCode::TOO_MANY_REQUESTS, &view, "", Some("失败次数过多，请稍后再试。")).await,
        Ok(_) => {}
        Err(e) => return http::server_error(e),
    }
    let Some((ceremony, credential)) = form.answer() else {
        return login::page(&id, &ctx, StatusCode::BAD_REQUEST, &view, "", Some("没有收到通行密钥的应答，请重试。")).await;
    };
    let used = match id.passkeys.finish_login(&ceremony, &credential).await {
        Ok(u) => u,
        Err(Error::Invalid(msg)) => {
            let failed = async {
                id.throttle.fail(&ip_key, id.settings.max_failures_per_address, &id.settings).await?;
                id.audit.record("login.failed", Actor { ip: ctx.ip.as_deref(), ..Default::default() }, json!({ "method": "passkey" })).await
            };
            if let Err(e) = failed.await {
                return http::server_error(e);
            }
            return login::page(&id, &ctx, StatusCode::UNAUTHORIZED, &view, "", Some(&msg)).await;
        }
        Err(e) => return http::server_error(e),
    };
    let user = match id.users.get(&used.user_id).await {
        Ok(u) if !u.disabled => u,
        Ok(_) => return login::page(&id, &ctx, StatusCode::FORBIDDEN, &view, "", Some("该账号已停用。")).await,
        Err(e) => return http::server_error(e),
    };
    // A passkey verifies the person (PIN or biometrics) as well as the device: multi-factor alone.
    let amr = with_second_factor(&[], used.amr());
    let amr: Vec<&str> = amr.iter().map(String::as_str).collect();
    establish(&id, &ctx, &user, &amr, ACR_MULTI_FACTOR, None, &return_to).await
}
