//! Embedded static assets and the landing page.

use std::sync::Arc;

use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::Identity;
use crate::http::{self, MessagePage, RequestContext, context, with_identity};

const SITE_CSS: &str = include_str!("../../assets/site.css");
const PASSKEY_JS: &str = include_str!("../../assets/passkey.js");

/// `GET /assets/site.css`, `GET /assets/passkey.js`, and `GET /` (who is signed in).
pub fn filter(id: Arc<Identity>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let css = warp::path!("assets" / "site.css").and(warp::get()).map(|| asset(SITE_CSS, "text/css; charset=utf-8"));
    let js = warp::path!("assets" / "passkey.js").and(warp::get()).map(|| asset(PASSKEY_JS, "text/javascript; charset=utf-8"));
    let home = warp::path::end().and(warp::get()).and(with_identity(id)).and(context()).then(home);
    css.or(js).unify().or(home).unify()
}

/// An embedded asset, cached for an hour.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    warp::reply::with_header(warp::reply::with_header(body, "content-type", content_type), "cache-control", "public, max-age=3600").into_response()
}

/// `/` for someone signed in: where they can go from here.
#[derive(askama::Template)]
#[template(path = "home.html")]
struct HomePage {
    name: String,
    links: Vec<crate::HomeLink>,
}

async fn home(id: Arc<Identity>, ctx: RequestContext) -> Response {
    let session = match id.sessions.from_cookie(ctx.session_cookie.as_deref()).await {
        Ok(s) => s,
        Err(e) => return http::server_error(e),
    };
    match session {
        Some(session) => {
            let user = match id.users.get(&session.user_id).await {
                Ok(u) => u,
                Err(e) => return http::server_error(e),
            };
            let links = id.home_links_for(&user.roles);
            http::render(StatusCode::OK, &HomePage { name: user.name.unwrap_or(user.username), links })
        }
        None => http::render(
            StatusCode::OK,
            &MessagePage { title: "统一身份认证", message: "您尚未登录。", is_error: false, link: Some(("/login", "登录")) },
        ),
    }
}
