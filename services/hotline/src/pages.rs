//! Server-rendered pages behind single sign-on: the agents' workbench
//! (register a ticket with the knowledge base beside the form, dispatch the
//! waiting ones). Forms post back with the identity service's CSRF token
//! and redirect (post/redirect/get).

use std::sync::Arc;

use askama::Template;
use civichub_identity::Identity;
use civichub_identity::http::{self, RequestContext};
use serde::Deserialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::ticket::{Action, Actor, Channel, Role, Status, Ticket, Urgency};
use crate::{Error, NewTicket, Tickets, beijing};

const HOTLINE_CSS: &str = include_str!("../assets/hotline.css");

/// A ticket as the queue shows it.
struct Row {
    number: String,
    channel: &'static str,
    urgency: &'static str,
    status: &'static str,
    created: String,
    due: String,
    department: String,
    content: String,
    suggested: String,
}

#[derive(Template)]
#[template(path = "workbench.html")]
struct Workbench {
    user: String,
    /// The caller of the call the agent is on, to pre-fill the form.
    caller: Option<String>,
    csrf: String,
    notice: Option<String>,
    error: Option<String>,
    waiting: Vec<Row>,
    recent: Vec<Row>,
}

fn channel_label(c: Channel) -> &'static str {
    match c {
        Channel::Phone => "电话",
        Channel::Web => "网站",
        Channel::Sms => "短信",
        Channel::App => "移动端",
        Channel::DingTalk => "钉钉",
        Channel::Other => "其他",
    }
}

fn urgency_label(u: Urgency) -> &'static str {
    match u {
        Urgency::Normal => "一般",
        Urgency::Urgent => "紧急",
        Urgency::Emergency => "特急",
    }
}

/// The Chinese name of a status.
pub fn status_label(s: Status) -> &'static str {
    match s {
        Status::Registered => "待派单",
        Status::Dispatched => "待签收",
        Status::Accepted => "办理中",
        Status::Returned => "退单待审",
        Status::Replied => "已答复",
        Status::Visited => "已回访",
        Status::Closed => "已办结",
        Status::Merged => "已并单",
    }
}

fn when(ms: Option<i64>) -> String {
    beijing(ms, "%m-%d %H:%M").unwrap_or_default()
}

fn row(t: &Ticket, suggested: String) -> Row {
    Row {
        number: t.number.clone(),
        channel: channel_label(t.channel),
        urgency: urgency_label(t.urgency),
        status: status_label(t.status),
        created: when(Some(t.created_ms)),
        due: when(t.due_ms),
        department: t.department.clone().unwrap_or_default(),
        content: t.content.chars().take(120).collect(),
        suggested,
    }
}

/// The signed-in person as a hotline actor, or the reply to send instead
/// (the login page, or 403 without the agent role).
async fn agent(id: &Identity, ctx: &RequestContext, return_to: &str) -> Result<(Actor, String), Response> {
    let session = match id.sessions.from_cookie(ctx.session_cookie.as_deref()).await {
        Ok(s) => s,
        Err(e) => return Err(http::server_error(e)),
    };
    let Some(session) = session else {
        let target = format!("/login?{}", serde_urlencoded::to_string([("return_to", return_to)]).unwrap_or_default());
        return Err(http::redirect(StatusCode::FOUND, &target));
    };
    let user = match id.users.get(&session.user_id).await {
        Ok(u) => u,
        Err(e) => return Err(http::server_error(e)),
    };
    let actor = Actor::of(&user);
    if !actor.has(Role::Agent) {
        return Err(http::error_page(StatusCode::FORBIDDEN, "工单工作台供话务员使用：您的账号没有话务员（agent）角色。"));
    }
    Ok((actor, user.name.unwrap_or(user.username)))
}

#[derive(Debug, Default, Deserialize)]
struct Flash {
    registered: Option<String>,
    dispatched: Option<String>,
    to: Option<String>,
}

async fn workbench(tickets: &Tickets, id: &Identity, ctx: &RequestContext, notice: Option<String>, error: Option<String>, status: StatusCode) -> Response {
    let (actor, user) = match agent(id, ctx, "/hotline").await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let (waiting, recent) = match (tickets.list(Some("registered"), None, false, 1, 50).await, tickets.list(None, None, false, 1, 20).await) {
        (Ok((w, _)), Ok((r, _))) => (w, r),
        (Err(e), _) | (_, Err(e)) => return http::server_error(e),
    };
    let mut rows = Vec::with_capacity(waiting.len());
    for t in &waiting {
        let suggested = tickets.suggest_departments(t.category.as_deref(), &t.content).await.unwrap_or_default().into_iter().next().unwrap_or_default();
        rows.push(row(t, suggested));
    }
    let caller = match tickets.current_call(&actor.name).await {
        Ok(call) => call.map(|c| c.caller),
        Err(e) => {
            tracing::warn!("reading the current call of {}: {e}", actor.name);
            None
        }
    };
    let (csrf, fresh) = http::csrf_token(ctx);
    let page = Workbench { user, caller, csrf: csrf.clone(), notice, error, waiting: rows, recent: recent.iter().map(|t| row(t, String::new())).collect() };
    http::with_csrf(http::render(status, &page), &csrf, fresh, id.settings.secure_cookies())
}

fn form_field(form: &[(String, String)], name: &str) -> Option<String> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Checks the CSRF token and the agent; the form's fields, or the reply to send.
async fn posted(id: &Identity, ctx: &RequestContext, body: &[u8]) -> Result<(Actor, Vec<(String, String)>), Response> {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    if !http::csrf_ok(ctx.csrf_cookie.as_deref(), form_field(&form, "csrf").as_deref()) {
        return Err(http::error_page(StatusCode::FORBIDDEN, "表单已过期，请返回工作台重新提交。"));
    }
    let (actor, _) = agent(id, ctx, "/hotline").await?;
    Ok((actor, form))
}

async fn register(tickets: &Tickets, id: &Identity, ctx: &RequestContext, body: &[u8]) -> Response {
    let (actor, form) = match posted(id, ctx, body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let parsed = (|| {
        let channel = form_field(&form, "channel").and_then(|c| Channel::parse(&c)).ok_or_else(|| Error::Invalid("请选择来源渠道".into()))?;
        let urgency = match form_field(&form, "urgency") {
            Some(u) => Some(Urgency::parse(&u).ok_or_else(|| Error::Invalid("紧急程度无效".into()))?),
            None => None,
        };
        Ok::<_, Error>(NewTicket {
            channel,
            caller_name: form_field(&form, "caller_name"),
            caller_phone: form_field(&form, "caller_phone"),
            content: form_field(&form, "content").unwrap_or_default(),
            location: form_field(&form, "location"),
            category: form_field(&form, "category"),
            urgency,
        })
    })();
    let result = match parsed {
        Ok(new) => tickets.register(new, &actor.name, Tickets::now()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(t) => http::redirect(StatusCode::SEE_OTHER, &format!("/hotline?{}", serde_urlencoded::to_string([("registered", &t.number)]).unwrap_or_default())),
        Err(Error::Invalid(m)) => workbench(tickets, id, ctx, None, Some(format!("未能登记：{m}")), StatusCode::BAD_REQUEST).await,
        Err(e) => http::server_error(e),
    }
}

async fn dispatch(tickets: &Tickets, id: &Identity, ctx: &RequestContext, number: &str, body: &[u8]) -> Response {
    let (actor, form) = match posted(id, ctx, body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let department = form_field(&form, "department").unwrap_or_default();
    let action = Action::Dispatch { department: department.clone(), co_departments: vec![] };
    match tickets.act(number, &action, &actor, Tickets::now()).await {
        Ok(_) => http::redirect(
            StatusCode::SEE_OTHER,
            &format!("/hotline?{}", serde_urlencoded::to_string([("dispatched", number), ("to", department.as_str())]).unwrap_or_default()),
        ),
        Err(Error::Invalid(m) | Error::Conflict(m) | Error::Forbidden(m)) => {
            workbench(tickets, id, ctx, None, Some(format!("未能派单：{m}")), StatusCode::BAD_REQUEST).await
        }
        Err(Error::NotFound(n)) => workbench(tickets, id, ctx, None, Some(format!("没有工单 {n}")), StatusCode::NOT_FOUND).await,
        Err(e) => http::server_error(e),
    }
}

type Shared = (Arc<Tickets>, Arc<Identity>);

/// `/hotline` (the workbench), its forms and its stylesheet.
pub fn routes(tickets: Arc<Tickets>, identity: Arc<Identity>) -> warp::filters::BoxedFilter<(Response,)> {
    let shared: Shared = (tickets, identity);
    let with = move || {
        let shared = shared.clone();
        warp::any().map(move || shared.clone())
    };
    let page = warp::path!("hotline")
        .and(warp::get())
        .and(http::context())
        .and(warp::query::<Flash>().or(warp::any().map(Flash::default)).unify())
        .and(with())
        .then(|ctx: RequestContext, flash: Flash, (tickets, id): Shared| async move {
            let notice = match (flash.registered, flash.dispatched) {
                (Some(n), _) => Some(format!("已登记工单 {n}")),
                (None, Some(n)) => Some(format!("工单 {n} 已派至{}", flash.to.unwrap_or_default())),
                _ => None,
            };
            workbench(&tickets, &id, &ctx, notice, None, StatusCode::OK).await
        });
    let register = warp::path!("hotline" / "tickets")
        .and(warp::post())
        .and(http::context())
        .and(http::form_body())
        .and(with())
        .then(|ctx: RequestContext, body: bytes::Bytes, (tickets, id): Shared| async move { register(&tickets, &id, &ctx, &body).await });
    let dispatch = warp::path!("hotline" / "tickets" / String / "dispatch")
        .and(warp::post())
        .and(http::context())
        .and(http::form_body())
        .and(with())
        .then(|number: String, ctx: RequestContext, body: bytes::Bytes, (tickets, id): Shared| async move {
            dispatch(&tickets, &id, &ctx, &number, &body).await
        });
    let css = warp::path!("hotline" / "assets" / "hotline.css").and(warp::get()).map(|| {
        let mut r = warp::reply::with_header(HOTLINE_CSS, "content-type", "text/css; charset=utf-8").into_response();
        r.headers_mut().insert("cache-control", warp::http::HeaderValue::from_static("public, max-age=3600"));
        r
    });
    page.or(register).unify().or(dispatch).unify().or(css).unify().boxed()
}
