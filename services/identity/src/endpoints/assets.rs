//! Embedded static assets and the landing page.

use std::sync::Arc;

use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::Identity;
use crate::http::{self, MessagePage, RequestContext, context, with_identity};

const SITE_CSS: &str = include_str!("../../assets/site.css");

/// `GET /assets/site.css`, and `GET /` (who is signed in).
pub fn filter(id: Arc<Identity>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let css = warp::path!("assets" / "site.css").and(warp::get()).map(|| {
        warp::reply::with_header(
            warp::reply::with_header(SITE_CSS, "content-type", "text/css; charset=utf-8"),
            "cache-control",
            "public, max-age=3600",
        )
        .into_response()
    });
    let home = warp::path::end().and(warp::get()).and(with_identity(id)).and(context()).then(home);
    css.or(home).unify()
}

async fn home(id: Arc<Identity>, ctx: RequestContext) -> Response {
    let session = match id.sessions.from_cookie(ctx.session_cookie.as_deref()).await {
        Ok(s) => s,
        Err(e) => return http::server_error(e),
    };
    match session {
        Some(session) => {
            let name = match id.users.get(&session.user_id).await {
                Ok(u) => u.name.unwrap_or(u.username),
                Err(e) => return http::server_error(e),
            };
            let message = format!("您已登录为 {name}。");
            http::render(
                StatusCode::OK,
                &MessagePage { title: "统一身份认证", message: &message, is_error: false, link: Some(("/end-session", "退出登录")) },
            )
        }
        None => http::render(
            StatusCode::OK,
            &MessagePage { title: "统一身份认证", message: "您尚未登录。", is_error: false, link: Some(("/login", "登录")) },
        ),
    }
}
