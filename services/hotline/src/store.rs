//! Tickets in the database: each registration and each action is one
//! transaction holding the ticket, its audit record and its event
//! (`civichub.hotline.ticket.<event>`, through the messaging outbox).

use chrono::DateTime;
use civichub_messaging::{Bus, Envelope, now_ms, outbox, subjects};
use civichub_store::{Backend, Db, Row, Tx};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::calendar::{Calendar, china};
use crate::secret::DataKey;
use crate::number::TicketNumber;
use crate::ticket::{Action, Actor, Change, Channel, Rules, Status, Ticket, TimeLimits, Urgency};
use crate::{Error, Result};

/// What registering a ticket takes (`POST /api/hotline/tickets`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTicket {
    /// Where it came from.
    pub channel: Channel,
    /// The caller's name.
    #[serde(default)]
    pub caller_name: Option<String>,
    /// The caller's phone.
    #[serde(default)]
    pub caller_phone: Option<String>,
    /// What the citizen asks.
    pub content: String,
    /// Where.
    #[serde(default)]
    pub location: Option<String>,
    /// GB/T 39666 category code (six digits).
    #[serde(default)]
    pub category: Option<String>,
    /// How fast (default normal).
    #[serde(default)]
    pub urgency: Option<Urgency>,
}

/// A reply due within this long raises a `due_soon` alert (four hours).
pub const DUE_SOON_MS: i64 = 4 * 3_600_000;

/// Longest ticket content.
const MAX_CONTENT: usize = 5_000;

impl NewTicket {
    /// Reads and checks a registration from JSON.
    pub fn parse(body: &[u8]) -> Result<NewTicket> {
        let t: NewTicket = serde_json::from_slice(body).map_err(|e| Error::Invalid(format!("ticket: {e}")))?;
        t.check()?;
        Ok(t)
    }

    fn check(&self) -> Result<()> {
        let n = self.content.trim().chars().count();
        if n == 0 {
            return Err(Error::Invalid("content must not be empty".into()));
        }
        if n > MAX_CONTENT {
            return Err(Error::Invalid(format!("content is {n} characters; at most {MAX_CONTENT}")));
        }
        if let Some(phone) = &self.caller_phone {
            let digits = phone.strip_prefix('+').unwrap_or(phone);
            if !(3..=20).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
                return Err(Error::Invalid(format!("caller_phone {phone:?} is not a phone number")));
            }
        }
        if let Some(c) = &self.category
            && (c.len() != 6 || !c.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(Error::Invalid(format!("category {c:?} is not a six-digit GB/T 39666 code")));
        }
        for (field, v) in [("caller_name", &self.caller_name), ("location", &self.location)] {
            if v.as_ref().is_some_and(|v| v.chars().count() > 200) {
                return Err(Error::Invalid(format!("{field} is longer than 200 characters")));
            }
        }
        Ok(())
    }
}

/// One audit record of a ticket.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TicketEvent {
    /// What happened (`created`, `dispatched`, …).
    pub event: String,
    /// The action taken (`register`, `dispatch`, …).
    pub action: String,
    /// Who.
    pub actor: String,
    /// Status before (none for the registration).
    pub from_status: Option<String>,
    /// Status after.
    pub to_status: String,
    /// Details.
    pub detail: serde_json::Value,
    /// When (Unix ms).
    pub at_ms: i64,
}

/// The order of a ticket list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListOrder {
    /// Newest first (the API's lists, the recent tickets).
    Newest,
    /// Longest waiting first.
    Oldest,
    /// Earliest completion deadline first; those without one last.
    MostUrgent,
}

impl ListOrder {
    fn sql(self) -> &'static str {
        match self {
            ListOrder::Newest => "created_ms DESC, number DESC",
            ListOrder::Oldest => "created_ms, number",
            ListOrder::MostUrgent => "due_ms IS NULL, due_ms, created_ms, number",
        }
    }
}

/// The hotline's tickets.
#[derive(Clone, Debug)]
pub struct Tickets {
    db: Db,
    bus: Bus,
    key: std::sync::Arc<DataKey>,
    calendar: Calendar,
    limits: TimeLimits,
    catalogue: Option<std::sync::Arc<civichub_kb::KnowledgeBase>>,
}

/// Knowledge-base hits read for a new ticket's suggested departments.
const CATALOGUE_HITS: usize = 5;
/// Departments suggested at most.
const SUGGESTIONS: usize = 3;

impl Tickets {
    /// Tickets in the database of `bus` (which announces their events), with
    /// deadlines on `calendar` under `limits`.
    /// Callers' names and phones are sealed with `key`.
    pub fn new(bus: Bus, key: DataKey, calendar: Calendar, limits: TimeLimits) -> Tickets {
        Tickets { db: bus.db().clone(), bus, key: std::sync::Arc::new(key), calendar, limits, catalogue: None }
    }

    /// Suggests departments from the knowledge base's entries too: the
    /// dispatch catalogue (派单目录) is kept there, each entry naming the
    /// department (承办单位) responsible for its matter.
    pub fn with_catalogue(mut self, kb: std::sync::Arc<civichub_kb::KnowledgeBase>) -> Tickets {
        self.catalogue = Some(kb);
        self
    }

    /// The ticket stored in a row's `doc`, callers' data opened.
    fn decode(&self, row: &sqlx::any::AnyRow) -> Result<Ticket> {
        let mut t: Ticket = serde_json::from_str(&row.try_get::<String, _>("doc")?)?;
        for field in [&mut t.caller_name, &mut t.caller_phone] {
            if let Some(sealed) = field.take() {
                *field = Some(self.key.open(&sealed)?);
            }
        }
        Ok(t)
    }

    /// The ticket as `doc` JSON, callers' data sealed.
    fn encode(&self, t: &Ticket) -> Result<String> {
        let mut sealed = t.clone();
        for field in [&mut sealed.caller_name, &mut sealed.caller_phone] {
            if let Some(plain) = field.take() {
                *field = Some(self.key.seal(&plain)?);
            }
        }
        Ok(serde_json::to_string(&sealed)?)
    }

    /// Seals a caller's datum with the hotline data key.
    pub(crate) fn seal(&self, plain: &str) -> Result<String> {
        self.key.seal(plain)
    }

    /// Opens a sealed datum.
    pub(crate) fn open(&self, sealed: &str) -> Result<String> {
        self.key.open(sealed)
    }

    /// What a phone number is found by in the `caller_phone` column.
    pub fn phone_index(&self, phone: &str) -> String {
        self.key.index(phone)
    }

    /// The working-day calendar.
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Registers a ticket by `actor` at `now` (Unix ms).
    pub async fn register(&self, new: NewTicket, actor: &str, now: i64) -> Result<Ticket> {
        self.register_from(new, actor, now, None).await
    }

    /// Registers a ticket made from the message `source` (an envelope id):
    /// the same source registers once, and again answers with that ticket.
    pub async fn register_from(&self, new: NewTicket, actor: &str, now: i64, source: Option<&str>) -> Result<Ticket> {
        new.check()?;
        if let Some(source) = source
            && let Some(row) = sqlx::query("SELECT doc FROM hotline_tickets WHERE source_id = $1").bind(source).fetch_optional(self.db.pool()).await?
        {
            return self.decode(&row);
        }
        let day = DateTime::from_timestamp_millis(now).ok_or_else(|| Error::Invalid("time out of range".into()))?.with_timezone(&china()).date_naive();
        let mut tx = self.db.begin().await?;
        let seq: i64 = sqlx::query(
            "INSERT INTO hotline_counters (day, last) VALUES ($1, 1) ON CONFLICT (day) DO UPDATE SET last = hotline_counters.last + 1 RETURNING last",
        )
        .bind(TicketNumber::day_key(day))
        .fetch_one(&mut *tx)
        .await?
        .try_get("last")?;
        let number = TicketNumber::new(day, u32::try_from(seq).unwrap_or(u32::MAX))?.to_string();
        let ticket = Ticket {
            caller_name: new.caller_name.filter(|s| !s.trim().is_empty()),
            // One spelling per mobile number, so its keyed hash finds all of the caller's tickets.
            caller_phone: new.caller_phone.filter(|s| !s.trim().is_empty()).map(|p| {
                civichub_messaging::messages::Phone::parse(&p).map(|m| m.as_str().to_owned()).unwrap_or(p)
            }),
            location: new.location.filter(|s| !s.trim().is_empty()),
            category: new.category,
            urgency: new.urgency.unwrap_or(Urgency::Normal),
            ..Ticket::registered(number, new.channel, new.content.trim().to_owned(), now)
        };
        let doc = self.encode(&ticket)?;
        sqlx::query(
            "INSERT INTO hotline_tickets (number, doc, status, channel, category, urgency, department, caller_phone, sign_due_ms, due_ms, \
             created_ms, updated_ms, closed_ms, source_id) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, NULL, NULL, $8, $8, NULL, $9)",
        )
        .bind(&ticket.number)
        .bind(doc)
        .bind(ticket.status.as_str())
        .bind(ticket.channel.as_str())
        .bind(&ticket.category)
        .bind(ticket.urgency.as_str())
        .bind(ticket.caller_phone.as_deref().map(|p| self.key.index(p)))
        .bind(now)
        .bind(source)
        .execute(&mut *tx)
        .await?;
        let change = Change {
            event: "created",
            from: Status::Registered,
            to: Status::Registered,
            detail: json!({ "channel": ticket.channel, "category": ticket.category, "urgency": ticket.urgency }),
        };
        record(&mut tx, &ticket, "register", None, &change, actor, now)?;
        tx.commit().await?;
        self.bus.kick();
        Ok(ticket)
    }

    /// The ticket numbered `number`.
    pub async fn get(&self, number: &str) -> Result<Ticket> {
        let number: TicketNumber = number.parse()?;
        let row = sqlx::query("SELECT doc FROM hotline_tickets WHERE number = $1")
            .bind(number.to_string())
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| Error::NotFound(number.to_string()))?;
        self.decode(&row)
    }

    /// The audit trail of a ticket, oldest first.
    pub async fn events(&self, number: &str) -> Result<Vec<TicketEvent>> {
        let rows = sqlx::query(
            "SELECT event, action, actor, from_status, to_status, detail, at_ms FROM hotline_ticket_events WHERE number = $1 ORDER BY at_ms, id",
        )
        .bind(number)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TicketEvent {
                    event: r.try_get("event")?,
                    action: r.try_get("action")?,
                    actor: r.try_get("actor")?,
                    from_status: r.try_get("from_status")?,
                    to_status: r.try_get("to_status")?,
                    detail: serde_json::from_str(&r.try_get::<String, _>("detail")?)?,
                    at_ms: r.try_get("at_ms")?,
                })
            })
            .collect()
    }

    /// Takes `action` on ticket `number` as `actor` at `now` (Unix ms): the
    /// actor's rights and the lifecycle are checked, then the ticket, its
    /// audit record and its event are written together.
    pub async fn act(&self, number: &str, action: &Action, actor: &Actor, now: i64) -> Result<(Ticket, Change)> {
        let number: TicketNumber = number.parse()?;
        let mut tx = self.db.begin().await?;
        let postgres = self.db.backend() == Backend::Postgres;
        if let (true, Action::Merge { into }) = (postgres, action) {
            // Both tickets are locked, in one order whichever way the merge
            // goes: two crossed merges (A into B, B into A) at once would
            // otherwise each see the other open, and both tickets would end
            // merged, neither left to handle. (On SQLite writers take turns.)
            let target = into.parse::<TicketNumber>()?.to_string();
            sqlx::query("SELECT number FROM hotline_tickets WHERE number IN ($1, $2) ORDER BY number FOR UPDATE")
                .bind(number.to_string())
                .bind(target)
                .fetch_all(&mut *tx)
                .await?;
        }
        let lock = self.db.backend().locking(" FOR UPDATE");
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT doc, alerts FROM hotline_tickets WHERE number = $1{lock}")))
            .bind(number.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::NotFound(number.to_string()))?;
        let mut ticket = self.decode(&row)?;
        let alerts: String = row.try_get("alerts")?;
        if !actor.may_see(&ticket) {
            return Err(Error::NotFound(number.to_string()));
        }
        ticket.authorize(action, actor)?;
        // A contribution is the co-handling department's own: the actor's.
        // A merge names its target as it is written canonically, so that the
        // ticket itself is recognised whatever the spelling.
        let rewritten;
        let action = match action {
            Action::Contribute { text, .. } => {
                rewritten = Action::Contribute { text: text.clone(), department: actor.department.clone().unwrap_or_default() };
                &rewritten
            }
            Action::Merge { into } => {
                // The target must be a ticket still open.
                let target = into.parse::<TicketNumber>()?.to_string();
                let status: Option<String> = sqlx::query("SELECT status FROM hotline_tickets WHERE number = $1")
                    .bind(&target)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get("status"))
                    .transpose()?;
                match status.as_deref().and_then(Status::parse) {
                    None => return Err(Error::Invalid(format!("merge: no ticket {target}"))),
                    Some(Status::Closed | Status::Merged) => {
                        return Err(Error::Conflict(format!("merge: ticket {target} is no longer open")));
                    }
                    Some(_) => {}
                }
                rewritten = Action::Merge { into: target };
                &rewritten
            }
            other => other,
        };
        let change = ticket.apply(action, now, Rules { calendar: &self.calendar, limits: &self.limits })?;
        sqlx::query(
            "UPDATE hotline_tickets SET doc = $2, status = $3, department = $4, sign_due_ms = $5, due_ms = $6, updated_ms = $7, closed_ms = $8, \
             next_alert_ms = $9 \
             WHERE number = $1",
        )
        .bind(&ticket.number)
        .bind(self.encode(&ticket)?)
        .bind(ticket.status.as_str())
        .bind(&ticket.department)
        .bind(ticket.sign_due_ms)
        .bind(ticket.due_ms)
        .bind(now)
        .bind(ticket.closed_ms)
        .bind(next_alert(&ticket, &alerts))
        .execute(&mut *tx)
        .await?;
        if matches!(change.event, "dispatched" | "redispatched") {
            sqlx::query("DELETE FROM hotline_co_departments WHERE number = $1").bind(&ticket.number).execute(&mut *tx).await?;
            for d in &ticket.co_departments {
                sqlx::query("INSERT INTO hotline_co_departments (number, department) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(&ticket.number)
                    .bind(d)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if let (Some(category), Some(department), "dispatched" | "redispatched") = (&ticket.category, &ticket.department, change.event) {
            sqlx::query(
                "INSERT INTO hotline_dispatch_counts (category, department, n) VALUES ($1, $2, 1) \
                 ON CONFLICT (category, department) DO UPDATE SET n = hotline_dispatch_counts.n + 1",
            )
            .bind(category)
            .bind(department)
            .execute(&mut *tx)
            .await?;
        }
        record(&mut tx, &ticket, action.name(), Some(change.from), &change, &actor.name, now)?;
        tx.commit().await?;
        self.bus.kick();
        Ok((ticket, change))
    }

    /// Tickets, newest first, with the number of all that match:
    /// `overdue` keeps those past their reply deadline and not yet replied.
    pub async fn list(&self, status: Option<&str>, department: Option<&str>, overdue: bool, page: i64, page_size: i64) -> Result<(Vec<Ticket>, i64)> {
        let (filter, binds) = list_filter(status, department, overdue)?;
        let total: i64 = bind_all(format!("SELECT COUNT(*) AS n FROM hotline_tickets WHERE {filter}"), &binds)
            .fetch_one(self.db.pool())
            .await?
            .try_get("n")?;
        Ok((self.page(&filter, &binds, ListOrder::Newest, page, page_size).await?, total))
    }

    /// A page of [`Tickets::list`] in `order`, without the count: a work list
    /// takes the tickets that need doing first, not the newest, when there
    /// are more than a page.
    pub async fn list_by(
        &self,
        status: Option<&str>,
        department: Option<&str>,
        overdue: bool,
        order: ListOrder,
        page: i64,
        page_size: i64,
    ) -> Result<Vec<Ticket>> {
        let (filter, binds) = list_filter(status, department, overdue)?;
        self.page(&filter, &binds, order, page, page_size).await
    }

    async fn page(&self, filter: &str, binds: &[civichub_store::Value], order: ListOrder, page: i64, page_size: i64) -> Result<Vec<Ticket>> {
        let rows = bind_all(
            format!(
                "SELECT doc FROM hotline_tickets WHERE {filter} ORDER BY {} LIMIT {} OFFSET {}",
                order.sql(),
                page_size.clamp(1, 200),
                (page.clamp(1, 1_000_000) - 1) * page_size.clamp(1, 200)
            ),
            binds,
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(|r| self.decode(r)).collect()
    }

    /// At most three departments for a new ticket: those the dispatch
    /// catalogue names for the knowledge-base entries that best match
    /// `content`, interleaved with those that past tickets of `category`
    /// went to (most often first), so the best of each leads.
    pub async fn suggest_departments(&self, category: Option<&str>, content: &str) -> Result<Vec<String>> {
        let mut catalogue: Vec<String> = Vec::new();
        if let Some(kb) = &self.catalogue {
            let q: String = content.chars().take(200).collect();
            let req = civichub_kb::SearchRequest { q, category: None, department: None, page: 1, size: CATALOGUE_HITS };
            match kb.index.search(&req, civichub_kb::Visibility::Internal, Self::now()) {
                Ok(found) => {
                    catalogue.extend(found.hits.into_iter().filter_map(|h| h.department));
                }
                Err(e) => tracing::warn!("searching the dispatch catalogue: {e}"),
            }
        }
        let mut history: Vec<String> = Vec::new();
        if let Some(category) = category {
            let rows = sqlx::query("SELECT department FROM hotline_dispatch_counts WHERE category = $1 ORDER BY n DESC, department LIMIT 3")
                .bind(category)
                .fetch_all(self.db.pool())
                .await?;
            history = rows.iter().map(|r| r.try_get("department")).collect::<std::result::Result<_, _>>()?;
        }
        let mut out: Vec<String> = Vec::new();
        let (mut c, mut h) = (catalogue.into_iter(), history.into_iter());
        loop {
            let (a, b) = (c.next(), h.next());
            if a.is_none() && b.is_none() {
                break;
            }
            for d in [a, b].into_iter().flatten() {
                if !out.contains(&d) {
                    out.push(d);
                }
            }
        }
        out.truncate(SUGGESTIONS);
        Ok(out)
    }

    /// Raises the deadline alerts that are due at `now`: `sign_overdue` (not
    /// signed in time), `due_soon` (the reply is due within
    /// [`DUE_SOON_MS`]) and `overdue`, each once per deadline, as ticket
    /// events (with an audit record) that the notices turn into reminders
    /// for the handlers and supervision notices. Safe on several nodes at
    /// once: an alert is claimed by a compare-and-set on the ticket's alerts.
    pub async fn sweep_deadlines(&self, now: i64) -> Result<usize> {
        // `next_alert_ms` is when the ticket's next alert falls due, so a sweep
        // reads only tickets with something to raise, however many are late.
        let rows = sqlx::query(
            "SELECT doc, alerts, sign_due_ms, due_ms, updated_ms FROM hotline_tickets WHERE next_alert_ms <= $1 ORDER BY next_alert_ms LIMIT 500",
        )
        .bind(now)
        .fetch_all(self.db.pool())
        .await?;
        let mut raised = 0;
        for row in rows {
            let mut ticket = self.decode(&row)?;
            // The columns are what deadlines are queried by.
            ticket.sign_due_ms = row.try_get("sign_due_ms")?;
            ticket.due_ms = row.try_get("due_ms")?;
            let old: String = row.try_get("alerts")?;
            let updated_ms: i64 = row.try_get("updated_ms")?;
            let mut due: Vec<(&'static str, i64)> = Vec::new();
            if let Some(sign) = ticket.sign_due_ms.filter(|d| ticket.status == Status::Dispatched && *d < now) {
                due.push(("sign_overdue", sign));
            }
            // Only work still to be done is overdue: not a ticket answered, closed or merged.
            let open = matches!(ticket.status, Status::Dispatched | Status::Accepted | Status::Returned);
            if let Some(d) = ticket.due_ms.filter(|_| open) {
                if d < now {
                    due.push(("overdue", d));
                } else if d < now + DUE_SOON_MS && ticket.status != Status::Returned {
                    due.push(("due_soon", d));
                }
            }
            let fresh: Vec<(&'static str, i64)> = due.into_iter().filter(|(k, d)| !has_alert(&old, k, *d)).collect();
            let mut alerts: Vec<String> = old.split_whitespace().map(str::to_owned).collect();
            alerts.extend(fresh.iter().map(|(k, d)| format!("{k}:{d}")));
            let alerts = alerts.join(" ");
            let mut tx = self.db.begin().await?;
            // Compare-and-set on the alerts and on the ticket as read: an action
            // since (an extension, a redispatch) changed the deadlines, and the
            // next sweep judges them afresh.
            let claimed = sqlx::query(
                "UPDATE hotline_tickets SET alerts = $2, next_alert_ms = $4 WHERE number = $1 AND alerts = $3 AND updated_ms = $5",
            )
                .bind(&ticket.number)
                .bind(&alerts)
                .bind(&old)
                .bind(next_alert(&ticket, &alerts))
                .bind(updated_ms)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if !claimed {
                continue; // another node raised them, or the ticket changed meanwhile
            }
            for (kind, deadline) in fresh {
                let change = Change { event: kind, from: ticket.status, to: ticket.status, detail: json!({ "deadline_ms": deadline, "sign_due_ms": ticket.sign_due_ms, "due_ms": ticket.due_ms }) };
                record(&mut tx, &ticket, "deadline", Some(ticket.status), &change, "system", now)?;
                raised += 1;
            }
            tx.commit().await?;
        }
        if raised > 0 {
            self.bus.kick();
        }
        Ok(raised)
    }

    /// Sweeps the deadlines every `every` until aborted, and forgets calls
    /// past showing.
    pub fn spawn_deadline_watch(self: &std::sync::Arc<Self>, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let tickets = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = tickets.sweep_deadlines(now_ms()).await {
                    tracing::warn!("hotline deadline sweep: {e}");
                }
                if let Err(e) = tickets.forget_calls(now_ms()).await {
                    tracing::warn!("hotline call sweep: {e}");
                }
                tokio::time::sleep(every).await;
            }
        })
    }

    /// What a citizen may see of a ticket, given the last four digits of the
    /// phone it was registered with; `NotFound` otherwise (so a guess does
    /// not learn whether the number exists).
    pub async fn lookup(&self, number: &str, phone_last4: &str) -> Result<Value> {
        let not_found = || Error::NotFound(number.to_owned());
        if phone_last4.len() != 4 || !phone_last4.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::Invalid("phone_last4 must be the last four digits of the phone".into()));
        }
        let ticket = match self.get(number).await {
            Ok(t) => t,
            Err(Error::NotFound(_)) => return Err(not_found()),
            Err(e) => return Err(e),
        };
        if !ticket.caller_phone.as_deref().is_some_and(|p| p.ends_with(phone_last4)) {
            return Err(not_found());
        }
        let events = self.events(&ticket.number).await?;
        let answered = matches!(ticket.status, Status::Replied | Status::Visited | Status::Closed);
        Ok(json!({
            "number": ticket.number,
            "status": ticket.status,
            "content": ticket.content,
            "created_ms": ticket.created_ms,
            "department": ticket.department,
            "due_ms": ticket.due_ms,
            "reply": if answered { ticket.reply.clone() } else { None },
            "replied_ms": ticket.replied_ms,
            "closed_ms": ticket.closed_ms,
            "progress": events.iter().filter(|e| e.action != "deadline").map(|e| json!({ "event": e.event, "at_ms": e.at_ms })).collect::<Vec<_>>(),
        }))
    }

    /// The KPIs of the tickets registered from `from_ms` up to `to_ms`.
    pub async fn stats(&self, from_ms: i64, to_ms: i64, now: i64) -> Result<crate::Stats> {
        let rows = sqlx::query("SELECT doc FROM hotline_tickets WHERE created_ms >= $1 AND created_ms < $2")
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all(self.db.pool())
            .await?;
        let tickets = rows.iter().map(|r| self.decode(r)).collect::<Result<Vec<_>>>()?;
        Ok(crate::stats::compute(&tickets, &self.calendar, (from_ms, to_ms), now))
    }

    /// Current time, for callers without a clock of their own.
    pub fn now() -> i64 {
        now_ms()
    }
}

/// Whether alert `kind` was raised for `deadline`.
fn has_alert(alerts: &str, kind: &str, deadline: i64) -> bool {
    alerts.split_whitespace().any(|a| a.split_once(':').is_some_and(|(k, d)| k == kind && d.parse() == Ok(deadline)))
}

/// When the next deadline alert of `t` falls due (given the alerts raised), if any.
fn next_alert(t: &Ticket, alerts: &str) -> Option<i64> {
    if !matches!(t.status, Status::Dispatched | Status::Accepted | Status::Returned) {
        return None;
    }
    let mut at = Vec::new();
    if let Some(sign) = t.sign_due_ms.filter(|s| t.status == Status::Dispatched && !has_alert(alerts, "sign_overdue", *s)) {
        at.push(sign);
    }
    if let Some(due) = t.due_ms.filter(|d| !has_alert(alerts, "overdue", *d)) {
        if t.status != Status::Returned && !has_alert(alerts, "due_soon", due) {
            at.push(due - DUE_SOON_MS);
        }
        at.push(due);
    }
    at.into_iter().min()
}

/// The audit record and the event of one change, in the caller's transaction.
fn record(tx: &mut Tx, ticket: &Ticket, action: &str, from: Option<Status>, change: &Change, actor: &str, now: i64) -> Result<()> {
    let id = civichub_messaging::new_id();
    tx.insert_later(
        "INSERT INTO hotline_ticket_events (id, number, event, action, actor, from_status, to_status, detail, at_ms)",
        "",
        vec![
            id.as_str().into(),
            ticket.number.as_str().into(),
            change.event.into(),
            action.into(),
            actor.into(),
            from.map(Status::as_str).into(),
            change.to.as_str().into(),
            change.detail.to_string().into(),
            now.into(),
        ],
    );
    let payload = json!({
        "number": ticket.number,
        "event": change.event,
        "action": action,
        "actor": actor,
        "from": from,
        "status": change.to,
        "department": ticket.department,
        "co_departments": ticket.co_departments,
        "channel": ticket.channel,
        "urgency": ticket.urgency,
        "detail": change.detail,
    });
    let mut env = Envelope::new(&format!("hotline.ticket.{}", change.event), "civichub/hotline", None, payload);
    env.id = id;
    env.trace_id = ticket.number.clone();
    outbox::enqueue(tx, &subjects::ticket(change.event), &env)?;
    Ok(())
}

/// The WHERE clause and its values for a ticket list (see [`Tickets::list`]).
fn list_filter(status: Option<&str>, department: Option<&str>, overdue: bool) -> Result<(String, Vec<civichub_store::Value>)> {
    if let Some(s) = status
        && Status::parse(s).is_none()
    {
        let all: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
        return Err(Error::Invalid(format!("status {s:?} is not one of {}", all.join(", "))));
    }
    let mut clauses = vec!["1 = 1".to_owned()];
    let mut binds: Vec<civichub_store::Value> = Vec::new();
    if let Some(s) = status {
        binds.push(s.into());
        clauses.push(format!("status = ${}", binds.len()));
    }
    if let Some(d) = department {
        // Led by the department, or handled with its help.
        binds.push(d.into());
        let n = binds.len();
        clauses.push(format!("(department = ${n} OR number IN (SELECT number FROM hotline_co_departments WHERE department = ${n}))"));
    }
    if overdue {
        binds.push(now_ms().into());
        clauses.push(format!("due_ms < ${} AND status IN ('dispatched', 'accepted', 'returned')", binds.len()));
    }
    Ok((clauses.join(" AND "), binds))
}

fn bind_all(sql: String, binds: &[civichub_store::Value]) -> civichub_store::AnyQuery<'_> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        q = b.bind(q);
    }
    q
}
