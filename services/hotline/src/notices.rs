//! Notices from ticket events, through the message router: a department's
//! handlers hear of a ticket dispatched to them (DingTalk work notice, or
//! SMS for a handler without DingTalk) and of what co-handling departments
//! contribute to it, and the citizen gets an SMS when the ticket is
//! registered and when it is answered.
//!
//! A consumer of `civichub.hotline.ticket.>`; each notice's message id is
//! derived from the event's id, so an event delivered twice notifies once.

use std::sync::Arc;

use async_trait::async_trait;
use civichub_messaging::messages::{MessageRequest, Phone, Recipient, Router};
use civichub_messaging::{Consumer, Envelope, Handler, Outcome};
use civichub_store::Row;
use serde_json::Value;


/// Sends the notices of ticket events.
pub struct Notices {
    router: Arc<Router>,
    tickets: Arc<crate::Tickets>,
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notices")
    }
}

impl Notices {
    /// Registers the notice consumer on the router's bus (before the bus starts).
    pub fn register(router: Arc<Router>, tickets: Arc<crate::Tickets>) {
        let bus = router.bus().clone();
        bus.register(Consumer::new("hotline-notices", "civichub.hotline.ticket.>", Arc::new(Notices { router, tickets })));
    }

    /// Active users with `role`, of `department` when one is given.
    async fn users_with(&self, role: &str, department: Option<&str>) -> civichub_messaging::Result<Vec<String>> {
        // Roles are a space-separated list; the department, when given, narrows by its index.
        let narrow = if department.is_some() { " AND department = $2" } else { "" };
        let sql = format!("SELECT username, roles FROM users WHERE disabled = 0 AND roles LIKE $1{narrow} ORDER BY username");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(format!("%{role}%"));
        if let Some(d) = department {
            query = query.bind(d);
        }
        let rows = query.fetch_all(self.router.bus().db().pool()).await?;
        let mut out = Vec::new();
        for row in rows {
            let roles: String = row.try_get("roles")?;
            if roles.split_whitespace().any(|r| r == role) {
                out.push(row.try_get("username")?);
            }
        }
        Ok(out)
    }

    async fn caller_phone(&self, number: &str) -> crate::Result<Option<String>> {
        Ok(self.tickets.get(number).await?.caller_phone)
    }

    /// Sends one notice; `Err` only for what a retry can fix.
    async fn send(&self, id: String, to: Recipient, text: String, trace: &str) -> Result<(), String> {
        let req = MessageRequest { to, channel: None, text, template: None, params: None, urgent: false };
        match self.router.submit_once(&id, req, Some("civichub/hotline"), Some(trace)).await {
            Ok(_) => Ok(()),
            // The recipient cannot be reached (no channel, no phone): nothing a retry changes.
            Err(civichub_messaging::Error::Invalid(why)) => {
                tracing::warn!("hotline notice {id} not sent: {why}");
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

fn beijing(ms: Option<i64>) -> String {
    crate::beijing(ms, "%m月%d日 %H:%M").unwrap_or_else(|| "规定时限".into())
}

#[async_trait]
impl Handler for Notices {
    async fn handle(&self, env: &Envelope, _delivery: u32) -> Outcome {
        let notices = match self.notices_for(env).await {
            Ok(n) => n,
            Err(outcome) => return outcome,
        };
        for (id, to, text) in notices {
            if let Err(e) = self.send(id, to, text, &env.trace_id).await {
                return Outcome::retry(e);
            }
        }
        Outcome::Ack
    }
}

/// A notice to send: message id, recipient, text.
type Notice = (String, Recipient, String);

impl Notices {
    /// Adds a notice of `text` for everyone with `role` (of `department`),
    /// its message id derived from the event's; how many it reaches.
    async fn notify(&self, notices: &mut Vec<Notice>, env: &Envelope, role: &str, department: Option<&str>, text: &str) -> Result<usize, Outcome> {
        let users = self.users_with(role, department).await.map_err(|e| Outcome::retry(format!("database: {e}")))?;
        let reached = users.len();
        notices.extend(users.into_iter().map(|user| (format!("notice-{}-{user}", env.id), Recipient::User(user), text.to_owned())));
        Ok(reached)
    }

    /// The notices a ticket event calls for (`Err`: what to do with the event instead).
    async fn notices_for(&self, env: &Envelope) -> Result<Vec<Notice>, Outcome> {
        let p: Value = env.payload().map_err(|e| Outcome::reject(format!("not a ticket event: {e}")))?;
        let number = p["number"].as_str().unwrap_or_default().to_owned();
        let event = p["event"].as_str().unwrap_or_default();
        let detail = &p["detail"];
        let mut notices: Vec<Notice> = Vec::new();
        match event {
            "dispatched" | "redispatched" | "reopened" | "return_refused" | "sign_overdue" | "due_soon" | "overdue" => {
                let Some(department) = p["department"].as_str() else { return Ok(notices) };
                let sign_due = beijing(detail["sign_due_ms"].as_i64());
                let due = beijing(detail["due_ms"].as_i64());
                let text = match event {
                    "sign_overdue" => format!("【12345】催办：工单 {number} 已超过签收时限（{sign_due}），请立即签收。"),
                    "due_soon" => format!("【12345】提醒：工单 {number} 将于{due}到期，请按时办结答复。"),
                    "overdue" => format!("【12345】督办：工单 {number} 已超过办理时限（{due}），请立即办理并答复。"),
                    "reopened" => format!("【12345】重办工单 {number} 已派至{department}，请于{sign_due}前签收，{due}前办结。"),
                    "return_refused" => format!("【12345】工单 {number} 的退单未获同意，请继续办理，{due}前办结。"),
                    _ => format!("【12345】新工单 {number} 已派至{department}，请于{sign_due}前签收，{due}前办结。"),
                };
                if self.notify(&mut notices, env, "handler", Some(department), &text).await? == 0 {
                    tracing::warn!("ticket {number} is with {department}, which has no handler to notify");
                }
                if matches!(event, "dispatched" | "redispatched") {
                    // The co-handling departments of a new dispatch hear of it too.
                    let text = format!("【12345】协办工单 {number} 由{department}主办，请配合办理，于{due}前提出协办意见。");
                    for co in detail["co_departments"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                        self.notify(&mut notices, env, "handler", Some(co), &text).await?;
                    }
                }
                if event == "overdue" {
                    // Escalation: the supervisors hear of it too.
                    let text = format!("【12345】超期工单 {number}（{department}）已超过办理时限（{due}），请督办。");
                    self.notify(&mut notices, env, "supervisor", None, &text).await?;
                }
            }
            "supervised" | "extension_reviewed" => {
                // The department handling it hears of a supervision card and of its extension's fate.
                let Some(department) = p["department"].as_str() else { return Ok(notices) };
                let due = beijing(detail["due_ms"].as_i64());
                let note: String = detail["note"].as_str().map(|n| format!("（{}）", n.chars().take(60).collect::<String>())).unwrap_or_default();
                let text = match (event, detail["level"].as_str(), detail["approved"].as_bool()) {
                    ("supervised", level, _) => {
                        let card = match level {
                            Some("red") => "红牌",
                            Some("yellow") => "黄牌",
                            _ => "",
                        };
                        format!("【12345】{card}督办：工单 {number} 已被列入督办{note}，请从速办理并答复。")
                    }
                    (_, _, Some(true)) => format!("【12345】工单 {number} 的延期申请已批准，办理时限延至{due}。"),
                    _ => format!("【12345】工单 {number} 的延期申请未获批准{note}，请于{due}前办结。"),
                };
                self.notify(&mut notices, env, "handler", Some(department), &text).await?;
            }
            "contributed" => {
                // The lead department hears what a co-handling department contributed.
                let Some(lead) = p["department"].as_str() else { return Ok(notices) };
                let from = detail["department"].as_str().unwrap_or("协办单位");
                let said: String = detail["text"].as_str().unwrap_or_default().chars().take(60).collect();
                let text = format!("【12345】工单 {number} 收到{from}的协办意见：{said}。请汇总后答复。");
                self.notify(&mut notices, env, "handler", Some(lead), &text).await?;
            }
            "created" | "replied" => {
                let phone = self.caller_phone(&number).await.map_err(|e| Outcome::retry(format!("database: {e}")))?;
                // Citizens get SMS on mobile numbers only.
                let Some(phone) = phone.and_then(|p| Phone::parse(&p).ok()) else { return Ok(notices) };
                let text = if event == "created" {
                    format!("【12345】您反映的问题已受理，工单号 {number}。可凭工单号和手机号后四位查询办理进度。")
                } else {
                    format!("【12345】您反映的问题（工单号 {number}）已办理答复。请对办理结果评价：回复1满意，2基本满意，3不满意。")
                };
                notices.push((format!("notice-{}-citizen", env.id), Recipient::Phone(phone), text));
            }
            _ => {}
        }
        Ok(notices)
    }
}
