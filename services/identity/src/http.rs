//! Reply helpers, pages and per-request context shared by the endpoints.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use serde::Serialize;
use warp::http::{StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::Identity;
use crate::sessions::SESSION_COOKIE;

/// The CSRF double-submit cookie.
pub const CSRF_COOKIE: &str = "civichub_csrf";

/// The cookie that ties a login through an upstream (and an upstream
/// account waiting to be linked) to the browser that started it, so that a
/// URL opened elsewhere completes nothing (RFC 6749 §10.12).
pub const UPSTREAM_COOKIE: &str = "civichub_upstream";

/// The largest request body any identity endpoint accepts.
pub const MAX_FORM_BYTES: u64 = 64 * 1024;

/// Who is asking: cookies and source address, read once per request.
#[derive(Clone, Debug, Default)]
pub struct RequestContext {
    /// The session cookie, if sent.
    pub session_cookie: Option<String>,
    /// The CSRF cookie, if sent.
    pub csrf_cookie: Option<String>,
    /// The [`UPSTREAM_COOKIE`], if sent.
    pub upstream_cookie: Option<String>,
    /// The source address.
    pub ip: Option<String>,
}

/// Passes the identity service to a handler.
pub fn with_identity(id: Arc<Identity>) -> impl Filter<Extract = (Arc<Identity>,), Error = Infallible> + Clone {
    warp::any().map(move || id.clone())
}

/// Reads the [`RequestContext`].
pub fn context() -> impl Filter<Extract = (RequestContext,), Error = Infallible> + Clone {
    warp::cookie::optional::<String>(SESSION_COOKIE)
        .and(warp::cookie::optional::<String>(CSRF_COOKIE))
        .and(warp::cookie::optional::<String>(UPSTREAM_COOKIE))
        .and(warp::addr::remote())
        .map(|session_cookie, csrf_cookie, upstream_cookie, addr: Option<SocketAddr>| RequestContext {
            session_cookie,
            csrf_cookie,
            upstream_cookie,
            ip: addr.map(|a| a.ip().to_string()),
        })
}

/// The raw query string (empty when absent).
pub fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// A request body over the limit.
#[derive(Debug)]
pub struct BodyTooLarge;
impl warp::reject::Reject for BodyTooLarge {}

/// A request body that broke off or was malformed on the wire (a bad
/// chunked encoding, a client gone mid-upload): 400.
#[derive(Debug)]
pub struct BodyUnreadable;
impl warp::reject::Reject for BodyUnreadable {}

/// A request that carries a NUL character (`%00` in its query or form, a
/// `\u0000` escape in its JSON): no stored value holds one, and PostgreSQL
/// refuses it in any text parameter, so it is refused at the edge (400).
#[derive(Debug)]
pub struct NulInInput;
impl warp::reject::Reject for NulInInput {}

/// Whether url-encoded text decodes to a NUL character.
fn encodes_nul(query: &[u8]) -> bool {
    query.contains(&0) || query.windows(3).any(|w| w == b"%00")
}

/// Whether a JSON text holds a NUL character: a `\u0000` escape (a
/// backslash escaped itself, `\\u0000`, is text) or a raw NUL byte.
fn json_has_nul(body: &[u8]) -> bool {
    body.contains(&0)
        || body.windows(6).enumerate().any(|(i, w)| {
            w == b"\\u0000" && body[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 0
        })
}

/// Refuses a request whose query string decodes to a NUL character, before
/// any route reads it (see [`NulInInput`]).
pub fn no_nul_in_query() -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    raw_query()
        .and_then(|q: String| async move { if encodes_nul(q.as_bytes()) { Err(warp::reject::custom(NulInInput)) } else { Ok(()) } })
        .untuple_one()
}

/// A url-encoded form body of at most [`MAX_FORM_BYTES`], with or without a
/// `Content-Length` (an absent body is an empty form).
pub fn form_body() -> impl Filter<Extract = (bytes::Bytes,), Error = warp::Rejection> + Clone {
    limited_body(MAX_FORM_BYTES)
}

/// A request body of at most `max` bytes, read whole; over the limit the
/// request is rejected with [`BodyTooLarge`] (413), and a body that holds a
/// NUL character (a NUL byte, a JSON `\u0000`, or, in a body not declared
/// JSON, a url-encoded `%00`) with [`NulInInput`] (400).
pub fn limited_body(max: u64) -> impl Filter<Extract = (bytes::Bytes,), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(move |len: Option<u64>| async move {
            if len.is_some_and(|l| l > max) { Err(warp::reject::custom(BodyTooLarge)) } else { Ok(()) }
        })
        .untuple_one()
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::stream())
        .and_then(move |content_type: Option<String>, body| async move {
            let body = collect_limited(body, max).await?;
            let json = content_type.is_some_and(|t| {
                let t = t.to_ascii_lowercase();
                t.starts_with("application/json") || t.split(';').next().is_some_and(|m| m.trim_end().ends_with("+json"))
            });
            if json_has_nul(&body) || (!json && encodes_nul(&body)) {
                return Err(warp::reject::custom(NulInInput));
            }
            Ok(body)
        })
}

async fn collect_limited<S, B>(body: S, max: u64) -> Result<bytes::Bytes, warp::Rejection>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures_util::StreamExt;
    let mut body = std::pin::pin!(body);
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|_| warp::reject::custom(BodyUnreadable))?;
        if out.len() as u64 + chunk.remaining() as u64 > max {
            return Err(warp::reject::custom(BodyTooLarge));
        }
        while chunk.has_remaining() {
            let piece = chunk.chunk();
            let n = piece.len();
            out.extend_from_slice(piece);
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

/// The credentials of an `Authorization` header in `scheme`, whose name is
/// matched without regard to case (RFC 7235 §2.1): `basic`, `BEARER` too.
pub(crate) fn credentials_of<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (name, rest) = header.split_once(' ')?;
    name.eq_ignore_ascii_case(scheme).then(|| rest.trim_start())
}

/// The `Authorization` header.
pub fn authorization() -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    warp::header::optional::<String>("authorization")
        .or(warp::any().map(|| None))
        .unify()
}

fn build(status: StatusCode, content_type: &str, body: String) -> Response {
    warp::http::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(body.into())
        .unwrap_or_else(|_| internal_error_reply())
}

/// A bare 500, for when even building a reply failed.
pub fn internal_error_reply() -> Response {
    warp::reply::with_status("internal server error", StatusCode::INTERNAL_SERVER_ERROR).into_response()
}

/// An HTML page.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut r = build(status, "text/html; charset=utf-8", body);
    let h = r.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, header::HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; form-action 'self' http: https:"),
    );
    h.insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
    r
}

/// A JSON body.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => build(status, "application/json", body),
        Err(_) => internal_error_reply(),
    }
}

/// An RFC 6749 §5.2 error body.
pub fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json(status, &serde_json::json!({ "error": error, "error_description": description }))
}

/// A redirect (302 after GET, 303 after POST).
pub fn redirect(status: StatusCode, location: &str) -> Response {
    warp::http::Response::builder()
        .status(status)
        .header(header::LOCATION, location)
        .header(header::CACHE_CONTROL, "no-store")
        .body(String::new().into())
        .unwrap_or_else(|_| internal_error_reply())
}

/// Adds a `Set-Cookie`.
pub fn with_cookie(mut reply: Response, name: &str, value: &str, max_age: Option<i64>, secure: bool) -> Response {
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    if let Ok(v) = header::HeaderValue::from_str(&cookie) {
        reply.headers_mut().append(header::SET_COOKIE, v);
    }
    reply
}

/// A page with a title and a message.
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage<'a> {
    /// Heading.
    pub title: &'a str,
    /// Body text.
    pub message: &'a str,
    /// Styled as an error.
    pub is_error: bool,
    /// A link onwards.
    pub link: Option<(&'a str, &'a str)>,
}

/// Renders a template, or a 500 if it cannot.
pub fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!("rendering page: {e}");
            internal_error_reply()
        }
    }
}

/// An error page: for problems that must not redirect anywhere.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    render(status, &MessagePage { title: "无法完成请求", message, is_error: true, link: None })
}

/// Logs an internal failure and answers with a page that reveals nothing.
pub fn server_error(e: impl std::fmt::Display) -> Response {
    tracing::error!("internal error: {e}");
    error_page(StatusCode::INTERNAL_SERVER_ERROR, "服务器内部错误，请稍后重试。")
}

/// Logs an internal failure and answers with RFC 6749's `server_error`.
pub fn server_error_json(e: impl std::fmt::Display) -> Response {
    tracing::error!("internal error: {e}");
    oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal server error")
}

/// Compares two CSRF values in constant time; both must be present.
pub fn csrf_ok(cookie: Option<&str>, form: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    match (cookie, form) {
        (Some(c), Some(f)) if !c.is_empty() && c.len() == f.len() => c.as_bytes().ct_eq(f.as_bytes()).into(),
        _ => false,
    }
}

/// The CSRF token to put in a form, and whether it must be set as a cookie.
pub fn csrf_token(ctx: &RequestContext) -> (String, bool) {
    match &ctx.csrf_cookie {
        Some(c) if c.len() >= 16 && c.len() <= 128 => (c.clone(), false),
        _ => (civichub_store::random_token(24), true),
    }
}

/// Sets the CSRF cookie on `reply` when [`csrf_token`] made a new one.
pub fn with_csrf(reply: Response, token: &str, fresh: bool, secure: bool) -> Response {
    if fresh { with_cookie(reply, CSRF_COOKIE, token, None, secure) } else { reply }
}

/// The person signed in with the session cookie `cookie` (a live session of
/// an enabled user), or the login page to go to first, coming back to `return_to`.
pub async fn signed_in(id: &Identity, cookie: Option<&str>, return_to: &str) -> Result<(crate::Session, crate::User), Response> {
    let Some(session) = id.sessions.from_cookie(cookie).await.map_err(server_error)? else {
        let target = format!("/login?{}", serde_urlencoded::to_string([("return_to", return_to)]).unwrap_or_default());
        return Err(redirect(StatusCode::FOUND, &target));
    };
    let user = id.users.get(&session.user_id).await.map_err(server_error)?;
    Ok((session, user))
}

#[cfg(test)]
mod tests {
    #[test]
    fn auth_schemes_match_without_case() {
        assert_eq!(super::credentials_of("Basic abc", "Basic"), Some("abc"));
        assert_eq!(super::credentials_of("basic abc", "Basic"), Some("abc"));
        assert_eq!(super::credentials_of("BEARER  t", "Bearer"), Some("t"));
        assert_eq!(super::credentials_of("Bearerx t", "Bearer"), None);
        assert_eq!(super::credentials_of("Basic", "Basic"), None);
    }

    #[test]
    fn nul_characters_are_found_in_queries_forms_and_json() {
        assert!(super::encodes_nul(b"client_id=%00"));
        assert!(!super::encodes_nul(b"q=%2500&r=100%25"));
        assert!(super::json_has_nul(br#"{"to":{"user":"a\u0000"}}"#));
        assert!(super::json_has_nul(b"{\"a\":\"\0\"}"));
        assert!(!super::json_has_nul(br#"{"text":"C:\\u0000 is a path"}"#), "an escaped backslash, then text");
        assert!(super::json_has_nul(br#"{"text":"\\\u0000"}"#), "an escaped backslash, then a NUL");
        assert!(!super::json_has_nul(br#"{"text":"100%00"}"#));
    }
}
