//! The messaging HTTP API.
//!
//! - `POST /api/messages` (scope `messages:send`): route a message → `202 {"id", "status"}`.
//! - `GET /api/messages/{id}`: status and attempts; scope `messages:read`
//!   for any message, or `messages:send` for the client's own.
//! - `POST /api/fusion/call-events` (scope `fusion:events`): a call-centre
//!   event → `civichub.fusion.call.<event>` → `202 {"id", "subject"}`.

use std::sync::Arc;

use civichub_identity::Identity;
use civichub_identity::reply::{bearer_failure, error, internal, json};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

use crate::messages::{MessageRequest, Router};
use crate::Error;

/// Largest message request body.
const MAX_BODY: u64 = 16 * 1024;

/// Scope to send messages.
pub const SCOPE_SEND: &str = "messages:send";
/// Scope to read message status.
pub const SCOPE_READ: &str = "messages:read";
/// Scope of a call centre pushing its events.
pub const SCOPE_CALL_EVENTS: &str = "fusion:events";

fn from_error(e: Error) -> Response {
    match e {
        Error::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid_request", &m),
        Error::NotFound => error(StatusCode::NOT_FOUND, "not_found", "no such message"),
        other => internal("messaging", other),
    }
}

type Shared = (Arc<Router>, Arc<Identity>);

fn with(shared: Shared) -> impl Filter<Extract = (Shared,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || shared.clone())
}

/// The messaging routes.
pub fn routes(router: Arc<Router>, identity: Arc<Identity>) -> BoxedFilter<(Response,)> {
    let shared = (router, identity);
    let send = warp::path!("api" / "messages")
        .and(warp::post())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("x-trace-id"))
        .and(civichub_identity::limited_body(MAX_BODY))
        .and(with(shared.clone()))
        .then(|auth: Option<String>, trace: Option<String>, body: bytes::Bytes, (router, id): Shared| async move {
            let principal = match civichub_identity::reply::authorize(&id, auth, SCOPE_SEND).await {
                Ok(p) => p,
                Err(reply) => return reply,
            };
            let request = match MessageRequest::parse(&body) {
                Ok(r) => r,
                Err(e) => return from_error(e),
            };
            let trace = trace.filter(|t| !t.is_empty() && t.len() <= 64 && t.chars().all(|c| c.is_ascii_graphic()));
            match router.submit(request, Some(&principal.client_id), trace.as_deref()).await {
                Ok(accepted) => json(StatusCode::ACCEPTED, &serde_json::json!(accepted)),
                Err(e) => from_error(e),
            }
        });
    let status = warp::path!("api" / "messages" / String)
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(with(shared.clone()))
        .then(|message_id: String, auth: Option<String>, (router, id): Shared| async move {
            let principal = match id.principal(auth.as_deref()).await {
                Err(e) => return internal("checking bearer token", e),
                Ok(None) if auth.is_none() => return bearer_failure(civichub_identity::BearerError::Missing),
                Ok(None) => return bearer_failure(civichub_identity::BearerError::InvalidToken),
                Ok(Some(p)) if !p.has_scope(SCOPE_SEND) && !p.has_scope(SCOPE_READ) => {
                    return bearer_failure(civichub_identity::BearerError::InsufficientScope(SCOPE_READ.into()));
                }
                Ok(Some(p)) => p,
            };
            match router.get(&message_id).await {
                // Another client's message does not exist for a sender without messages:read.
                Ok(view) if !principal.has_scope(SCOPE_READ) && view.client_id.as_deref() != Some(principal.client_id.as_str()) => {
                    from_error(Error::NotFound)
                }
                Ok(view) => json(StatusCode::OK, &serde_json::json!(view)),
                Err(e) => from_error(e),
            }
        });
    let calls = warp::path!("api" / "fusion" / "call-events")
        .and(warp::post())
        .and(warp::header::optional::<String>("authorization"))
        .and(civichub_identity::limited_body(civichub_fusion::MAX_EVENT_BYTES as u64))
        .and(with(shared))
        .then(|auth: Option<String>, body: bytes::Bytes, (router, id): Shared| async move {
            if let Err(reply) = civichub_identity::reply::authorize(&id, auth, SCOPE_CALL_EVENTS).await {
                return reply;
            }
            let event = match civichub_fusion::CallEvent::parse(&body) {
                Ok(e) => e,
                Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
            };
            match crate::publish_call_event(router.bus(), &event).await {
                Ok((id, subject)) => json(StatusCode::ACCEPTED, &serde_json::json!({ "id": id, "subject": subject })),
                Err(e) => from_error(e),
            }
        });
    send.or(status).unify().or(calls).unify().boxed()
}
