//! The consent screen (`POST /consent`) and remembered consent.

use std::sync::Arc;

use askama::Template;
use civichub_store::{Row, now};
use serde::Deserialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::clients::Client;
use crate::endpoints::authorize::error_redirect;
use crate::http::{self, RequestContext, context, form_body, with_identity};
use crate::sessions::Session;
use crate::{Identity, Result};

/// Whether the user's remembered consent covers every requested scope.
pub async fn covers(id: &Identity, user_id: &str, client_id: &str, requested: &[String]) -> Result<bool> {
    let row = sqlx::query("SELECT scope FROM consents WHERE user_id = $1 AND client_id = $2")
        .bind(user_id)
        .bind(client_id)
        .fetch_optional(id.db.pool())
        .await?;
    let Some(row) = row else { return Ok(false) };
    let granted: String = row.try_get("scope")?;
    let granted: Vec<&str> = granted.split_whitespace().collect();
    Ok(requested.iter().all(|s| granted.contains(&s.as_str())))
}

/// Adds `scopes` to what `user_id` has granted `client_id`. The row is made
/// first and read for update (on PostgreSQL; on SQLite writers take turns),
/// so two consents given at once both stay.
async fn remember(id: &Identity, user_id: &str, client_id: &str, scopes: &[String]) -> Result<()> {
    let mut tx = id.db.begin().await?;
    sqlx::query("INSERT INTO consents (user_id, client_id, scope, granted_at) VALUES ($1, $2, '', $3) ON CONFLICT (user_id, client_id) DO NOTHING")
        .bind(user_id)
        .bind(client_id)
        .bind(now())
        .execute(&mut *tx)
        .await?;
    let lock = id.db.backend().locking(" FOR UPDATE");
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT scope FROM consents WHERE user_id = $1 AND client_id = $2{lock}")))
        .bind(user_id)
        .bind(client_id)
        .fetch_optional(&mut *tx)
        .await?;
    let mut all: Vec<String> = match row {
        Some(r) => r.try_get::<String, _>("scope")?.split_whitespace().map(str::to_owned).collect(),
        None => Vec::new(),
    };
    for s in scopes {
        if !all.contains(s) {
            all.push(s.clone());
        }
    }
    sqlx::query("UPDATE consents SET scope = $3, granted_at = $4 WHERE user_id = $1 AND client_id = $2")
        .bind(user_id)
        .bind(client_id)
        .bind(all.join(" "))
        .bind(now())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// How a scope is described to the person asked.
pub fn describe(scope: &str) -> String {
    match scope {
        "openid" => "确认您的身份（唯一标识）".into(),
        "profile" => "您的姓名和用户名".into(),
        "email" => "您的电子邮箱".into(),
        "phone" => "您的手机号码".into(),
        "department" => "您所在的部门、工号和角色".into(),
        "offline_access" => "在您未登录时继续访问（长期有效的刷新令牌）".into(),
        other => format!("访问权限：{other}"),
    }
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage<'a> {
    client: &'a str,
    username: &'a str,
    scopes: Vec<String>,
    csrf: &'a str,
    request: &'a str,
}

/// Shows the consent screen for an authorization request.
pub async fn page(id: &Identity, ctx: &RequestContext, session: &Session, client: &Client, scopes: &[String], request: &str) -> Response {
    let user = match id.users.get(&session.user_id).await {
        Ok(u) => u,
        Err(e) => return http::server_error(e),
    };
    let (csrf, fresh) = http::csrf_token(ctx);
    let page = ConsentPage {
        client: &client.client_id,
        username: user.name.as_deref().unwrap_or(&user.username),
        scopes: scopes.iter().map(|s| describe(s)).collect(),
        csrf: &csrf,
        request,
    };
    http::with_csrf(http::render(StatusCode::OK, &page), &csrf, fresh, id.settings.secure_cookies())
}

#[derive(Deserialize)]
struct ConsentForm {
    csrf: Option<String>,
    request: String,
    decision: Option<String>,
}

/// `POST /consent`: the person's answer.
pub fn filter(id: Arc<Identity>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("consent")
        .and(warp::post())
        .and(form_body())
        .and(with_identity(id))
        .and(context())
        .then(handle)
}

async fn handle(body: bytes::Bytes, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let Ok(form) = serde_urlencoded::from_bytes::<ConsentForm>(&body) else {
        return http::error_page(StatusCode::BAD_REQUEST, "表单内容不完整。");
    };
    if !http::csrf_ok(ctx.csrf_cookie.as_deref(), form.csrf.as_deref()) {
        return http::error_page(StatusCode::FORBIDDEN, "页面已过期或来源不可信，请返回重新操作。");
    }
    let session = match id.sessions.from_cookie(ctx.session_cookie.as_deref()).await {
        Ok(Some(s)) => s,
        Ok(None) => return http::error_page(StatusCode::UNAUTHORIZED, "登录已失效，请重新从业务系统发起登录。"),
        Err(e) => return http::server_error(e),
    };
    let params: Vec<(String, String)> = serde_urlencoded::from_str(&form.request).unwrap_or_default();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (Some(client_id), Some(redirect_uri)) = (get("client_id"), get("redirect_uri")) else {
        return http::error_page(StatusCode::BAD_REQUEST, "授权请求不完整。");
    };
    let client = match id.clients.get(&client_id).await {
        Ok(Some(c)) if c.redirect_uris.contains(&redirect_uri) => c,
        Ok(_) => return http::error_page(StatusCode::BAD_REQUEST, "应用或回调地址无效。"),
        Err(e) => return http::server_error(e),
    };
    if form.decision.as_deref() != Some("allow") {
        return error_redirect(&id, &redirect_uri, "access_denied", "the user denied the request", get("state").as_deref());
    }
    let scopes: Vec<String> = get("scope")
        .unwrap_or_default()
        .split_whitespace()
        .filter(|s| client.allows_scope(s))
        .map(str::to_owned)
        .collect();
    if let Err(e) = remember(&id, &session.user_id, &client.client_id, &scopes).await {
        return http::server_error(e);
    }
    http::redirect(StatusCode::SEE_OTHER, &format!("/authorize?{}", form.request))
}
