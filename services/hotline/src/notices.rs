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
        let sql = match department {
            Some(_) => "SELECT username, roles FROM users WHERE disabled = 0 AND roles LIKE $1 AND department = $2 ORDER BY username",
            None => "SELECT username, roles FROM users WHERE disabled = 0 AND roles LIKE $1 ORDER BY username",
        };
        let mut query = sqlx::query(sql).bind(format!("%{role}%"));
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
        let p: Value = match env.payload() {
            Ok(p) => p,
            Err(e) => return Outcome::reject(format!("not a ticket event: {e}")),
        };
        let number = p["number"].as_str().unwrap_or_default().to_owned();
        let event = p["event"].as_str().unwrap_or_default();
        let detail = &p["detail"];
        let mut notices: Vec<(String, Recipient, String)> = Vec::new();
        match event {
            "dispatched" | "redispatched" | "reopened" | "return_refused" | "sign_overdue" | "due_soon" | "overdue" => {
                let Some(department) = p["department"].as_str() else { return Outcome::Ack };
                let handlers = match self.users_with("handler", Some(department)).await {
                    Ok(h) => h,
                    Err(e) => return Outcome::retry(format!("database: {e}")),
                };
                if handlers.is_empty() {
                    tracing::warn!("ticket {number} is with {department}, which has no handler to notify");
                }
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
                for user in handlers {
                    notices.push((format!("notice-{}-{user}", env.id), Recipient::User(user), text.clone()));
                }
                // The co-handling departments of a new dispatch hear of it too.
                let co: Vec<&str> = detail["co_departments"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                for co_department in co.into_iter().filter(|_| matches!(event, "dispatched" | "redispatched")) {
                    let helpers = match self.users_with("handler", Some(co_department)).await {
                        Ok(h) => h,
                        Err(e) => return Outcome::retry(format!("database: {e}")),
                    };
                    let text = format!("【12345】协办工单 {number} 由{department}主办，请配合办理，于{due}前提出协办意见。");
                    for user in helpers {
                        notices.push((format!("notice-{}-{user}", env.id), Recipient::User(user), text.clone()));
                    }
                }
                if event == "overdue" {
                    // Escalation: the supervisors hear of it too.
                    let supervisors = match self.users_with("supervisor", None).await {
                        Ok(s) => s,
                        Err(e) => return Outcome::retry(format!("database: {e}")),
                    };
                    let text = format!("【12345】超期工单 {number}（{department}）已超过办理时限（{due}），请督办。");
                    for user in supervisors {
                        notices.push((format!("notice-{}-{user}", env.id), Recipient::User(user), text.clone()));
                    }
                }
            }
            "supervised" | "extension_reviewed" => {
                // The department handling it hears of a supervision card and of its extension's fate.
                let Some(department) = p["department"].as_str() else { return Outcome::Ack };
                let handlers = match self.users_with("handler", Some(department)).await {
                    Ok(h) => h,
                    Err(e) => return Outcome::retry(format!("database: {e}")),
                };
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
                for user in handlers {
                    notices.push((format!("notice-{}-{user}", env.id), Recipient::User(user), text.clone()));
                }
            }
            "contributed" => {
                // The lead department hears what a co-handling department contributed.
                let Some(lead) = p["department"].as_str() else { return Outcome::Ack };
                let handlers = match self.users_with("handler", Some(lead)).await {
                    Ok(h) => h,
                    Err(e) => return Outcome::retry(format!("database: {e}")),
                };
                let from = detail["department"].as_str().unwrap_or("协办单位");
                let said: String = detail["text"].as_str().unwrap_or_default().chars().take(60).collect();
                let text = format!("【12345】工单 {number} 收到{from}的协办意见：{said}。请汇总后答复。");
                for user in handlers {
                    notices.push((format!("notice-{}-{user}", env.id), Recipient::User(user), text.clone()));
                }
            }
            "created" | "replied" => {
                let phone = match self.caller_phone(&number).await {
                    Ok(p) => p,
                    Err(e) => return Outcome::retry(format!("database: {e}")),
                };
                // Citizens get SMS on mobile numbers only.
                let Some(phone) = phone.and_then(|p| Phone::parse(&p).ok()) else { return Outcome::Ack };
                let text = if event == "created" {
                    format!("【12345】您反映的问题已受理，工单号 {number}。可凭工单号和手机号后四位查询办理进度。")
                } else {
                    format!("【12345】您反映的问题（工单号 {number}）已办理答复。请对办理结果评价：回复1满意，2基本满意，3不满意。")
                };
                notices.push((format!("notice-{}-citizen", env.id), Recipient::Phone(phone), text));
            }
            _ => {}
        }
        for (id, to, text) in notices {
            if let Err(e) = self.send(id, to, text, &env.trace_id).await {
                return Outcome::retry(e);
            }
        }
        Outcome::Ack
    }
}
