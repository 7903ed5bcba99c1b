//! A ticket (工单) and its lifecycle: which action may follow which state,
//! who may take it, and what it changes. Pure: no database, no clock.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::calendar::{Calendar, Limit};
use crate::{Error, Needs, Result};

macro_rules! names {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored and wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Reads a stored or wire name.
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

names!(
    /// Where a ticket came from.
    Channel {
        /// A call to 12345.
        Phone = "phone",
        /// The public web form.
        Web = "web",
        /// An SMS to the hotline number.
        Sms = "sms",
        /// The city app.
        App = "app",
        /// DingTalk.
        DingTalk = "dingtalk",
        /// Anything else.
        Other = "other",
    }
);

names!(
    /// How fast it must be handled.
    Urgency {
        /// Ordinary.
        Normal = "normal",
        /// Urgent.
        Urgent = "urgent",
        /// An emergency (hours, not days).
        Emergency = "emergency",
    }
);

names!(
    /// Where a ticket stands.
    Status {
        /// Registered by an agent or a channel, not yet dispatched.
        Registered = "registered",
        /// Sent to a department, waiting for it to sign.
        Dispatched = "dispatched",
        /// Signed for (签收) and being handled.
        Accepted = "accepted",
        /// Returned by the department (退单), waiting for the hotline's review.
        Returned = "returned",
        /// Answered by the department (答复).
        Replied = "replied",
        /// The citizen was called back (回访) and rated the answer.
        Visited = "visited",
        /// Closed (办结), also when answered directly (即办).
        Closed = "closed",
        /// Merged into another ticket (并单).
        Merged = "merged",
    }
);

names!(
    /// The citizen's rating at the callback.
    Rating {
        /// 满意.
        Satisfied = "satisfied",
        /// 基本满意.
        BasicallySatisfied = "basically_satisfied",
        /// 不满意.
        Unsatisfied = "unsatisfied",
        /// The citizen could not be reached.
        Unreachable = "unreachable",
    }
);

names!(
    /// Grades of supervision (督办).
    Supervision {
        /// 一般督办.
        Ordinary = "ordinary",
        /// 黄牌督办.
        Yellow = "yellow",
        /// 红牌督办.
        Red = "red",
    }
);

names!(
    /// The roles of the identity directory that the hotline knows.
    Role {
        /// A hotline agent (话务员): registers, dispatches, calls back.
        Agent = "agent",
        /// A department's handler (承办人): signs, returns, asks for more time, replies.
        Handler = "handler",
        /// A supervisor (督办员): reviews returns and extensions, supervises.
        Supervisor = "supervisor",
        /// A leader: reads everything.
        Leader = "leader",
        /// An administrator: may do anything.
        Admin = "admin",
    }
);

/// An extension (延期) asked for and not yet decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingExtension {
    /// Working days more.
    pub working_days: u32,
    /// Why.
    pub reason: String,
}

/// A co-handling department's contribution (协办意见) for the lead department.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contribution {
    /// The co-handling department.
    pub department: String,
    /// What it found or did.
    pub text: String,
    /// When (Unix ms).
    pub at_ms: i64,
}

/// A ticket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// `12345-YYYYMMDD-NNNNNN`.
    pub number: String,
    /// Where it came from.
    pub channel: Channel,
    /// The caller's name.
    pub caller_name: Option<String>,
    /// The caller's phone.
    pub caller_phone: Option<String>,
    /// What the citizen asks.
    pub content: String,
    /// Where.
    pub location: Option<String>,
    /// GB/T 39666 category code.
    pub category: Option<String>,
    /// How fast.
    pub urgency: Urgency,
    /// Where it stands.
    pub status: Status,
    /// The lead department (主办).
    pub department: Option<String>,
    /// Co-handling departments (协办).
    pub co_departments: Vec<String>,
    /// Sign for it by then (Unix ms).
    pub sign_due_ms: Option<i64>,
    /// Reply by then (Unix ms).
    pub due_ms: Option<i64>,
    /// When it was dispatched (last time).
    pub dispatched_ms: Option<i64>,
    /// When the department signed.
    pub accepted_ms: Option<i64>,
    /// When the department replied.
    pub replied_ms: Option<i64>,
    /// When it closed.
    pub closed_ms: Option<i64>,
    /// The answer given to the citizen.
    pub reply: Option<String>,
    /// The citizen's rating.
    pub rating: Option<Rating>,
    /// Answered at once from the knowledge base (即办).
    pub direct_answer: bool,
    /// The highest supervision it received.
    pub supervision: Option<Supervision>,
    /// An extension waiting for a decision.
    pub extension: Option<PendingExtension>,
    /// Why the department returned it (while returned).
    pub return_reason: Option<String>,
    /// The ticket it was merged into.
    pub merged_into: Option<String>,
    /// Times it was reopened (重办).
    pub reopened: i64,
    /// What the co-handling departments contributed, oldest first.
    #[serde(default)]
    pub contributions: Vec<Contribution>,
    /// Registered (Unix ms).
    pub created_ms: i64,
    /// Last change (Unix ms).
    pub updated_ms: i64,
}

/// The decision on a returned ticket.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", tag = "decision")]
pub enum ReturnDecision {
    /// 改派: dispatch to another department.
    Redispatch {
        /// The new lead department.
        department: String,
        /// Co-handling departments.
        #[serde(default)]
        co_departments: Vec<String>,
    },
    /// 终审: the return is refused; the same department handles it.
    Uphold {
        /// Why.
        reason: String,
    },
}

/// Something done to a ticket: `POST /api/hotline/tickets/{number}/{action}`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// 派单.
    Dispatch {
        /// The lead department.
        department: String,
        /// Co-handling departments.
        #[serde(default)]
        co_departments: Vec<String>,
    },
    /// 签收.
    Accept {},
    /// 退单.
    Return {
        /// Why (属地不符, 职能交叉, …).
        reason: String,
    },
    /// The hotline's review of a return.
    ReviewReturn {
        /// What it decided.
        #[serde(flatten)]
        decision: ReturnDecision,
    },
    /// 延期: asked before the deadline.
    Extend {
        /// Working days more.
        working_days: u32,
        /// Why.
        reason: String,
    },
    /// The decision on an extension.
    ReviewExtension {
        /// Granted or not.
        approve: bool,
        /// Why.
        #[serde(default)]
        note: Option<String>,
    },
    /// 协办意见: a co-handling department's contribution for the lead.
    Contribute {
        /// What it found or did.
        text: String,
        /// The contributing department: the actor's, set by the store.
        #[serde(skip)]
        department: String,
    },
    /// 答复.
    Reply {
        /// The answer.
        text: String,
    },
    /// 回访.
    Callback {
        /// The citizen's rating.
        rating: Rating,
        /// What the citizen said.
        #[serde(default)]
        note: Option<String>,
    },
    /// 办结.
    Close {},
    /// 重办, after an unsatisfied rating.
    Reopen {
        /// Why.
        reason: String,
    },
    /// 并单: this ticket repeats another.
    Merge {
        /// The ticket it repeats.
        into: String,
    },
    /// 督办.
    Supervise {
        /// Grade.
        level: Supervision,
        /// What is asked.
        #[serde(default)]
        note: Option<String>,
    },
    /// 即办: answered from the knowledge base at once.
    AnswerDirectly {
        /// The answer.
        answer: String,
    },
}

/// Path names of the actions.
pub const ACTIONS: &[&str] = &[
    "dispatch",
    "accept",
    "return",
    "review-return",
    "extend",
    "review-extension",
    "contribute",
    "reply",
    "callback",
    "close",
    "reopen",
    "merge",
    "supervise",
    "answer-directly",
];

/// Longest free text in an action.
const MAX_TEXT: usize = 5_000;

impl Action {
    /// Reads the action named `name` from its JSON body (`{}` when empty).
    pub fn parse(name: &str, body: &[u8]) -> Result<Action> {
        if !ACTIONS.contains(&name) {
            return Err(Error::Invalid(format!("unknown action {name:?}; one of: {}", ACTIONS.join(", "))));
        }
        let mut value: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body).map_err(|e| Error::Invalid(format!("the body is not valid JSON: {e}")))?
        };
        let Some(object) = value.as_object_mut() else {
            return Err(Error::Invalid("the body must be a JSON object".into()));
        };
        object.insert("action".into(), json!(name));
        let action: Action = serde_json::from_value(value).map_err(|e| Error::Invalid(format!("{name}: {e}")))?;
        action.check()?;
        Ok(action)
    }

    /// The action in Chinese, as the pages name it.
    pub fn label(&self) -> &'static str {
        match self {
            Action::Dispatch { .. } => "派单",
            Action::Accept {} => "签收",
            Action::Return { .. } => "退单",
            Action::ReviewReturn { .. } => "审核退单",
            Action::Extend { .. } => "申请延期",
            Action::ReviewExtension { .. } => "审批延期",
            Action::Contribute { .. } => "提交协办意见",
            Action::Reply { .. } => "答复",
            Action::Callback { .. } => "回访",
            Action::Close {} => "办结",
            Action::Reopen { .. } => "重办",
            Action::Merge { .. } => "并单",
            Action::Supervise { .. } => "督办",
            Action::AnswerDirectly { .. } => "直接答复",
        }
    }

    /// The path name.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Dispatch { .. } => "dispatch",
            Action::Accept {} => "accept",
            Action::Return { .. } => "return",
            Action::ReviewReturn { .. } => "review-return",
            Action::Extend { .. } => "extend",
            Action::ReviewExtension { .. } => "review-extension",
            Action::Contribute { .. } => "contribute",
            Action::Reply { .. } => "reply",
            Action::Callback { .. } => "callback",
            Action::Close {} => "close",
            Action::Reopen { .. } => "reopen",
            Action::Merge { .. } => "merge",
            Action::Supervise { .. } => "supervise",
            Action::AnswerDirectly { .. } => "answer-directly",
        }
    }

    fn check(&self) -> Result<()> {
        let text = |field: &str, v: &str| -> Result<()> {
            if v.trim().is_empty() {
                return Err(Error::Invalid(format!("{}: {field} must not be empty", self.name())));
            }
            if v.chars().count() > MAX_TEXT {
                return Err(Error::Invalid(format!("{}: {field} is longer than {MAX_TEXT} characters", self.name())));
            }
            Ok(())
        };
        match self {
            Action::Dispatch { department, co_departments } | Action::ReviewReturn { decision: ReturnDecision::Redispatch { department, co_departments } } => {
                text("department", department)?;
                if co_departments.contains(department) {
                    return Err(Error::Invalid(format!("{}: the lead department is not also a co-handler", self.name())));
                }
                co_departments.iter().try_for_each(|d| text("co_departments", d))
            }
            Action::ReviewReturn { decision: ReturnDecision::Uphold { reason } } | Action::Return { reason } | Action::Reopen { reason } => text("reason", reason),
            Action::Extend { working_days, reason } => {
                if !(1..=30).contains(working_days) {
                    return Err(Error::Invalid("extend: working_days must be 1–30".into()));
                }
                text("reason", reason)
            }
            Action::Reply { text: t } | Action::Contribute { text: t, .. } => text("text", t),
            Action::AnswerDirectly { answer } => text("answer", answer),
            Action::Merge { into } => text("into", into),
            Action::ReviewExtension { note: Some(n), .. } | Action::Callback { note: Some(n), .. } | Action::Supervise { note: Some(n), .. } => {
                if n.chars().count() > MAX_TEXT {
                    return Err(Error::Invalid(format!("{}: note is longer than {MAX_TEXT} characters", self.name())));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Who acts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// Username, or the client id of a system.
    pub name: String,
    /// The hotline roles held.
    pub roles: Vec<Role>,
    /// The department a handler works in.
    pub department: Option<String>,
}

impl Actor {
    /// A person of the identity directory, with the hotline roles among theirs.
    pub fn of(user: &civichub_identity::User) -> Actor {
        Actor { name: user.username.clone(), roles: user.roles.iter().filter_map(|r| Role::parse(r)).collect(), department: user.department.clone() }
    }

    /// Whether the actor holds `role` (an admin holds them all).
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&Role::Admin) || self.roles.contains(&role)
    }

    /// Whether the actor may see `ticket`: hotline staff see all, handlers their department's.
    pub fn may_see(&self, ticket: &Ticket) -> bool {
        if self.has(Role::Agent) || self.has(Role::Supervisor) || self.has(Role::Leader) {
            return true;
        }
        self.has(Role::Handler)
            && self.department.as_ref().is_some_and(|d| ticket.department.as_ref() == Some(d) || ticket.co_departments.contains(d))
    }
}

/// Time limits (sign and reply) per category and urgency; the first
/// matching rule wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeLimits {
    /// Rules, most specific first.
    pub rules: Vec<LimitRule>,
}

/// One rule of [`TimeLimits`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRule {
    /// Categories whose code starts with this (none: every category).
    #[serde(default)]
    pub category_prefix: Option<String>,
    /// This urgency only (none: every urgency).
    #[serde(default)]
    pub urgency: Option<Urgency>,
    /// Sign within.
    pub sign: Limit,
    /// Reply within.
    pub reply: Limit,
}

impl Default for TimeLimits {
    /// Limits seen in practice (see the domain notes): emergencies in hours,
    /// urgent requests the next working day, the rest in five working days;
    /// every ticket signed within one working day.
    fn default() -> Self {
        let rule = |urgency, sign, reply| LimitRule { category_prefix: None, urgency, sign, reply };
        TimeLimits {
            rules: vec![
                rule(Some(Urgency::Emergency), Limit::Hours(1), Limit::Hours(2)),
                rule(Some(Urgency::Urgent), Limit::Hours(4), Limit::WorkingDays(1)),
                rule(None, Limit::WorkingDays(1), Limit::WorkingDays(5)),
            ],
        }
    }
}

impl TimeLimits {
    /// Refuses rules that could not be met or never match: a zero limit, a
    /// sign limit longer than the reply limit of the same unit, a category
    /// prefix that is not 1–6 digits, or no rules at all.
    pub fn check(&self) -> Result<()> {
        if self.rules.is_empty() {
            return Err(Error::Invalid("at least one rule is needed".into()));
        }
        for (i, r) in self.rules.iter().enumerate() {
            let n = i + 1;
            let zero = |l: Limit| matches!(l, Limit::WorkingDays(0) | Limit::Hours(0));
            if zero(r.sign) || zero(r.reply) {
                return Err(Error::Invalid(format!("rule {n}: a limit must be at least 1")));
            }
            let longer = match (r.sign, r.reply) {
                (Limit::WorkingDays(s), Limit::WorkingDays(p)) | (Limit::Hours(s), Limit::Hours(p)) => s > p,
                _ => false,
            };
            if longer {
                return Err(Error::Invalid(format!("rule {n}: the sign limit is longer than the reply limit")));
            }
            if let Some(p) = &r.category_prefix
                && (p.is_empty() || p.len() > 6 || !p.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(Error::Invalid(format!("rule {n}: category_prefix {p:?} must be 1–6 digits of a GB/T 39666 code")));
            }
        }
        Ok(())
    }

    /// The sign and reply limits of a ticket.
    pub fn of(&self, category: Option<&str>, urgency: Urgency) -> (Limit, Limit) {
        self.rules
            .iter()
            .find(|r| {
                r.urgency.is_none_or(|u| u == urgency)
                    && r.category_prefix.as_deref().is_none_or(|p| category.is_some_and(|c| c.starts_with(p)))
            })
            .map(|r| (r.sign, r.reply))
            .unwrap_or((Limit::WorkingDays(1), Limit::WorkingDays(5)))
    }
}

/// What the lifecycle needs besides the ticket.
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    /// Working days.
    pub calendar: &'a Calendar,
    /// Limits.
    pub limits: &'a TimeLimits,
}

/// What an action did: the new state and the event to announce.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The event name: `civichub.hotline.ticket.<event>`.
    pub event: &'static str,
    /// Status before.
    pub from: Status,
    /// Status after.
    pub to: Status,
    /// Details for the audit record and the event.
    pub detail: Value,
}

fn refused(action: &Action, status: Status) -> Error {
    Error::Refused { action: action.name(), label: action.label(), status }
}

impl Ticket {
    /// A ticket just registered, with nothing but its number, channel, content and time.
    pub fn registered(number: String, channel: Channel, content: String, now: i64) -> Ticket {
        Ticket {
            number,
            channel,
            caller_name: None,
            caller_phone: None,
            content,
            location: None,
            category: None,
            urgency: Urgency::Normal,
            status: Status::Registered,
            department: None,
            co_departments: vec![],
            sign_due_ms: None,
            due_ms: None,
            dispatched_ms: None,
            accepted_ms: None,
            replied_ms: None,
            closed_ms: None,
            reply: None,
            rating: None,
            direct_answer: false,
            supervision: None,
            extension: None,
            return_reason: None,
            merged_into: None,
            reopened: 0,
            contributions: vec![],
            created_ms: now,
            updated_ms: now,
        }
    }

    /// Whether the ticket is still being worked on.
    pub fn is_open(&self) -> bool {
        !matches!(self.status, Status::Closed | Status::Merged)
    }

    /// Whether `actor` may take `action` on this ticket.
    pub fn authorize(&self, action: &Action, actor: &Actor) -> Result<()> {
        let lead = || actor.has(Role::Admin) || (actor.has(Role::Handler) && actor.department.is_some() && actor.department == self.department);
        let ok = match action {
            Action::Dispatch { .. } | Action::AnswerDirectly { .. } | Action::Callback { .. } | Action::Close {} | Action::Merge { .. } | Action::Reopen { .. } => {
                actor.has(Role::Agent) || actor.has(Role::Supervisor)
            }
            Action::Accept {} | Action::Return { .. } | Action::Extend { .. } | Action::Reply { .. } => lead(),
            Action::ReviewReturn { .. } | Action::ReviewExtension { .. } | Action::Supervise { .. } => actor.has(Role::Supervisor),
            Action::Contribute { .. } => {
                actor.has(Role::Handler) && actor.department.as_ref().is_some_and(|d| self.co_departments.contains(d))
            }
        };
        if ok {
            Ok(())
        } else {
            let needs = match action {
                Action::Accept {} | Action::Return { .. } | Action::Extend { .. } | Action::Reply { .. } => Needs::LeadHandler,
                Action::ReviewReturn { .. } | Action::ReviewExtension { .. } | Action::Supervise { .. } => Needs::Supervisor,
                Action::Contribute { .. } => Needs::CoHandler,
                _ => Needs::HotlineStaff,
            };
            Err(Error::NotPermitted { action: action.name(), label: action.label(), needs })
        }
    }

    fn set_deadlines(&mut self, now: i64, rules: Rules<'_>) {
        let (sign, reply) = rules.limits.of(self.category.as_deref(), self.urgency);
        self.dispatched_ms = Some(now);
        self.sign_due_ms = Some(rules.calendar.deadline(now, sign));
        self.due_ms = Some(rules.calendar.deadline(now, reply));
        self.accepted_ms = None;
    }

    /// Applies `action` at `now` (Unix ms); the ticket is unchanged on error.
    /// Checks only the lifecycle; see [`Ticket::authorize`] for who may act.
    pub fn apply(&mut self, action: &Action, now: i64, rules: Rules<'_>) -> Result<Change> {
        let from = self.status;
        let mut next = self.clone();
        let (event, detail) = match (action, from) {
            (Action::AnswerDirectly { answer }, Status::Registered) => {
                next.status = Status::Closed;
                next.direct_answer = true;
                next.reply = Some(answer.clone());
                next.replied_ms = Some(now);
                next.closed_ms = Some(now);
                ("answered", json!({ "answer": answer }))
            }
            (Action::Dispatch { department, co_departments }, Status::Registered) => {
                next.status = Status::Dispatched;
                next.department = Some(department.clone());
                next.co_departments = co_departments.clone();
                next.set_deadlines(now, rules);
                ("dispatched", json!({ "department": department, "co_departments": co_departments, "sign_due_ms": next.sign_due_ms, "due_ms": next.due_ms }))
            }
            (Action::Accept {}, Status::Dispatched) => {
                next.status = Status::Accepted;
                next.accepted_ms = Some(now);
                let on_time = self.sign_due_ms.is_none_or(|d| now <= d);
                ("accepted", json!({ "department": self.department, "on_time": on_time }))
            }
            (Action::Return { reason }, Status::Dispatched | Status::Accepted) => {
                next.status = Status::Returned;
                next.return_reason = Some(reason.clone());
                next.extension = None;
                ("returned", json!({ "department": self.department, "reason": reason }))
            }
            (Action::ReviewReturn { decision }, Status::Returned) => {
                // Back to where it was returned from: a department that had signed for it still has.
                next.status = if self.accepted_ms.is_some() { Status::Accepted } else { Status::Dispatched };
                next.return_reason = None;
                match decision {
                    ReturnDecision::Redispatch { department, co_departments } => {
                        if Some(department) == self.department.as_ref() {
                            return Err(Error::Invalid("review-return: redispatch to another department, or uphold".into()));
                        }
                        next.status = Status::Dispatched;
                        next.department = Some(department.clone());
                        next.co_departments = co_departments.clone();
                        next.set_deadlines(now, rules);
                        ("redispatched", json!({ "from_department": self.department, "department": department, "co_departments": co_departments, "reason": self.return_reason, "sign_due_ms": next.sign_due_ms, "due_ms": next.due_ms }))
                    }
                    ReturnDecision::Uphold { reason } => {
                        // The department keeps it and the clock runs on from the first dispatch.
                        ("return_refused", json!({ "department": self.department, "reason": reason, "return_reason": self.return_reason, "sign_due_ms": self.sign_due_ms, "due_ms": self.due_ms, "signed": self.accepted_ms.is_some() }))
                    }
                }
            }
            (Action::Extend { working_days, reason }, Status::Dispatched | Status::Accepted) => {
                if self.extension.is_some() {
                    return Err(Error::Conflict("extend: an extension is already waiting for a decision".into()));
                }
                if self.due_ms.is_some_and(|d| now > d) {
                    return Err(Error::Conflict("extend: an extension must be asked for before the deadline".into()));
                }
                next.extension = Some(PendingExtension { working_days: *working_days, reason: reason.clone() });
                ("extension_requested", json!({ "working_days": working_days, "reason": reason, "due_ms": self.due_ms }))
            }
            (Action::ReviewExtension { approve, note }, Status::Dispatched | Status::Accepted) => {
                let Some(ext) = &self.extension else {
                    return Err(Error::Conflict("review-extension: no extension is waiting".into()));
                };
                next.extension = None;
                if *approve {
                    let from_due = self.due_ms.unwrap_or(now);
                    next.due_ms = Some(rules.calendar.deadline(from_due, Limit::WorkingDays(ext.working_days)));
                }
                ("extension_reviewed", json!({ "approved": approve, "note": note, "working_days": ext.working_days, "due_ms": next.due_ms }))
            }
            (Action::Contribute { text, department }, Status::Dispatched | Status::Accepted) => {
                next.contributions.push(Contribution { department: department.clone(), text: text.clone(), at_ms: now });
                ("contributed", json!({ "department": department, "lead": self.department, "text": text }))
            }
            (Action::Reply { text }, Status::Accepted) => {
                next.status = Status::Replied;
                next.reply = Some(text.clone());
                next.replied_ms = Some(now);
                next.extension = None;
                let on_time = self.due_ms.is_none_or(|d| now <= d);
                ("replied", json!({ "department": self.department, "on_time": on_time }))
            }
            (Action::Callback { rating, note }, Status::Replied) => {
                next.status = Status::Visited;
                next.rating = Some(*rating);
                ("called_back", json!({ "rating": rating, "note": note }))
            }
            (Action::Close {}, Status::Visited) => {
                next.status = Status::Closed;
                next.closed_ms = Some(now);
                ("closed", json!({ "rating": self.rating }))
            }
            (Action::Reopen { reason }, Status::Visited | Status::Closed) if !self.direct_answer => {
                if self.rating != Some(Rating::Unsatisfied) {
                    return Err(Error::Conflict("reopen: only a ticket rated unsatisfied is reopened".into()));
                }
                next.status = Status::Dispatched;
                next.reopened += 1;
                next.rating = None;
                next.reply = None;
                next.replied_ms = None;
                next.closed_ms = None;
                next.set_deadlines(now, rules);
                ("reopened", json!({ "reason": reason, "department": self.department, "times": next.reopened, "sign_due_ms": next.sign_due_ms, "due_ms": next.due_ms }))
            }
            (Action::Merge { into }, Status::Registered | Status::Dispatched | Status::Accepted | Status::Returned) => {
                if into == &self.number {
                    return Err(Error::Invalid("merge: a ticket is not merged into itself".into()));
                }
                next.status = Status::Merged;
                next.merged_into = Some(into.clone());
                next.closed_ms = Some(now);
                ("merged", json!({ "into": into }))
            }
            (Action::Supervise { level, note }, Status::Dispatched | Status::Accepted | Status::Returned | Status::Replied) => {
                // The grade only ever rises.
                let rank = |s: Option<Supervision>| s.map_or(0, |s| s as u8 + 1);
                if rank(Some(*level)) > rank(self.supervision) {
                    next.supervision = Some(*level);
                }
                ("supervised", json!({ "level": level, "note": note, "department": self.department, "overdue": self.due_ms.is_some_and(|d| now > d) }))
            }
            (action, status) => return Err(refused(action, status)),
        };
        next.updated_ms = now;
        *self = next;
        Ok(Change { event, from, to: self.status, detail })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> Ticket {
        Ticket {
            caller_name: Some("王女士".into()),
            caller_phone: Some("13812345678".into()),
            category: Some("010101".into()),
            ..Ticket::registered("12345-20261127-000001".into(), Channel::Phone, "小区门口路灯不亮".into(), 0)
        }
    }

    fn act(t: &mut Ticket, name: &str, body: &str, now: i64) -> Result<Change> {
        let cal = Calendar::default();
        let limits = TimeLimits::default();
        t.apply(&Action::parse(name, body.as_bytes())?, now, Rules { calendar: &cal, limits: &limits })
    }

    // Friday 27 November 2026, 10:00 in Beijing.
    const FRI: i64 = 1_795_744_800_000;
    const DAY: i64 = 86_400_000;

    #[test]
    fn co_handling_departments_contribute_and_only_they() {
        let mut t = ticket();
        act(&mut t, "dispatch", r#"{"department":"城管局","co_departments":["供电公司"]}"#, FRI).unwrap();
        let handler = |d: &str| Actor { name: "h".into(), roles: vec![Role::Handler], department: Some(d.into()) };
        let contribute = Action::parse("contribute", r#"{"text":"线路已检修"}"#.as_bytes()).unwrap();
        assert!(t.authorize(&contribute, &handler("供电公司")).is_ok());
        assert!(matches!(t.authorize(&contribute, &handler("城管局")), Err(Error::NotPermitted { .. })), "the lead replies, not contributes");
        assert!(matches!(t.authorize(&contribute, &handler("住建局")), Err(Error::NotPermitted { .. })));
        let accept = Action::parse("accept", b"").unwrap();
        assert!(matches!(t.authorize(&accept, &handler("供电公司")), Err(Error::NotPermitted { .. })), "co-handlers do not sign");
        assert!(handler("供电公司").may_see(&t));

        let cal = Calendar::default();
        let limits = TimeLimits::default();
        let from_store = Action::Contribute { text: "线路已检修".into(), department: "供电公司".into() };
        let c = t.apply(&from_store, FRI + 3_600_000, Rules { calendar: &cal, limits: &limits }).unwrap();
        assert_eq!((c.event, c.from, c.to), ("contributed", Status::Dispatched, Status::Dispatched));
        assert_eq!(t.contributions, vec![Contribution { department: "供电公司".into(), text: "线路已检修".into(), at_ms: FRI + 3_600_000 }]);
        act(&mut t, "accept", "", FRI + 7_200_000).unwrap();
        act(&mut t, "reply", r#"{"text":"已修复"}"#, FRI + 9_000_000).unwrap();
        let err = t.apply(&from_store, FRI + 10_000_000, Rules { calendar: &cal, limits: &limits }).unwrap_err();
        assert!(matches!(err, Error::Refused { .. }), "too late once replied: {err}");
        assert!(matches!(Action::parse("contribute", br#"{"text":" "}"#), Err(Error::Invalid(_))));
    }

    #[test]
    fn the_full_path_to_closed() {
        let mut t = ticket();
        let c = act(&mut t, "dispatch", r#"{"department":"城管局","co_departments":["供电公司"]}"#, FRI).unwrap();
        assert_eq!((c.event, c.from, c.to), ("dispatched", Status::Registered, Status::Dispatched));
        assert_eq!(t.sign_due_ms, Some(FRI + 3 * DAY), "one working day from Friday is Monday");
        assert_eq!(t.due_ms, Some(FRI + 7 * DAY), "five working days from Friday is the next Friday");
        act(&mut t, "accept", "", FRI + DAY).unwrap();
        act(&mut t, "reply", r#"{"text":"已修复"}"#, FRI + 2 * DAY).unwrap();
        act(&mut t, "callback", r#"{"rating":"satisfied"}"#, FRI + 3 * DAY).unwrap();
        let c = act(&mut t, "close", "{}", FRI + 3 * DAY).unwrap();
        assert_eq!(c.to, Status::Closed);
        assert!(!t.is_open());
    }

    #[test]
    fn an_illegal_transition_is_refused_and_changes_nothing() {
        let mut t = ticket();
        let before = t.clone();
        let err = act(&mut t, "reply", r#"{"text":"x"}"#, FRI).unwrap_err();
        assert!(matches!(err, Error::Refused { action: "reply", status: Status::Registered, .. }), "{err}");
        assert!(err.to_string().contains("registered"), "{err}");
        assert_eq!(t, before);
        act(&mut t, "answer-directly", r#"{"answer":"请拨打95598"}"#, FRI).unwrap();
        assert!(t.direct_answer && t.status == Status::Closed);
        assert!(act(&mut t, "reopen", r#"{"reason":"x"}"#, FRI).is_err());
    }

    #[test]
    fn return_then_redispatch_or_uphold() {
        let mut t = ticket();
        act(&mut t, "dispatch", r#"{"department":"城管局"}"#, FRI).unwrap();
        act(&mut t, "return", r#"{"reason":"属地不符"}"#, FRI + 3_600_000).unwrap();
        assert_eq!(t.return_reason.as_deref(), Some("属地不符"));
        let err = act(&mut t, "review-return", r#"{"decision":"redispatch","department":"城管局"}"#, FRI).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)));
        let c = act(&mut t, "review-return", r#"{"decision":"redispatch","department":"住建局"}"#, FRI + 3 * DAY).unwrap();
        assert_eq!(c.event, "redispatched");
        assert_eq!(t.department.as_deref(), Some("住建局"));
        assert_eq!(t.sign_due_ms, Some(FRI + 4 * DAY), "the clock restarts for the new department");
        act(&mut t, "return", r#"{"reason":"职能交叉"}"#, FRI + 3 * DAY).unwrap();
        let c = act(&mut t, "review-return", r#"{"decision":"uphold","reason":"属你局职责"}"#, FRI + 3 * DAY).unwrap();
        assert_eq!((c.event, t.status, t.department.as_deref()), ("return_refused", Status::Dispatched, Some("住建局")));
        // Signed for, then returned: upheld, it is back with the department as signed, on time.
        act(&mut t, "accept", "", FRI + 3 * DAY).unwrap();
        let signed = t.accepted_ms;
        act(&mut t, "return", r#"{"reason":"职能交叉"}"#, FRI + 4 * DAY).unwrap();
        let c = act(&mut t, "review-return", r#"{"decision":"uphold","reason":"属你局职责"}"#, FRI + 5 * DAY).unwrap();
        assert_eq!((t.status, t.accepted_ms), (Status::Accepted, signed));
        assert_eq!(c.detail["due_ms"], json!(t.due_ms), "the notice can say until when");
    }

    #[test]
    fn extensions_are_asked_before_the_deadline_and_decided_once() {
        let mut t = ticket();
        act(&mut t, "dispatch", r#"{"department":"城管局"}"#, FRI).unwrap();
        act(&mut t, "accept", "", FRI).unwrap();
        act(&mut t, "extend", r#"{"working_days":3,"reason":"需协调供电公司"}"#, FRI + DAY).unwrap();
        assert!(matches!(act(&mut t, "extend", r#"{"working_days":1,"reason":"x"}"#, FRI + DAY), Err(Error::Conflict(_))));
        act(&mut t, "review-extension", r#"{"approve":true}"#, FRI + DAY).unwrap();
        assert_eq!(t.due_ms, Some(FRI + 12 * DAY), "three working days after Friday 4 December: Wednesday the 9th");
        assert!(matches!(act(&mut t, "review-extension", r#"{"approve":true}"#, FRI), Err(Error::Conflict(_))));
        let err = act(&mut t, "extend", r#"{"working_days":1,"reason":"x"}"#, FRI + 13 * DAY).unwrap_err();
        assert!(err.to_string().contains("before the deadline"), "{err}");
    }

    #[test]
    fn unsatisfied_is_reopened_and_supervision_only_rises() {
        let mut t = ticket();
        act(&mut t, "dispatch", r#"{"department":"城管局"}"#, FRI).unwrap();
        act(&mut t, "supervise", r#"{"level":"yellow"}"#, FRI).unwrap();
        act(&mut t, "supervise", r#"{"level":"ordinary"}"#, FRI).unwrap();
        assert_eq!(t.supervision, Some(Supervision::Yellow));
        act(&mut t, "accept", "", FRI).unwrap();
        act(&mut t, "reply", r#"{"text":"已处理"}"#, FRI).unwrap();
        act(&mut t, "callback", r#"{"rating":"basically_satisfied"}"#, FRI).unwrap();
        assert!(act(&mut t, "reopen", r#"{"reason":"x"}"#, FRI).is_err(), "only unsatisfied reopens");
        let mut t2 = ticket();
        act(&mut t2, "dispatch", r#"{"department":"城管局"}"#, FRI).unwrap();
        act(&mut t2, "accept", "", FRI).unwrap();
        act(&mut t2, "reply", r#"{"text":"已处理"}"#, FRI).unwrap();
        act(&mut t2, "callback", r#"{"rating":"unsatisfied","note":"仍然不亮"}"#, FRI).unwrap();
        let c = act(&mut t2, "reopen", r#"{"reason":"群众不满意"}"#, FRI + DAY).unwrap();
        assert_eq!((c.to, t2.reopened, t2.reply.clone()), (Status::Dispatched, 1, None));
    }

    #[test]
    fn bad_bodies_get_clear_errors() {
        let err = Action::parse("dispatch", br#"{}"#).unwrap_err().to_string();
        assert!(err.contains("department"), "{err}");
        let err = Action::parse("fly", b"{}").unwrap_err().to_string();
        assert!(err.contains("unknown action"), "{err}");
        let err = Action::parse("extend", br#"{"working_days":0,"reason":"x"}"#).unwrap_err().to_string();
        assert!(err.contains("1–30"), "{err}");
        let err = Action::parse("callback", br#"{"rating":"great"}"#).unwrap_err().to_string();
        assert!(err.contains("callback"), "{err}");
        assert!(Action::parse("accept", b"[1]").is_err());
    }

    #[test]
    fn roles_decide_who_acts() {
        let mut t = ticket();
        let agent = Actor { name: "a".into(), roles: vec![Role::Agent], department: None };
        let handler = Actor { name: "h".into(), roles: vec![Role::Handler], department: Some("城管局".into()) };
        let other = Actor { name: "o".into(), roles: vec![Role::Handler], department: Some("住建局".into()) };
        let dispatch = Action::parse("dispatch", r#"{"department":"城管局"}"#.as_bytes()).unwrap();
        assert!(t.authorize(&dispatch, &agent).is_ok());
        assert!(matches!(t.authorize(&dispatch, &handler), Err(Error::NotPermitted { .. })));
        act(&mut t, "dispatch", r#"{"department":"城管局"}"#, FRI).unwrap();
        let accept = Action::parse("accept", b"").unwrap();
        assert!(t.authorize(&accept, &handler).is_ok());
        assert!(t.authorize(&accept, &other).is_err());
        assert!(t.authorize(&accept, &agent).is_err());
        assert!(handler.may_see(&t) && !other.may_see(&t) && agent.may_see(&t));
    }

    #[test]
    fn limits_follow_urgency_and_category() {
        let mut limits = TimeLimits::default();
        assert_eq!(limits.of(None, Urgency::Emergency), (Limit::Hours(1), Limit::Hours(2)));
        limits.rules.insert(0, LimitRule { category_prefix: Some("03".into()), urgency: None, sign: Limit::WorkingDays(1), reply: Limit::WorkingDays(13) });
        assert_eq!(limits.of(Some("030201"), Urgency::Normal).1, Limit::WorkingDays(13));
        assert_eq!(limits.of(Some("010101"), Urgency::Normal).1, Limit::WorkingDays(5));
    }
}
