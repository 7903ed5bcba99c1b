//! Notices from ticket events, through the message router: a department's
//! handlers hear of a ticket dispatched to them (DingTalk work notice, or
//! SMS for a handler without DingTalk), and the citizen gets an SMS when
//! the ticket is registered and when it is answered.
//!
//! A consumer of `civichub.hotline.ticket.>`; each notice's message id is
//! derived from the event's id, so an event delivered twice notifies once.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::DateTime;
use civichub_messaging::messages::{MessageRequest, Phone, Recipient, Router};
use civichub_messaging::{Consumer, Envelope, Handler, Outcome};
use civichub_store::Row;
use serde_json::Value;

use crate::calendar::china;

/// Sends the notices of ticket events.
pub struct Notices {
    router: Arc<Router>,
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notices")
    }
}

impl Notices {
    /// Registers the notice consumer on the router's bus (before the bus starts).
    pub fn register(router: Arc<Router>) {
        let bus = router.bus().clone();
        bus.register(Consumer::new("hotline-notices", "civichub.hotline.ticket.>", Arc::new(Notices { router })));
    }

    async fn handlers_of(&self, department: &str) -> civichub_messaging::Result<Vec<String>> {
        let rows = sqlx::query("SELECT username, roles FROM users WHERE department = $1 AND disabled = 0 ORDER BY username")
            .bind(department)
            .fetch_all(self.router.bus().db().pool())
            .await?;
        let mut out = Vec::new();
        for row in rows {
            let roles: String = row.try_get("roles")?;
            if roles.split_whitespace().any(|r| r == "handler") {
                out.push(row.try_get("username")?);
            }
        }
        Ok(out)
    }

    async fn caller_phone(&self, number: &str) -> civichub_messaging::Result<Option<String>> {
        Ok(sqlx::query("SELECT caller_phone FROM hotline_tickets WHERE number = $1")
            .bind(number)
            .fetch_optional(self.router.bus().db().pool())
            .await?
            .and_then(|r| r.try_get::<Option<String>, _>("caller_phone").ok().flatten()))
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
    ms.and_then(DateTime::from_timestamp_millis)
        .map(|t| t.with_timezone(&china()).format("%m月%d日 %H:%M").to_string())
        .unwrap_or_else(|| "规定时限".into())
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
            "dispatched" | "redispatched" | "reopened" | "return_refused" => {
                let Some(department) = p["department"].as_str() else { return Outcome::Ack };
                let handlers = match self.handlers_of(department).await {
                    Ok(h) => h,
                    Err(e) => return Outcome::retry(format!("database: {e}")),
                };
                if handlers.is_empty() {
                    tracing::warn!("ticket {number} went to {department}, which has no handler to notify");
                }
                let what = match event {
                    "reopened" => "重办工单",
                    "return_refused" => "退单未获同意，请继续办理工单",
                    _ => "新工单",
                };
                let text = format!(
                    "【12345】{what} {number} 已派至{department}，请于{}前签收，{}前办结。",
                    beijing(detail["sign_due_ms"].as_i64().or(p["sign_due_ms"].as_i64())),
                    beijing(detail["due_ms"].as_i64()),
                );
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
                    format!("【12345】您反映的问题（工单号 {number}）已办理答复，我们将进行回访，请对办理结果进行评价。")
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
