//! The hotline's HTTP API. Every call needs a bearer token with scope
//! `hotline`; a person's roles (agent, handler, supervisor, leader, admin)
//! and department decide what they may see and do. A system's token
//! (client credentials, no person) may register tickets and read them.
//!
//! - `POST /api/hotline/tickets` → `201 {"number", "status", "suggested_departments"}`
//! - `GET /api/hotline/tickets?status=&department=&overdue=&page=`
//! - `GET /api/hotline/tickets/{number}` → the ticket with its audit trail
//! - `POST /api/hotline/tickets/{number}/{action}` → the ticket after the action
//! - `GET /api/openapi.json`: this API in OpenAPI 3.1
//! - `GET /api/hotline/stats?from=&to=` (leaders, supervisors) → the KPIs of the period
//! - `POST /api/public/hotline/tickets` (no login: the citizens' web form) → `201 {"number", "status"}`
//! - `GET /api/public/hotline/tickets/{number}?phone_last4=` (no login) → status and progress

use std::sync::Arc;

use civichub_identity::Identity;
use civichub_identity::reply::{bearer_failure, error, internal, json};
use serde::Deserialize;
use serde_json::{Value, json};
use warp::{Filter, Reply};
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::ticket::{Action, Actor, Role, Ticket};
use crate::{Error, NewTicket, Tickets, mask};

/// The scope every hotline call needs.
pub const SCOPE: &str = "hotline";

/// Largest request body.
const MAX_BODY: u64 = 64 * 1024;

/// The OpenAPI 3.1 description of this API, served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Tickets per page of a list.
const PAGE_SIZE: i64 = 20;

fn from_error(e: Error) -> Response {
    match e {
        Error::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid_request", &m),
        Error::Conflict(m) => error(StatusCode::CONFLICT, "conflict", &m),
        Error::Forbidden(m) => error(StatusCode::FORBIDDEN, "forbidden", &m),
        e @ Error::Refused { .. } => error(StatusCode::CONFLICT, "conflict", &e.to_string()),
        e @ Error::NotPermitted { .. } => error(StatusCode::FORBIDDEN, "forbidden", &e.to_string()),
        Error::NotFound(n) => error(StatusCode::NOT_FOUND, "not_found", &format!("no ticket {n}")),
        other => internal("hotline", other),
    }
}

/// Who calls: a person with roles, or a system.
enum Caller {
    Person(Actor),
    System(String),
}

impl Caller {
    fn name(&self) -> &str {
        match self {
            Caller::Person(a) => &a.name,
            Caller::System(n) => n,
        }
    }

    fn may_see(&self, t: &Ticket) -> bool {
        match self {
            Caller::Person(a) => a.may_see(t),
            Caller::System(_) => true,
        }
    }

    /// Hotline staff see callers in full; departments see them masked.
    fn sees_callers(&self) -> bool {
        match self {
            Caller::Person(a) => a.has(Role::Agent) || a.has(Role::Supervisor) || a.has(Role::Leader),
            Caller::System(_) => true,
        }
    }
}

async fn caller(identity: &Identity, auth: Option<String>) -> Result<Caller, Response> {
    let principal = civichub_identity::reply::authorize(identity, auth, SCOPE).await?;
    let Some(user_id) = principal.user_id else {
        return Ok(Caller::System(format!("client:{}", principal.client_id)));
    };
    let user = match civichub_identity::Users::new(identity.db.clone()).get(&user_id).await {
        Ok(u) => u,
        Err(e) => return Err(internal("loading the user", e)),
    };
    if user.disabled {
        return Err(bearer_failure(civichub_identity::BearerError::InvalidToken));
    }
    Ok(Caller::Person(Actor::of(&user)))
}

fn view(t: &Ticket, caller: &Caller) -> Value {
    let mut v = json!(t);
    if !caller.sees_callers() {
        v["caller_phone"] = json!(t.caller_phone.as_deref().map(|p| mask(p, 3, 4)));
        v["caller_name"] = json!(t.caller_name.as_deref().map(|n| mask(n, 1, 0)));
    }
    v
}

type Shared = (Arc<Tickets>, Arc<Identity>);

fn with(shared: Shared) -> impl Filter<Extract = (Shared,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || shared.clone())
}

/// Query of the ticket list.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    status: Option<String>,
    department: Option<String>,
    overdue: Option<bool>,
    page: Option<i64>,
}

/// Query of the statistics: days in Beijing time, `to` included.
#[derive(Debug, Deserialize)]
pub(crate) struct StatsQuery {
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
}

/// `[from 00:00, to + 1 day 00:00)` in Beijing time as Unix ms; the last 30 days by default.
pub(crate) fn period(q: &StatsQuery, now: i64) -> Result<(i64, i64, String, String), Error> {
    use chrono::{DateTime, Duration, NaiveDate, TimeZone};
    let tz = crate::china();
    let today = DateTime::from_timestamp_millis(now).map(|t| t.with_timezone(&tz).date_naive()).unwrap_or_default();
    let day = |v: &Option<String>, default: NaiveDate, name: &str| match v {
        None => Ok(default),
        Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .filter(|d| (1990..=2200).contains(&chrono::Datelike::year(d)))
            .ok_or_else(|| Error::Invalid(format!("{name} must be a date, YYYY-MM-DD, between 1990 and 2200"))),
    };
    let to = day(&q.to, today, "to")?;
    let from = day(&q.from, to - Duration::days(29), "from")?;
    if from > to {
        return Err(Error::Invalid("from is after to".into()));
    }
    if (to - from).num_days() > 366 {
        return Err(Error::Invalid("a period is at most a year".into()));
    }
    let start = |d: NaiveDate| tz.from_local_datetime(&d.and_time(chrono::NaiveTime::MIN)).single().map(|t| t.timestamp_millis()).unwrap_or(0);
    Ok((start(from), start(to + Duration::days(1)), from.to_string(), to.to_string()))
}

/// What a citizen sends through the public form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublicTicket {
    content: String,
    caller_phone: String,
    #[serde(default)]
    caller_name: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    category: Option<String>,
}

/// Query of the public status lookup.
#[derive(Debug, Deserialize)]
struct Lookup {
    phone_last4: Option<String>,
}

/// The citizens' endpoints, no login: the web form and the status lookup,
/// `per_minute` requests a minute per address.
fn public_routes(tickets: Arc<Tickets>, per_minute: u32) -> BoxedFilter<(Response,)> {
    let limiter = civichub_identity::rate_limit(Arc::new(civichub_identity::RateLimiter::new(per_minute)));
    let with_tickets = warp::any().map(move || tickets.clone());
    let submit = warp::path!("api" / "public" / "hotline" / "tickets")
        .and(warp::post())
        .and(limiter.clone())
        .and(civichub_identity::limited_body(MAX_BODY))
        .and(with_tickets.clone())
        .then(|limited: Option<Response>, body: bytes::Bytes, tickets: Arc<Tickets>| async move {
            if let Some(reply) = limited {
                return reply;
            }
            let form: PublicTicket = match serde_json::from_slice(&body) {
                Ok(f) => f,
                Err(e) => return from_error(Error::Invalid(format!("ticket: {e}"))),
            };
            // The lookup and the SMS answers need a mobile number.
            let phone = match civichub_messaging::messages::Phone::parse(&form.caller_phone) {
                Ok(p) => p.as_str().to_owned(),
                Err(e) => return from_error(Error::Invalid(format!("caller_phone: {e}"))),
            };
            let new = NewTicket {
                channel: crate::Channel::Web,
                caller_name: form.caller_name,
                caller_phone: Some(phone),
                content: form.content,
                location: form.location,
                category: form.category,
                urgency: None,
            };
            match tickets.register(new, "public", Tickets::now()).await {
                Ok(t) => json(StatusCode::CREATED, &json!({ "number": t.number, "status": t.status })),
                Err(e) => from_error(e),
            }
        });
    let lookup = warp::path!("api" / "public" / "hotline" / "tickets" / String)
        .and(warp::get())
        .and(limiter)
        .and(warp::query::<Lookup>())
        .and(with_tickets)
        .then(|number: String, limited: Option<Response>, q: Lookup, tickets: Arc<Tickets>| async move {
            if let Some(reply) = limited {
                return reply;
            }
            let Some(last4) = q.phone_last4 else {
                return from_error(Error::Invalid("phone_last4 is required".into()));
            };
            match tickets.lookup(&number, &last4).await {
                Ok(v) => json(StatusCode::OK, &v),
                Err(e) => from_error(e),
            }
        });
    submit.or(lookup).unify().boxed()
}

/// The hotline routes; the public ones allow `public_per_minute` requests a minute per address.
pub fn routes(tickets: Arc<Tickets>, identity: Arc<Identity>, public_per_minute: u32) -> BoxedFilter<(Response,)> {
    let public = public_routes(tickets.clone(), public_per_minute);
    let shared = (tickets, identity);
    let register = warp::path!("api" / "hotline" / "tickets")
        .and(warp::post())
        .and(warp::header::optional::<String>("authorization"))
        .and(civichub_identity::limited_body(MAX_BODY))
        .and(with(shared.clone()))
        .then(|auth: Option<String>, body: bytes::Bytes, (tickets, id): Shared| async move {
            let caller = match caller(&id, auth).await {
                Ok(c) => c,
                Err(reply) => return reply,
            };
            if let Caller::Person(a) = &caller
                && !a.has(Role::Agent)
            {
                return from_error(Error::Forbidden("only a hotline agent registers tickets".into()));
            }
            let new = match NewTicket::parse(&body) {
                Ok(n) => n,
                Err(e) => return from_error(e),
            };
            let ticket = match tickets.register(new, caller.name(), Tickets::now()).await {
                Ok(t) => t,
                Err(e) => return from_error(e),
            };
            let suggested = tickets.suggest_departments(ticket.category.as_deref(), &ticket.content).await.unwrap_or_default();
            json(StatusCode::CREATED, &json!({ "number": ticket.number, "status": ticket.status, "suggested_departments": suggested }))
        });
    let list = warp::path!("api" / "hotline" / "tickets")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::query::<ListQuery>())
        .and(with(shared.clone()))
        .then(|auth: Option<String>, q: ListQuery, (tickets, id): Shared| async move {
            let caller = match caller(&id, auth).await {
                Ok(c) => c,
                Err(reply) => return reply,
            };
            let mut department = q.department;
            if let Caller::Person(a) = &caller
                && !caller.sees_callers()
            {
                // A department sees its own tickets only.
                match (&a.department, a.has(Role::Handler)) {
                    (Some(own), true) => department = Some(own.clone()),
                    _ => return from_error(Error::Forbidden("no hotline role".into())),
                }
            }
            let page = q.page.unwrap_or(1).max(1);
            match tickets.list(q.status.as_deref(), department.as_deref(), q.overdue.unwrap_or(false), page, PAGE_SIZE).await {
                Ok((items, total)) => json(
                    StatusCode::OK,
                    &json!({ "items": items.iter().map(|t| view(t, &caller)).collect::<Vec<_>>(), "page": page, "page_size": PAGE_SIZE, "total": total }),
                ),
                Err(e) => from_error(e),
            }
        });
    let get = warp::path!("api" / "hotline" / "tickets" / String)
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(with(shared.clone()))
        .then(|number: String, auth: Option<String>, (tickets, id): Shared| async move {
            let caller = match caller(&id, auth).await {
                Ok(c) => c,
                Err(reply) => return reply,
            };
            let ticket = match tickets.get(&number).await {
                Ok(t) if caller.may_see(&t) => t,
                Ok(_) => return from_error(Error::NotFound(number)),
                Err(e) => return from_error(e),
            };
            let events = match tickets.events(&ticket.number).await {
                Ok(e) => e,
                Err(e) => return from_error(e),
            };
            let mut v = view(&ticket, &caller);
            v["events"] = json!(events);
            json(StatusCode::OK, &v)
        });
    let stats = warp::path!("api" / "hotline" / "stats")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::query::<StatsQuery>())
        .and(with(shared.clone()))
        .then(|auth: Option<String>, q: StatsQuery, (tickets, id): Shared| async move {
            match caller(&id, auth).await {
                Ok(Caller::Person(a)) if a.has(Role::Leader) || a.has(Role::Supervisor) => {}
                Ok(_) => return from_error(Error::Forbidden("the statistics are for leaders and supervisors".into())),
                Err(reply) => return reply,
            }
            let now = Tickets::now();
            let (from_ms, to_ms, from, to) = match period(&q, now) {
                Ok(p) => p,
                Err(e) => return from_error(e),
            };
            match tickets.stats(from_ms, to_ms, now).await {
                Ok(s) => {
                    let mut v = json!(s);
                    v["from"] = json!(from);
                    v["to"] = json!(to);
                    json(StatusCode::OK, &v)
                }
                Err(e) => from_error(e),
            }
        });
    let act = warp::path!("api" / "hotline" / "tickets" / String / String)
        .and(warp::post())
        .and(warp::header::optional::<String>("authorization"))
        .and(civichub_identity::limited_body(MAX_BODY))
        .and(with(shared))
        .then(|number: String, action: String, auth: Option<String>, body: bytes::Bytes, (tickets, id): Shared| async move {
            let actor = match caller(&id, auth).await {
                Ok(Caller::Person(a)) => a,
                Ok(Caller::System(_)) => return from_error(Error::Forbidden("actions on tickets are taken by people".into())),
                Err(reply) => return reply,
            };
            let action = match Action::parse(&action, &body) {
                Ok(a) => a,
                Err(e) => return from_error(e),
            };
            match tickets.act(&number, &action, &actor, Tickets::now()).await {
                Ok((ticket, change)) => {
                    let mut v = view(&ticket, &Caller::Person(actor));
                    v["event"] = json!(change.event);
                    json(StatusCode::OK, &v)
                }
                Err(e) => from_error(e),
            }
        });
    let openapi = warp::path!("api" / "openapi.json").and(warp::get()).map(|| {
        let mut r = warp::reply::with_header(OPENAPI, "content-type", "application/json").into_response();
        r.headers_mut().insert("access-control-allow-origin", warp::http::HeaderValue::from_static("*"));
        r
    });
    register.or(openapi).unify().or(list).unify().or(get).unify().or(act).unify().or(stats).unify().or(public).unify().boxed()
}

#[cfg(test)]
mod tests {
    use crate::mask;

    #[test]
    fn callers_are_masked() {
        assert_eq!(mask("13812345678", 3, 4), "138****5678");
        assert_eq!(mask("王小明", 1, 0), "王**");
        assert_eq!(mask("王", 1, 0), "王*");
    }
}
