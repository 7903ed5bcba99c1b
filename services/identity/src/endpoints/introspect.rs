//! `POST /introspect`: token introspection (RFC 7662) for resource servers.

use std::sync::Arc;

use civichub_store::{Row, now, secret_key};
use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::endpoints::client_auth;
use crate::http::{self, authorization, form_body, with_identity};
use crate::oauth::{OAuthRequest, StoredGrant};
use crate::{Identity, Result};

/// `POST /introspect`, for any confidential client.
pub fn filter(id: Arc<Identity>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("introspect")
        .and(warp::post())
        .and(form_body())
        .and(authorization())
        .and(with_identity(id))
        .then(handle)
}

async fn handle(body: bytes::Bytes, auth: Option<String>, id: Arc<Identity>) -> Response {
    let req = match OAuthRequest::new("", &body, auth) {
        Ok(r) => r,
        Err(_) => return http::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "malformed form body"),
    };
    if let Err(reply) = client_auth::authenticate(&id, &req, false).await {
        return reply;
    }
    let Some(token) = req.body_param("token") else {
        return http::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is required");
    };
    match introspect(&id, &token).await {
        Ok(v) => http::json(StatusCode::OK, &v),
        Err(e) => http::server_error_json(e),
    }
}

/// What RFC 7662 says of `token`: `{"active": false}` unless it is live.
pub async fn introspect(id: &Identity, token: &str) -> Result<Value> {
    let row = sqlx::query(
        "SELECT kind, client_id, user_id, sid, scope, grant_json, issued_at, expires_at, rotated_at, revoked_at \
         FROM tokens WHERE token_hash = $1",
    )
    .bind(secret_key(token))
    .fetch_optional(id.db.pool())
    .await?;
    let Some(row) = row else { return Ok(json!({ "active": false })) };
    let expires_at: i64 = row.try_get("expires_at")?;
    let dead = row.try_get::<Option<i64>, _>("revoked_at")?.is_some()
        || row.try_get::<Option<i64>, _>("rotated_at")?.is_some()
        || expires_at <= now();
    if dead {
        return Ok(json!({ "active": false }));
    }
    let kind: String = row.try_get("kind")?;
    let client_id: String = row.try_get("client_id")?;
    let grant: StoredGrant = serde_json::from_str(&row.try_get::<String, _>("grant_json")?)?;
    let mut out = json!({
        "active": true,
        "scope": row.try_get::<String, _>("scope")?,
        "client_id": client_id,
        "token_type": if kind == "access" { "Bearer" } else { "refresh_token" },
        "exp": expires_at,
        "iat": row.try_get::<i64, _>("issued_at")?,
        "iss": id.settings.issuer_str(),
        "aud": client_id,
        "sub": grant.owner_id,
    });
    if let Some(user_id) = row.try_get::<Option<String>, _>("user_id")?
        && let Ok(user) = id.users.get(&user_id).await {
            out["username"] = json!(user.username);
        }
    if let Some(sid) = row.try_get::<Option<String>, _>("sid")? {
        out["sid"] = json!(sid);
    }
    Ok(out)
}
