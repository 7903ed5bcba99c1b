//! `GET|POST /userinfo` (OIDC Core §5.3), protected by oxide-auth's resource flow.

use std::sync::Arc;

use oxide_auth::endpoint::Scope;
use oxide_auth_async::endpoint::resource::ResourceFlow;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::http::{self, RequestContext, authorization, context, form_body, with_identity};
use crate::oauth::{DbAuthorizer, DbIssuer, DbRegistrar, Flow, HubEndpoint, OAuthRequest, Solicitor, StoredGrant};
use crate::{BearerError, Identity, oidc};

/// `GET /userinfo` and `POST /userinfo` (token in the header, or in the form body).
pub fn filter(id: Arc<Identity>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let get = warp::path!("userinfo").and(warp::get()).map(bytes::Bytes::new);
    let post = warp::path!("userinfo").and(warp::post()).and(form_body());
    get.or(post)
        .unify()
        .and(authorization())
        .and(with_identity(id))
        .and(context())
        .then(handle)
}

/// A refusal as RFC 6750 §3.1 words it: the challenge in `WWW-Authenticate`
/// (comma-separated, no error code when no token came), the same error in the body.
fn refused(e: BearerError) -> Response {
    let (code, description) = match &e {
        BearerError::Missing => ("invalid_request", "a bearer access token is required"),
        BearerError::InvalidToken => ("invalid_token", "the access token is not valid"),
        BearerError::InsufficientScope(_) => ("insufficient_scope", "the access token lacks scope openid"),
    };
    e.refuse(http::oauth_error(StatusCode::UNAUTHORIZED, code, description))
}

fn invalid_token() -> Response {
    refused(BearerError::InvalidToken)
}

async fn handle(body: bytes::Bytes, auth: Option<String>, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let Ok(mut req) = OAuthRequest::new("", &body, auth) else {
        return http::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "the request body is not a url-encoded form");
    };
    if req.auth().is_none()
        && let Some(token) = req.body_param("access_token") {
            req.set_auth(Some(format!("Bearer {token}")));
        }
    let sent = req.auth().is_some();
    let openid: Scope = match "openid".parse() {
        Ok(s) => s,
        Err(_) => return http::server_error_json("scope"),
    };
    let endpoint = HubEndpoint::new(
        DbRegistrar::new(id.clone(), Flow::User),
        DbAuthorizer::new(id.clone(), None, ctx.ip.clone()),
        DbIssuer::new(id.clone(), ctx.ip.clone()),
        Solicitor::Denied,
        vec![openid],
        false,
    );
    let mut flow = match ResourceFlow::prepare(endpoint) {
        Ok(f) => f,
        Err(e) => return http::server_error_json(format!("{e:?}")),
    };
    let grant = match flow.execute(req).await {
        Ok(grant) => grant,
        // oxide-auth's own challenge joins its parameters with spaces and
        // calls an unknown token `invalid_request`: answer as RFC 6750 says.
        Err(Ok(response)) => {
            return refused(if response.status() == StatusCode::FORBIDDEN {
                BearerError::InsufficientScope("openid".into())
            } else if sent {
                BearerError::InvalidToken
            } else {
                BearerError::Missing
            });
        }
        Err(Err(e)) => return http::server_error_json(format!("{e:?}")),
    };
    let stored = match StoredGrant::from_grant(&grant) {
        Ok(s) => s,
        Err(e) => return http::server_error_json(e),
    };
    if stored.login.is_none() {
        return invalid_token();
    }
    match id.users.get(&stored.owner_id).await {
        Ok(user) if !user.disabled => http::json(StatusCode::OK, &oidc::userinfo(&user, &stored.scopes())),
        Ok(_) => invalid_token(),
        Err(e) => http::server_error_json(e),
    }
}
