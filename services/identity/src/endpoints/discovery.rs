//! `GET /.well-known/openid-configuration` and `GET /jwks`.

use std::sync::Arc;

use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::http::{self, with_identity};
use crate::{Identity, oidc};

fn public(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert("access-control-allow-origin", warp::http::HeaderValue::from_static("*"));
    h.insert("cache-control", warp::http::HeaderValue::from_static("public, max-age=60"));
    r
}

/// Discovery document and key set, open to any origin.
pub fn filter(id: Arc<Identity>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let config = warp::path!(".well-known" / "openid-configuration")
        .and(warp::get())
        .and(with_identity(id.clone()))
        .map(|id: Arc<Identity>| match oidc::discovery(&id.settings) {
            Ok(doc) => public(http::json(StatusCode::OK, &doc)),
            Err(e) => http::server_error_json(e),
        });
    let jwks = warp::path!("jwks").and(warp::get()).and(with_identity(id)).then(|id: Arc<Identity>| async move {
        match id.keys.jwks().await {
            Ok(set) => public(http::json(StatusCode::OK, &set)),
            Err(e) => http::server_error_json(e),
        }
    });
    config.or(jwks).unify()
}
