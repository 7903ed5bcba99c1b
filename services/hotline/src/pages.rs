//! Server-rendered pages behind single sign-on: the agents' workbench
//! (register a ticket with the knowledge base beside the form, dispatch the
//! waiting ones), the department console (sign for, return, ask for more
//! time, reply, contribute as co-handler), the supervisors' view (overdue
//! tickets to supervise, returns and extensions to decide) and the leaders'
//! dashboard (the KPIs and their charts). Every action form posts to one
//! handler, which checks the identity service's CSRF token, lets the ticket
//! store decide who may do what, and redirects back (post/redirect/get).

use std::sync::Arc;

use askama::Template;
use civichub_identity::Identity;
use civichub_identity::http::{self, RequestContext};
use serde::Deserialize;
use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::api::{StatsQuery, period};
use crate::ticket::{Action, Actor, Channel, Rating, Role, Status, Supervision, Ticket, Urgency};
use crate::{Error, ListOrder, NewTicket, Stats, Tickets, beijing, charts, mask, mask_phone};

const HOTLINE_CSS: &str = include_str!("../assets/hotline.css");

/// The hotline's pages, each for some roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Page {
    Workbench,
    Department,
    Supervise,
    Dashboard,
}

impl Page {
    const ALL: [Page; 4] = [Page::Workbench, Page::Department, Page::Supervise, Page::Dashboard];

    fn path(self) -> &'static str {
        match self {
            Page::Workbench => "/hotline",
            Page::Department => "/hotline/department",
            Page::Supervise => "/hotline/supervise",
            Page::Dashboard => "/hotline/dashboard",
        }
    }

    /// The name forms use in their `back` field.
    fn key(self) -> &'static str {
        match self {
            Page::Workbench => "workbench",
            Page::Department => "department",
            Page::Supervise => "supervise",
            Page::Dashboard => "dashboard",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Page::Workbench => "工单工作台",
            Page::Department => "部门办理",
            Page::Supervise => "督办",
            Page::Dashboard => "领导驾驶舱",
        }
    }

    fn allows(self, a: &Actor) -> bool {
        match self {
            Page::Workbench => a.has(Role::Agent),
            Page::Department => a.has(Role::Handler) && a.department.is_some(),
            Page::Supervise => a.has(Role::Supervisor),
            Page::Dashboard => a.has(Role::Leader) || a.has(Role::Supervisor),
        }
    }

    fn refusal(self) -> &'static str {
        match self {
            Page::Workbench => "工单工作台供话务员使用：您的账号没有话务员（agent）角色。",
            Page::Department => "部门办理页供承办单位的办理人员使用：您的账号没有办理人员（handler）角色或所属部门。",
            Page::Supervise => "督办页供热线督办人员使用：您的账号没有督办（supervisor）角色。",
            Page::Dashboard => "领导驾驶舱供领导和督办人员使用：您的账号没有领导（leader）或督办（supervisor）角色。",
        }
    }

    fn from_key(key: Option<&str>) -> Page {
        Page::ALL.into_iter().find(|p| Some(p.key()) == key).unwrap_or(Page::Workbench)
    }
}

/// A link of the navigation bar.
struct NavItem {
    href: &'static str,
    label: &'static str,
    current: bool,
}

/// The pages `actor` may open.
fn nav(actor: &Actor, current: Page) -> Vec<NavItem> {
    Page::ALL.into_iter().filter(|p| p.allows(actor)).map(|p| NavItem { href: p.path(), label: p.label(), current: p == current }).collect()
}

/// A ticket as the pages show it.
struct Row {
    number: String,
    channel: &'static str,
    urgency: &'static str,
    status: &'static str,
    created: String,
    sign_due: String,
    due: String,
    /// Open and past the reply deadline.
    late: bool,
    department: String,
    co: String,
    location: String,
    /// Name and phone, masked for departments.
    caller: String,
    content: String,
    suggested: String,
    /// CSS class suffix and label.
    supervision: Option<(&'static str, &'static str)>,
    extension: Option<String>,
    return_reason: Option<String>,
    contributions: Vec<String>,
    /// The department's answer, once replied.
    reply: String,
    /// The citizen's rating at the callback.
    rating: &'static str,
    /// Rated unsatisfied: it may be handled again.
    unsatisfied: bool,
}

fn rating_label(r: Rating) -> &'static str {
    match r {
        Rating::Satisfied => "满意",
        Rating::BasicallySatisfied => "基本满意",
        Rating::Unsatisfied => "不满意",
        Rating::Unreachable => "未能联系",
    }
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

fn supervision_label(s: Supervision) -> (&'static str, &'static str) {
    match s {
        Supervision::Ordinary => ("ordinary", "一般督办"),
        Supervision::Yellow => ("yellow", "黄牌督办"),
        Supervision::Red => ("red", "红牌督办"),
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

/// `t` for `viewer`, who sees callers in full only as hotline staff.
fn row(t: &Ticket, viewer: &Actor, now: i64, suggested: String) -> Row {
    let full = viewer.has(Role::Agent) || viewer.has(Role::Supervisor) || viewer.has(Role::Leader);
    let name = t.caller_name.as_deref().map(|n| if full { n.to_owned() } else { mask(n, 1, 0) });
    let phone = t.caller_phone.as_deref().map(|p| if full { p.to_owned() } else { mask_phone(p) });
    let open = matches!(t.status, Status::Dispatched | Status::Accepted | Status::Returned);
    Row {
        number: t.number.clone(),
        channel: channel_label(t.channel),
        urgency: urgency_label(t.urgency),
        status: status_label(t.status),
        created: when(Some(t.created_ms)),
        sign_due: if t.status == Status::Dispatched { when(t.sign_due_ms) } else { String::new() },
        due: if open { when(t.due_ms) } else { String::new() },
        late: open && t.due_ms.is_some_and(|d| d < now),
        department: t.department.clone().unwrap_or_default(),
        co: t.co_departments.join("、"),
        location: t.location.clone().unwrap_or_default(),
        caller: [name, phone].into_iter().flatten().collect::<Vec<_>>().join(" "),
        content: t.content.clone(),
        suggested,
        supervision: t.supervision.map(supervision_label),
        extension: t.extension.as_ref().map(|x| format!("{} 个工作日，{}", x.working_days, x.reason)),
        return_reason: t.return_reason.clone(),
        contributions: t.contributions.iter().map(|c| format!("{}，{}：{}", c.department, when(Some(c.at_ms)), c.text)).collect(),
        reply: t.reply.clone().unwrap_or_default(),
        rating: t.rating.map(rating_label).unwrap_or_default(),
        unsatisfied: t.rating == Some(Rating::Unsatisfied) && !t.direct_answer,
    }
}

/// The rows of `list` for `viewer` (no suggested department).
fn rows(list: &[Ticket], viewer: &Actor, now: i64) -> Vec<Row> {
    list.iter().map(|t| row(t, viewer, now, String::new())).collect()
}

/// The signed-in person as a hotline actor with their display name, or the
/// login page to go to first.
async fn signed_in(id: &Identity, ctx: &RequestContext, return_to: &str) -> Result<(Actor, String), Response> {
    let (_, user) = http::signed_in(id, ctx.session_cookie.as_deref(), return_to).await?;
    Ok((Actor::of(&user), user.name.unwrap_or(user.username)))
}

/// The signed-in person, if `page` is theirs; else the reply to send (the
/// login page, or 403).
async fn staff(id: &Identity, ctx: &RequestContext, page: Page) -> Result<(Actor, String), Response> {
    let (actor, name) = signed_in(id, ctx, page.path()).await?;
    if !page.allows(&actor) {
        return Err(http::error_page(StatusCode::FORBIDDEN, page.refusal()));
    }
    Ok((actor, name))
}

/// What every page shows around its content.
struct Frame {
    user: String,
    nav: Vec<NavItem>,
    csrf: String,
    fresh: bool,
    notice: Option<String>,
    error: Option<String>,
}

impl Frame {
    fn new(ctx: &RequestContext, actor: &Actor, user: String, page: Page, notice: Option<String>, error: Option<String>) -> Frame {
        let (csrf, fresh) = http::csrf_token(ctx);
        Frame { user, nav: nav(actor, page), csrf, fresh, notice, error }
    }

    /// Renders `page` with the CSRF cookie set where it was new.
    fn reply<T: Template>(csrf: &str, fresh: bool, id: &Identity, status: StatusCode, page: &T) -> Response {
        http::with_csrf(http::render(status, page), csrf, fresh, id.settings.secure_cookies())
    }
}

#[derive(Template)]
#[template(path = "workbench.html")]
struct Workbench {
    user: String,
    nav: Vec<NavItem>,
    /// The caller of the call the agent is on, to pre-fill the form.
    caller: Option<String>,
    csrf: String,
    notice: Option<String>,
    error: Option<String>,
    /// The registration form as typed (after a refusal).
    typed: Typed,
    waiting: Vec<Row>,
    /// Answered by the department: the citizen is to be called back.
    to_call_back: Vec<Row>,
    /// Called back: to close, or to hand back when the citizen was not satisfied.
    to_close: Vec<Row>,
    recent: Vec<Row>,
    /// The directory's departments, offered when dispatching.
    departments: Vec<String>,
}

#[derive(Template)]
#[template(path = "department.html")]
struct DepartmentPage {
    user: String,
    nav: Vec<NavItem>,
    csrf: String,
    notice: Option<String>,
    error: Option<String>,
    department: String,
    to_sign: Vec<Row>,
    handling: Vec<Row>,
    helping: Vec<Row>,
    returned: Vec<Row>,
}

#[derive(Template)]
#[template(path = "supervise.html")]
struct SupervisePage {
    user: String,
    nav: Vec<NavItem>,
    csrf: String,
    notice: Option<String>,
    error: Option<String>,
    overdue: Vec<Row>,
    returns: Vec<Row>,
    extensions: Vec<Row>,
    /// The directory's departments, offered when re-dispatching.
    departments: Vec<String>,
}

/// A KPI tile.
struct Tile {
    key: &'static str,
    label: &'static str,
    value: String,
}

/// A row of a breakdown table, its bar `width` percent of the largest.
struct BarRow {
    label: String,
    value: usize,
    width: u32,
    extra: String,
}

/// A volume breakdown (by channel, category, …).
struct Breakdown {
    id: &'static str,
    title: &'static str,
    rows: Vec<BarRow>,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    user: String,
    nav: Vec<NavItem>,
    notice: Option<String>,
    error: Option<String>,
    from: String,
    to: String,
    tiles: Vec<Tile>,
    volume_chart: String,
    rate_chart: String,
    breakdowns: Vec<Breakdown>,
}

/// The department names of the identity directory (the department tree synced
/// from DingTalk and the departments users are in), for the dispatch fields.
async fn departments(id: &Identity) -> Vec<String> {
    match civichub_identity::Directory::new(id.db.clone()).names().await {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!("reading the directory's departments: {e}");
            Vec::new()
        }
    }
}

/// Open tickets of one status, `department`'s (led or co-handled) or all, most urgent first.
async fn open(tickets: &Tickets, status: &str, department: Option<&str>) -> crate::Result<Vec<Ticket>> {
    tickets.list_by(Some(status), department, false, ListOrder::MostUrgent, 1, 200).await
}

/// What the agent typed into the registration form, to show again when it was refused.
#[derive(Default)]
struct Typed {
    channel: String,
    caller_name: String,
    caller_phone: String,
    content: String,
    location: String,
    category: String,
    urgency: String,
}

impl Typed {
    fn from_form(form: &[(String, String)]) -> Typed {
        let f = |name| form_field(form, name).unwrap_or_default();
        Typed {
            channel: f("channel"),
            caller_name: f("caller_name"),
            caller_phone: f("caller_phone"),
            content: f("content"),
            location: f("location"),
            category: f("category"),
            urgency: f("urgency"),
        }
    }
}

async fn workbench(
    tickets: &Tickets,
    id: &Identity,
    ctx: &RequestContext,
    notice: Option<String>,
    error: Option<String>,
    status: StatusCode,
    typed: Typed,
) -> Response {
    let (actor, user) = match signed_in(id, ctx, Page::Workbench.path()).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    if !Page::Workbench.allows(&actor) {
        // Staff with other duties land on their own page.
        return match Page::ALL.into_iter().find(|p| p.allows(&actor)) {
            Some(p) => http::redirect(StatusCode::FOUND, p.path()),
            None => http::error_page(StatusCode::FORBIDDEN, Page::Workbench.refusal()),
        };
    }
    let now = Tickets::now();
    let lists = async {
        Ok::<_, Error>((
            tickets.list_by(Some("registered"), None, false, ListOrder::Oldest, 1, 50).await?,
            tickets.list_by(Some("replied"), None, false, ListOrder::Oldest, 1, 50).await?,
            tickets.list_by(Some("visited"), None, false, ListOrder::Oldest, 1, 50).await?,
            tickets.list_by(None, None, false, ListOrder::Newest, 1, 20).await?,
        ))
    };
    let (waiting, to_call_back, to_close, recent) = match lists.await {
        Ok(l) => l,
        Err(e) => return http::server_error(e),
    };
    let mut waiting_rows = Vec::with_capacity(waiting.len());
    for t in &waiting {
        let suggested = tickets.suggest_departments(t.category.as_deref(), &t.content).await.unwrap_or_default().into_iter().next().unwrap_or_default();
        waiting_rows.push(row(t, &actor, now, suggested));
    }
    let caller = match tickets.current_call(&actor.name).await {
        Ok(call) => call.map(|c| c.caller),
        Err(e) => {
            tracing::warn!("reading the current call of {}: {e}", actor.name);
            None
        }
    };
    let f = Frame::new(ctx, &actor, user, Page::Workbench, notice, error);
    // The directory's departments feed only the dispatch fields of waiting tickets.
    let departments = if waiting_rows.is_empty() { Vec::new() } else { departments(id).await };
    let page = Workbench {
        user: f.user,
        nav: f.nav,
        caller,
        csrf: f.csrf.clone(),
        notice: f.notice,
        error: f.error,
        typed,
        waiting: waiting_rows,
        to_call_back: rows(&to_call_back, &actor, now),
        to_close: rows(&to_close, &actor, now),
        recent: rows(&recent, &actor, now),
        departments,
    };
    Frame::reply(&f.csrf, f.fresh, id, status, &page)
}

async fn department(tickets: &Tickets, id: &Identity, ctx: &RequestContext, notice: Option<String>, error: Option<String>, status: StatusCode) -> Response {
    let (actor, user) = match staff(id, ctx, Page::Department).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let dept = actor.department.clone().unwrap_or_default();
    let now = Tickets::now();
    let mut lists = Vec::new();
    for s in ["dispatched", "accepted", "returned"] {
        match open(tickets, s, Some(&dept)).await {
            Ok(l) => lists.push(l),
            Err(e) => return http::server_error(e),
        }
    }
    let (mut to_sign, mut handling, mut helping, mut returned) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in lists.iter().flatten() {
        let r = row(t, &actor, now, String::new());
        match (t.department.as_deref() == Some(dept.as_str()), t.status) {
            (true, Status::Dispatched) => to_sign.push(r),
            (true, Status::Accepted) => handling.push(r),
            (true, _) => returned.push(r),
            (false, Status::Dispatched | Status::Accepted) => helping.push(r),
            (false, _) => {}
        }
    }
    let f = Frame::new(ctx, &actor, user, Page::Department, notice, error);
    let page = DepartmentPage {
        user: f.user,
        nav: f.nav,
        csrf: f.csrf.clone(),
        notice: f.notice,
        error: f.error,
        department: dept,
        to_sign,
        handling,
        helping,
        returned,
    };
    Frame::reply(&f.csrf, f.fresh, id, status, &page)
}

async fn supervise(tickets: &Tickets, id: &Identity, ctx: &RequestContext, notice: Option<String>, error: Option<String>, status: StatusCode) -> Response {
    let (actor, user) = match staff(id, ctx, Page::Supervise).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let now = Tickets::now();
    let lists = async {
        let overdue = tickets.list_by(None, None, true, ListOrder::MostUrgent, 1, 200).await?;
        let returns = open(tickets, "returned", None).await?;
        let mut extensions = open(tickets, "accepted", None).await?;
        extensions.extend(open(tickets, "dispatched", None).await?);
        extensions.retain(|t| t.extension.is_some());
        Ok::<_, Error>((overdue, returns, extensions))
    };
    let (overdue, returns, extensions) = match lists.await {
        Ok(l) => l,
        Err(e) => return http::server_error(e),
    };
    let f = Frame::new(ctx, &actor, user, Page::Supervise, notice, error);
    // The directory's departments feed only the re-dispatch fields of returns.
    let departments = if returns.is_empty() { Vec::new() } else { departments(id).await };
    let page = SupervisePage {
        user: f.user,
        nav: f.nav,
        csrf: f.csrf.clone(),
        notice: f.notice,
        error: f.error,
        overdue: rows(&overdue, &actor, now),
        returns: rows(&returns, &actor, now),
        extensions: rows(&extensions, &actor, now),
        departments,
    };
    Frame::reply(&f.csrf, f.fresh, id, status, &page)
}

/// A share as a percentage, or a dash when there is nothing to divide.
fn percent(r: Option<f64>) -> String {
    r.map(|r| format!("{:.1}%", r * 100.0)).unwrap_or_else(|| "—".into())
}

fn breakdown(id: &'static str, title: &'static str, rows: Vec<(String, usize, String)>) -> Breakdown {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    Breakdown {
        id,
        title,
        rows: rows
            .into_iter()
            .map(|(label, value, extra)| BarRow { label, value, width: u32::try_from((value * 100 / max).max(usize::from(value > 0))).unwrap_or(100), extra })
            .collect(),
    }
}

fn tiles(s: &Stats) -> Vec<Tile> {
    let tile = |key, label, value| Tile { key, label, value };
    vec![
        tile("total", "受理总量", s.total.to_string()),
        tile("direct_answer_rate", "直接答复率", percent(s.direct_answer_rate)),
        tile("on_time_sign_rate", "按时签收率", percent(s.on_time_sign_rate)),
        tile("on_time_reply_rate", "按时办结率", percent(s.on_time_reply_rate)),
        tile("one_time_resolution_rate", "一次性办结率", percent(s.one_time_resolution_rate)),
        tile("callback_rate", "回访率", percent(s.callback_rate)),
        tile("satisfaction_rate", "满意率", percent(s.satisfaction_rate)),
        tile(
            "average_handling_working_days",
            "平均办理时长（工作日）",
            s.average_handling_working_days.map(|d| format!("{d:.2}")).unwrap_or_else(|| "—".into()),
        ),
        tile("overdue_open", "超期未办结", s.overdue_open.to_string()),
        tile("merged", "重复诉求并单", s.merged.to_string()),
    ]
}

fn breakdowns(s: &Stats) -> Vec<Breakdown> {
    let pairs = |v: &[(String, usize)]| v.iter().map(|(k, n)| (k.clone(), *n, String::new())).collect::<Vec<_>>();
    let mut channels: Vec<(String, usize, String)> = s
        .by_channel
        .iter()
        .map(|(c, n)| (Channel::parse(c).map(channel_label).unwrap_or(c.as_str()).to_owned(), *n, String::new()))
        .collect();
    channels.sort_by_key(|c| std::cmp::Reverse(c.1));
    let departments = s
        .by_department
        .iter()
        .map(|d| {
            let extra = format!("按时签收 {} · 按时办结 {} · 满意 {}", percent(d.on_time_sign_rate), percent(d.on_time_reply_rate), percent(d.satisfaction_rate));
            (d.department.clone(), d.tickets, extra)
        })
        .collect();
    vec![
        breakdown("by-channel", "来源渠道", channels),
        breakdown("by-department", "承办单位", departments),
        breakdown("by-category", "诉求分类", pairs(&s.by_category)),
        breakdown("by-area", "区域", pairs(&s.by_area)),
        breakdown("top-topics", "热点诉求", pairs(&s.top_topics)),
    ]
}

async fn dashboard(tickets: &Tickets, id: &Identity, ctx: &RequestContext, q: StatsQuery) -> Response {
    let (actor, user) = match staff(id, ctx, Page::Dashboard).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let now = Tickets::now();
    // An emptied date box means "not given".
    let blank = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let q = StatsQuery { from: blank(q.from), to: blank(q.to) };
    let (q, error) = match period(&q, now) {
        Ok(_) => (q, None),
        Err(Error::Invalid(m)) => (StatsQuery { from: None, to: None }, Some(format!("时间段无效：{}，已显示最近 30 天。", zh(&m)))),
        Err(e) => return http::server_error(e),
    };
    let Ok((from_ms, to_ms, from, to)) = period(&q, now) else { return http::server_error("the default period") };
    let stats = match tickets.stats(from_ms, to_ms, now).await {
        Ok(s) => s,
        Err(e) => return http::server_error(e),
    };
    let labels: Vec<String> = stats.daily.iter().map(|d| d.date.get(5..).unwrap_or(&d.date).to_owned()).collect();
    let volume_chart = charts::bars("每日受理量", &labels, &stats.daily.iter().map(|d| d.registered).collect::<Vec<_>>());
    let rate_chart = charts::lines(
        "每日指标",
        &labels,
        &[
            ("直接答复率", stats.daily.iter().map(|d| d.direct_answer_rate).collect()),
            ("按时办结率", stats.daily.iter().map(|d| d.on_time_reply_rate).collect()),
            ("满意率", stats.daily.iter().map(|d| d.satisfaction_rate).collect()),
        ],
    );
    let page = DashboardPage {
        user,
        nav: nav(&actor, Page::Dashboard),
        notice: None,
        error,
        from,
        to,
        tiles: tiles(&stats),
        volume_chart,
        rate_chart,
        breakdowns: breakdowns(&stats),
    };
    http::render(StatusCode::OK, &page)
}

/// Renders `page` for the signed-in person, with a notice or an error.
async fn show(page: Page, tickets: &Tickets, id: &Identity, ctx: &RequestContext, notice: Option<String>, error: Option<String>, status: StatusCode) -> Response {
    match page {
        Page::Workbench => workbench(tickets, id, ctx, notice, error, status, Typed::default()).await,
        Page::Department => department(tickets, id, ctx, notice, error, status).await,
        Page::Supervise => supervise(tickets, id, ctx, notice, error, status).await,
        Page::Dashboard => dashboard(tickets, id, ctx, StatsQuery { from: None, to: None }).await,
    }
}

fn form_field(form: &[(String, String)], name: &str) -> Option<String> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// The form of a post after its CSRF check, or the reply to send.
fn posted_form(ctx: &RequestContext, body: &[u8]) -> Result<Vec<(String, String)>, Response> {
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    if !http::csrf_ok(ctx.csrf_cookie.as_deref(), form_field(&form, "csrf").as_deref()) {
        return Err(http::error_page(StatusCode::FORBIDDEN, "表单已过期，请返回上一页重新提交。"));
    }
    Ok(form)
}

async fn register(tickets: &Tickets, id: &Identity, ctx: &RequestContext, body: &[u8]) -> Response {
    let form = match posted_form(ctx, body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let actor = match staff(id, ctx, Page::Workbench).await {
        Ok((a, _)) => a,
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
        Err(Error::Invalid(m)) => {
            workbench(tickets, id, ctx, None, Some(format!("未能登记：{}", zh(&m))), StatusCode::BAD_REQUEST, Typed::from_form(&form)).await
        }
        Err(e) => http::server_error(e),
    }
}

/// An action's JSON body from its form: numbers and flags typed, lists
/// split, empty fields left out, so [`Action::parse`] checks forms and the
/// API alike.
fn action_from_form(name: &str, form: &[(String, String)]) -> crate::Result<Action> {
    let mut body = serde_json::Map::new();
    for (key, value) in form {
        let value = value.trim();
        if matches!(key.as_str(), "csrf" | "back") || value.is_empty() {
            continue;
        }
        let typed = match key.as_str() {
            "working_days" => json!(value.parse::<u32>().map_err(|_| Error::Invalid("延期工作日须为 1–30 的整数".into()))?),
            "approve" => json!(value == "true"),
            "co_departments" => {
                json!(value.split([',', '，', '、', ';', '；']).map(str::trim).filter(|d| !d.is_empty()).collect::<Vec<_>>())
            }
            _ => json!(value),
        };
        body.insert(key.clone(), typed);
    }
    Action::parse(name, &serde_json::to_vec(&Value::Object(body))?)
}

/// What the page says after an action went through.
fn done_notice(action: &str, number: &str, to: Option<&str>) -> String {
    match action {
        "dispatch" => format!("工单 {number} 已派至{}", to.unwrap_or_default()),
        "accept" => format!("已签收工单 {number}"),
        "return" => format!("工单 {number} 已退回热线，待审核"),
        "extend" => format!("已为工单 {number} 申请延期，待审批"),
        "reply" => format!("工单 {number} 已答复"),
        "contribute" => format!("已提交工单 {number} 的协办意见"),
        "supervise" => format!("已督办工单 {number}"),
        "review-return" => format!("已审核工单 {number} 的退单"),
        "review-extension" => format!("已审批工单 {number} 的延期申请"),
        "answer-directly" => format!("工单 {number} 已即办答复并办结"),
        "callback" => format!("已记录工单 {number} 的回访"),
        "close" => format!("工单 {number} 已办结"),
        "reopen" => format!("工单 {number} 已重办，重新派至原承办单位"),
        "merge" => format!("工单 {number} 已并入 {}", to.unwrap_or_default()),
        _ => format!("工单 {number} 已处理"),
    }
}

async fn act(tickets: &Tickets, id: &Identity, ctx: &RequestContext, number: &str, name: &str, body: &[u8]) -> Response {
    let form = match posted_form(ctx, body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let back = Page::from_key(form_field(&form, "back").as_deref());
    let actor = match signed_in(id, ctx, back.path()).await {
        Ok((a, _)) => a,
        Err(r) => return r,
    };
    let result = match action_from_form(name, &form) {
        Ok(action) => tickets.act(number, &action, &actor, Tickets::now()).await,
        Err(e) => Err(e),
    };
    let failed = |status, message: String| show(back, tickets, id, ctx, None, Some(message), status);
    match result {
        Ok((ticket, _)) => {
            let mut query = vec![("done", name.to_owned()), ("n", ticket.number.clone())];
            if let ("dispatch", Some(d)) = (name, &ticket.department) {
                query.push(("to", d.clone()));
            }
            if let ("merge", Some(into)) = (name, &ticket.merged_into) {
                query.push(("to", into.clone()));
            }
            http::redirect(StatusCode::SEE_OTHER, &format!("{}?{}", back.path(), serde_urlencoded::to_string(&query).unwrap_or_default()))
        }
        Err(e) => match refusal(&e) {
            Some((status, message)) => failed(status, message).await,
            None => http::server_error(e),
        },
    }
}

/// The Chinese a page shows for a message of the ticket rules, which speak
/// the API's English: a catalogue keyed on the English text (as gettext keys
/// on it), matched by the phrase that identifies each message; the message
/// itself where none matches.
fn zh(message: &str) -> String {
    const CATALOGUE: &[(&str, &str)] = &[
        ("an extension is already waiting for a decision", "已有一项延期申请待审批"),
        ("an extension must be asked for before the deadline", "延期须在办理时限到期前申请"),
        ("no extension is waiting", "没有待审批的延期申请"),
        ("only a ticket rated unsatisfied is reopened", "只有回访不满意的工单才能重办"),
        ("a ticket is not merged into itself", "工单不能并入自身"),
        ("redispatch to another department, or uphold", "改派须选择另一个承办单位，否则请维持原派"),
        ("the lead department is not also a co-handler", "主办单位不能同时作为协办单位"),
        ("working_days must be 1–30", "延期工作日须为 1–30"),
        ("is no longer open", "要并入的工单已办结或已并单"),
        ("merge: no ticket", "没有要并入的工单"),
        ("is not a ticket number", "工单号格式应为 12345-YYYYMMDD-NNNNNN"),
        ("content must not be empty", "诉求内容不能为空"),
        ("content is", "诉求内容过长"),
        ("is not a phone number", "联系电话格式不正确"),
        ("is not a six-digit GB/T 39666 code", "分类代码应为 6 位数字（GB/T 39666）"),
        ("must not be empty", "必填内容不能为空"),
        ("from is after to", "开始日期晚于结束日期"),
        ("a period is at most a year", "时间段最长一年"),
        ("must be a date, YYYY-MM-DD", "日期格式应为 YYYY-MM-DD（1990–2200 年）"),
        ("is longer than", "填写的内容过长"),
    ];
    CATALOGUE.iter().find(|(en, _)| message.contains(en)).map_or_else(|| message.to_owned(), |(_, zh)| (*zh).to_owned())
}

/// What a page says when an action is refused (none for a server error).
fn refusal(e: &Error) -> Option<(StatusCode, String)> {
    Some(match e {
        Error::Invalid(m) => (StatusCode::BAD_REQUEST, format!("未能办理：{}", zh(m))),
        Error::Conflict(m) => (StatusCode::CONFLICT, format!("未能办理：{}", zh(m))),
        Error::Forbidden(m) => (StatusCode::FORBIDDEN, format!("无权办理：{m}")),
        Error::Refused { label, status, .. } => (StatusCode::CONFLICT, format!("未能办理：工单{}，不能{label}。", status_label(*status))),
        Error::NotPermitted { label, needs, .. } => (StatusCode::FORBIDDEN, format!("无权办理：{label}须由{}办理。", needs.zh())),
        Error::NotFound(n) => (StatusCode::NOT_FOUND, format!("没有工单 {n}")),
        _ => return None,
    })
}

/// The query after a post: what was done.
#[derive(Debug, Default, Deserialize)]
struct Flash {
    registered: Option<String>,
    done: Option<String>,
    n: Option<String>,
    to: Option<String>,
}

impl Flash {
    fn notice(self) -> Option<String> {
        match (self.registered, self.done, self.n) {
            (Some(n), _, _) => Some(format!("已登记工单 {n}")),
            (None, Some(action), Some(n)) => Some(done_notice(&action, &n, self.to.as_deref())),
            _ => None,
        }
    }
}

type Shared = (Arc<Tickets>, Arc<Identity>);

/// The hotline's pages, their forms and their stylesheet.
pub fn routes(tickets: Arc<Tickets>, identity: Arc<Identity>) -> warp::filters::BoxedFilter<(Response,)> {
    let shared: Shared = (tickets, identity);
    let with = move || {
        let shared = shared.clone();
        warp::any().map(move || shared.clone())
    };
    let flash = || warp::query::<Flash>().or(warp::any().map(Flash::default)).unify();
    let page = |path: warp::filters::BoxedFilter<()>, which: Page| {
        path.and(warp::get()).and(http::context()).and(flash()).and(with()).then(move |ctx: RequestContext, flash: Flash, (tickets, id): Shared| async move {
            show(which, &tickets, &id, &ctx, flash.notice(), None, StatusCode::OK).await
        })
    };
    let workbench = page(warp::path!("hotline").boxed(), Page::Workbench);
    let department = page(warp::path!("hotline" / "department").boxed(), Page::Department);
    let supervise = page(warp::path!("hotline" / "supervise").boxed(), Page::Supervise);
    let dashboard = warp::path!("hotline" / "dashboard")
        .and(warp::get())
        .and(http::context())
        .and(warp::query::<StatsQuery>().or(warp::any().map(|| StatsQuery { from: None, to: None })).unify())
        .and(with())
        .then(|ctx: RequestContext, q: StatsQuery, (tickets, id): Shared| async move { dashboard(&tickets, &id, &ctx, q).await });
    let register = warp::path!("hotline" / "tickets")
        .and(warp::post())
        .and(http::context())
        .and(http::form_body())
        .and(with())
        .then(|ctx: RequestContext, body: bytes::Bytes, (tickets, id): Shared| async move { register(&tickets, &id, &ctx, &body).await });
    let act = warp::path!("hotline" / "tickets" / String / String)
        .and(warp::post())
        .and(http::context())
        .and(http::form_body())
        .and(with())
        .then(|number: String, action: String, ctx: RequestContext, body: bytes::Bytes, (tickets, id): Shared| async move {
            act(&tickets, &id, &ctx, &number, &action, &body).await
        });
    let css = warp::path!("hotline" / "assets" / "hotline.css").and(warp::get()).map(|| {
        let mut r = warp::reply::with_header(HOTLINE_CSS, "content-type", "text/css; charset=utf-8").into_response();
        r.headers_mut().insert("cache-control", warp::http::HeaderValue::from_static("public, max-age=3600"));
        r
    });
    workbench
        .or(department)
        .unify()
        .or(supervise)
        .unify()
        .or(dashboard)
        .unify()
        .or(register)
        .unify()
        .or(act)
        .unify()
        .or(css)
        .unify()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Needs;

    #[test]
    fn refusals_read_in_chinese() {
        let refused = Error::Refused { action: "reply", label: "答复", status: Status::Registered };
        assert_eq!(refusal(&refused), Some((StatusCode::CONFLICT, "未能办理：工单待派单，不能答复。".into())));
        assert!(refused.to_string().contains("reply is not possible"), "the API keeps its English");
        let not_permitted = Error::NotPermitted { action: "accept", label: "签收", needs: Needs::LeadHandler };
        assert_eq!(refusal(&not_permitted), Some((StatusCode::FORBIDDEN, "无权办理：签收须由主办单位的承办人办理。".into())));
        assert!(refusal(&Error::Calendar("x".into())).is_none(), "a server error is not a refusal");
    }

    #[test]
    fn the_rules_messages_read_in_chinese_on_the_pages() {
        assert_eq!(zh("extend: an extension must be asked for before the deadline"), "延期须在办理时限到期前申请");
        assert_eq!(zh("caller_phone \"12\" is not a phone number"), "联系电话格式不正确");
        assert_eq!(zh("merge: ticket 12345-20261129-000001 is no longer open"), "要并入的工单已办结或已并单");
        assert_eq!(zh("something new"), "something new", "unknown messages are shown as they are");
    }
}
