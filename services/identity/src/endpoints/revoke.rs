//! `POST /revoke`: token revocation (RFC 7009).

use std::sync::Arc;

use civichub_store::{Row, now, secret_key};
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::audit::{Actor, Audit};
use crate::endpoints::client_auth;
use crate::http::{self, RequestContext, authorization, context, form_body, with_identity};
use crate::oauth::{OAuthRequest, revoke_family};
use crate::{Identity, Result};

/// `POST /revoke`, for the client the token was issued to.
pub fn filter(id: Arc<Identity>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("revoke")
        .and(warp::post())
        .and(form_body())
        .and(authorization())
        .and(with_identity(id))
        .and(context())
        .then(handle)
}

async fn handle(body: bytes::Bytes, auth: Option<String>, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let req = match OAuthRequest::new("", &body, auth) {
        Ok(r) => r,
        Err(_) => return http::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "malformed form body"),
    };
    let client_id = match client_auth::authenticate(&id, &req, true).await {
        Ok(c) => c.client_id,
        Err(reply) => return reply,
    };
    let Some(token) = req.body_param("token") else {
        return http::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is required");
    };
    match revoke(&id, &client_id, &token, ctx.ip.as_deref()).await {
        Ok(true) => http::json(StatusCode::OK, &json!({})),
        Ok(false) => http::oauth_error(StatusCode::BAD_REQUEST, "unauthorized_client", "the token was issued to another client"),
        Err(e) => http::server_error_json(e),
    }
}

/// Revokes `token` for `client_id`. A refresh token takes its whole family
/// with it. Unknown tokens succeed silently (RFC 7009 §2.2); a token of
/// another client answers `false`.
async fn revoke(id: &Identity, client_id: &str, token: &str, ip: Option<&str>) -> Result<bool> {
    let key = secret_key(token);
    let mut tx = id.db.begin().await?;
    let row = sqlx::query("SELECT kind, family, client_id, user_id FROM tokens WHERE token_hash = $1")
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else { return Ok(true) };
    if row.try_get::<String, _>("client_id")? != client_id {
        return Ok(false);
    }
    let kind: String = row.try_get("kind")?;
    let revoked = if kind == "refresh" {
        revoke_family(&mut tx, &row.try_get::<String, _>("family")?).await?
    } else {
        sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL")
            .bind(now())
            .bind(&key)
            .execute(&mut *tx)
            .await?
            .rows_affected()
    };
    let user_id: Option<String> = row.try_get("user_id")?;
    Audit::record_in(
        &mut tx,
        "token.revoked",
        Actor { user_id: user_id.as_deref(), client_id: Some(client_id), ip },
        json!({ "kind": kind, "revoked_tokens": revoked }),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}
