//! `POST /token`: one oxide-auth flow per grant type.

use std::sync::Arc;

use oxide_auth::endpoint::OAuthError;
use oxide_auth_async::endpoint::access_token::AccessTokenFlow;
use oxide_auth_async::endpoint::client_credentials::ClientCredentialsFlow;
use oxide_auth_async::endpoint::refresh::RefreshFlow;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::endpoints::client_auth;
use crate::http::{self, RequestContext, authorization, context, form_body, with_identity};
use crate::oauth::{DbAuthorizer, DbIssuer, DbRegistrar, Flow, HubEndpoint, OAuthFailure, OAuthRequest, OAuthResponse, Solicitor};
use crate::Identity;

/// `POST /token`.
pub fn filter(id: Arc<Identity>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("token")
        .and(warp::post())
        .and(form_body())
        .and(authorization())
        .and(with_identity(id))
        .and(context())
        .then(handle)
}

fn endpoint(id: &Arc<Identity>, ctx: &RequestContext, flow: Flow, solicitor: Solicitor) -> HubEndpoint {
    HubEndpoint::new(
        DbRegistrar::new(id.clone(), flow),
        DbAuthorizer::new(id.clone(), None, ctx.ip.clone()),
        DbIssuer::new(id.clone(), ctx.ip.clone()),
        solicitor,
        Vec::new(),
        false,
    )
}

fn finish(result: Result<OAuthResponse, OAuthFailure>) -> Response {
    match result {
        Ok(response) => response.into_reply(),
        Err(OAuthFailure::BadRequest(m)) => http::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &m),
        Err(OAuthFailure::OAuth(OAuthError::DenySilently)) => {
            http::oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "the grant is invalid")
        }
        Err(OAuthFailure::OAuth(OAuthError::BadRequest)) => {
            http::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "malformed token request")
        }
        Err(e) => http::server_error_json(format!("{e:?}")),
    }
}

async fn handle(body: bytes::Bytes, auth: Option<String>, id: Arc<Identity>, ctx: RequestContext) -> Response {
    let mut req = match OAuthRequest::new("", &body, auth) {
        Ok(r) => r,
        Err(OAuthFailure::BadRequest(m)) => return http::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &m),
        Err(e) => return http::server_error_json(format!("{e:?}")),
    };
    let grant_type = req.body_param("grant_type");
    client_auth::normalize_for_oxide(&mut req, grant_type.as_deref() == Some("refresh_token"));
    match grant_type.as_deref() {
        Some("authorization_code") => {
            let endpoint = endpoint(&id, &ctx, Flow::User, Solicitor::Denied);
            let rejected = endpoint.grant_rejected();
            let mut flow = match AccessTokenFlow::prepare(endpoint) {
                Ok(f) => f,
                Err(e) => return finish(Err(e)),
            };
            flow.allow_credentials_in_body(true);
            let result = flow.execute(req).await;
            // oxide-auth answers invalid_request for a bad code or verifier,
            // and an error for tokens refused because the code's login ended
            // meanwhile; RFC 6749 §5.2 and RFC 7636 §4.6 say invalid_grant.
            let issued = matches!(&result, Ok(r) if r.status().is_success());
            if !issued && rejected.load(std::sync::atomic::Ordering::Relaxed) {
                return http::oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the authorization code or PKCE verifier is invalid, expired or already used, or its login has ended",
                );
            }
            finish(result)
        }
        Some("refresh_token") => {
            let endpoint = endpoint(&id, &ctx, Flow::User, Solicitor::Denied);
            let rejected = endpoint.grant_rejected();
            match RefreshFlow::prepare(endpoint) {
                Ok(mut flow) => {
                    let result = flow.execute(req).await;
                    // Spent by a concurrent request, or its login ended meanwhile:
                    // RFC 6749 §5.2's invalid_grant, not a server error.
                    if rejected.load(std::sync::atomic::Ordering::Relaxed) {
                        return http::oauth_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_grant",
                            "the refresh token was already used, or its login has ended",
                        );
                    }
                    finish(result)
                }
                Err(e) => finish(Err(e)),
            }
        }
        Some("client_credentials") => {
            let owner = client_auth::credentials(&req).map(|(client, _)| client).unwrap_or_default();
            let mut flow = match ClientCredentialsFlow::prepare(endpoint(&id, &ctx, Flow::Service, Solicitor::Authorized(owner))) {
                Ok(f) => f,
                Err(e) => return finish(Err(e)),
            };
            flow.allow_credentials_in_body(true);
            flow.allow_refresh_token(false);
            finish(flow.execute(req).await)
        }
        // The value is not echoed: error_description takes printable ASCII
        // without quotes or backslashes only (RFC 6749 §5.2).
        Some(_) => http::oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "this grant_type is not supported"),
        None => http::oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type is required"),
    }
}
