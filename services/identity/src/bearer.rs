//! Bearer tokens for CivicHub's own APIs (knowledge base, hotline,
//! messaging): who is calling, with which scopes.

use civichub_store::{Row, now, secret_key};

use crate::{Identity, Result};

/// The caller behind a live access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user's subject id, or the client id for client credentials.
    pub subject: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// The user, when a person signed in.
    pub user_id: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
}

impl Principal {
    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a bearer token was not accepted (RFC 6750 §3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BearerError {
    /// No token was sent.
    Missing,
    /// The token is unknown, expired or revoked.
    InvalidToken,
    /// The token lacks the scope.
    InsufficientScope(String),
}

impl BearerError {
    /// The `WWW-Authenticate` challenge.
    pub fn challenge(&self) -> String {
        match self {
            BearerError::Missing => "Bearer realm=\"civichub\"".into(),
            BearerError::InvalidToken => "Bearer realm=\"civichub\", error=\"invalid_token\"".into(),
            BearerError::InsufficientScope(s) => format!("Bearer realm=\"civichub\", error=\"insufficient_scope\", scope=\"{s}\""),
        }
    }

    /// 401, or 403 for a missing scope.
    pub fn status(&self) -> u16 {
        match self {
            BearerError::InsufficientScope(_) => 403,
            _ => 401,
        }
    }

    /// `body` (an error reply) sent with this refusal's status and challenge.
    pub fn refuse(&self, mut body: warp::reply::Response) -> warp::reply::Response {
        *body.status_mut() = warp::http::StatusCode::from_u16(self.status()).unwrap_or(warp::http::StatusCode::UNAUTHORIZED);
        if let Ok(v) = warp::http::HeaderValue::from_str(&self.challenge()) {
            body.headers_mut().insert(warp::http::header::WWW_AUTHENTICATE, v);
        }
        body
    }
}

impl Identity {
    /// The caller behind an `Authorization: Bearer …` header, if it names a
    /// live access token.
    pub async fn principal(&self, authorization: Option<&str>) -> Result<Option<Principal>> {
        let Some(token) = authorization.and_then(|h| crate::http::credentials_of(h, "Bearer")) else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT client_id, user_id, scope, grant_json FROM tokens WHERE token_hash = $1 AND kind = 'access' \
             AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(secret_key(token.trim()))
        .bind(now())
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let client_id: String = row.try_get("client_id")?;
        let user_id: Option<String> = row.try_get("user_id")?;
        let scope: String = row.try_get("scope")?;
        Ok(Some(Principal {
            subject: user_id.clone().unwrap_or_else(|| client_id.clone()),
            client_id,
            user_id,
            scopes: scope.split_whitespace().map(str::to_owned).collect(),
        }))
    }

    /// The caller, required to hold `scope`.
    pub async fn require_scope(&self, authorization: Option<&str>, scope: &str) -> Result<std::result::Result<Principal, BearerError>> {
        if authorization.is_none() {
            return Ok(Err(BearerError::Missing));
        }
        Ok(match self.principal(authorization).await? {
            None => Err(BearerError::InvalidToken),
            Some(p) if p.has_scope(scope) => Ok(p),
            Some(_) => Err(BearerError::InsufficientScope(scope.to_owned())),
        })
    }
}

/// JSON replies for CivicHub's own APIs: `{"error": CODE, "message": TEXT}`.
pub mod reply {
    use warp::http::StatusCode;
    use warp::reply::Response;
    use warp::Reply;

    use super::{BearerError, Principal};
    use crate::Identity;

    /// `value` as JSON with `status`.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Response {
        warp::reply::with_status(warp::reply::json(value), status).into_response()
    }

    /// An error reply.
    pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
        json(status, &serde_json::json!({ "error": code, "message": message }))
    }

    /// 500, logging what happened.
    pub fn internal(context: &str, e: impl std::fmt::Display) -> Response {
        tracing::error!("{context}: {e}");
        error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal server error")
    }

    /// 401 or 403 with the RFC 6750 challenge.
    pub fn bearer_failure(e: BearerError) -> Response {
        let message = match &e {
            BearerError::Missing => "a bearer access token is required".to_owned(),
            BearerError::InvalidToken => "the access token is invalid, expired or revoked".to_owned(),
            BearerError::InsufficientScope(s) => format!("the access token lacks scope {s}"),
        };
        e.refuse(error(StatusCode::UNAUTHORIZED, if e.status() == 403 { "insufficient_scope" } else { "invalid_token" }, &message))
    }

    /// The caller behind the `Authorization` header, required to hold `scope`;
    /// otherwise the reply to send.
    pub async fn authorize(id: &Identity, authorization: Option<String>, scope: &str) -> Result<Principal, Response> {
        match id.require_scope(authorization.as_deref(), scope).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(bearer_failure(e)),
            Err(e) => Err(internal("checking bearer token", e)),
        }
    }
}
