//! Notices to people about changes to how they sign in: a password changed,
//! two-step verification turned on, off or reset, a login method linked or
//! unlinked. Someone who did not make the change hears of it at once (by
//! DingTalk work notice, else SMS), as mature identity providers do by mail.
//!
//! Consumers of the identity audit events on the bus that can concern this
//! (`civichub.auth.password.>`, `civichub.auth.mfa.>`, `civichub.auth.user.>`,
//! not the stream of logins and tokens); each notice's message id is derived
//! from the event's, so an event delivered twice notifies once.

use std::sync::Arc;

use async_trait::async_trait;
use civichub_store::Row;
use serde_json::Value;

use crate::messages::{MessageRequest, Recipient, Router};
use crate::{Consumer, Envelope, Handler, Outcome};

/// Sends the notices of sign-in changes.
pub struct AccountNotices {
    router: Arc<Router>,
}

impl std::fmt::Debug for AccountNotices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountNotices")
    }
}

/// What the person reads about `event`, if it is one they should hear of.
fn text(event: &str, detail: &Value, when: &str) -> Option<String> {
    let provider = match detail["provider"].as_str() {
        Some("dingtalk") => "钉钉".to_owned(),
        Some(other) => other.to_owned(),
        None => String::new(),
    };
    let what = match event {
        "password.changed" => "您的统一身份认证密码已修改".to_owned(),
        "mfa.enrolled" if detail["factor"] == "passkey" => format!("您的账号已添加通行密钥「{}」", detail["name"].as_str().unwrap_or_default()),
        "mfa.removed" if detail["factor"] == "passkey" => format!("您的账号已删除通行密钥「{}」", detail["name"].as_str().unwrap_or_default()),
        "mfa.enrolled" => "您的账号已启用两步验证".to_owned(),
        "mfa.removed" => "您的账号已停用两步验证".to_owned(),
        "mfa.reset" => "管理员已重置您账号的两步验证".to_owned(),
        "user.linked" => format!("您的账号已关联{provider}登录"),
        "user.unlinked" => format!("您的账号已解除{provider}登录关联"),
        _ => return None,
    };
    Some(format!("【统一身份认证】{what}（{when}）。如非本人操作，请立即修改密码并联系本单位信息化管理员。"))
}

impl AccountNotices {
    /// Registers the consumer on the router's bus (before the bus starts).
    pub fn register(router: Arc<Router>) {
        let bus = router.bus().clone();
        let handler = Arc::new(AccountNotices { router });
        for (name, subject) in [
            ("account-notices-password", "civichub.auth.password.>"),
            ("account-notices-mfa", "civichub.auth.mfa.>"),
            ("account-notices-links", "civichub.auth.user.>"),
        ] {
            bus.register(Consumer::new(name, subject, handler.clone()));
        }
    }
}

#[async_trait]
impl Handler for AccountNotices {
    async fn handle(&self, env: &Envelope, _delivery: u32) -> Outcome {
        let p: Value = match env.payload() {
            Ok(p) => p,
            Err(e) => return Outcome::reject(format!("not an audit event: {e}")),
        };
        let event = p["event"].as_str().unwrap_or_default();
        let when = civichub_identity::beijing(p["at"].as_i64().unwrap_or_default());
        let (Some(text), Some(user_id)) = (text(event, &p["detail"], &when), p["user_id"].as_str()) else { return Outcome::Ack };
        let username: Option<String> = match sqlx::query("SELECT username FROM users WHERE id = $1").bind(user_id).fetch_optional(self.router.bus().db().pool()).await {
            Ok(row) => row.and_then(|r| r.try_get("username").ok()),
            Err(e) => return Outcome::retry(format!("database: {e}")),
        };
        let Some(username) = username else { return Outcome::Ack };
        let req = MessageRequest { to: Recipient::User(username), channel: None, text, template: None, params: None, urgent: false };
        match self.router.submit_once(&format!("account-notice-{}", env.id), req, Some("civichub/identity"), Some(&env.trace_id)).await {
            Ok(_) => Outcome::Ack,
            // No way to reach the person (no DingTalk, no phone): nothing a retry changes.
            Err(crate::Error::Invalid(why)) => {
                tracing::info!("account notice for {event} not sent: {why}");
                Outcome::Ack
            }
            Err(e) => Outcome::retry(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_to_sign_in_are_told_and_other_events_are_not() {
        let t = text("user.linked", &serde_json::json!({"provider": "dingtalk"}), "2026-11-29 10:00").unwrap();
        assert!(t.contains("已关联钉钉登录") && t.contains("2026-11-29 10:00"), "{t}");
        assert!(text("password.changed", &Value::Null, "").unwrap().contains("密码已修改"));
        assert!(text("mfa.reset", &Value::Null, "").unwrap().contains("管理员已重置"));
        let passkey = serde_json::json!({ "factor": "passkey", "name": "办公电脑" });
        assert!(text("mfa.enrolled", &passkey, "").unwrap().contains("已添加通行密钥「办公电脑」"));
        assert!(text("mfa.removed", &passkey, "").unwrap().contains("已删除通行密钥「办公电脑」"));
        assert_eq!(text("login.succeeded", &Value::Null, ""), None);
        assert_eq!(text("token.issued", &Value::Null, ""), None);
    }
}
