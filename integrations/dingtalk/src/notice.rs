//! Work notifications (工作通知): send, then ask how the sending went.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::DingTalk;
use crate::error::{Error, Result};
use crate::transport::{ApiRequest, Gateway, as_i64};

/// Most users one work notice may name.
pub const MAX_USERIDS: usize = 100;
/// Most departments one work notice may name.
pub const MAX_DEPT_IDS: usize = 20;
/// Largest `msg` DingTalk accepts, in bytes of its JSON.
pub const MAX_MSG_BYTES: usize = 2048;

/// A work notice: who gets it and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkNotice {
    /// Recipients by DingTalk userid (at most 100).
    pub userids: Vec<String>,
    /// Recipient departments (at most 20); DingTalk expands them to their members.
    pub dept_ids: Vec<i64>,
    /// The message.
    pub msg: WorkMessage,
}

/// The body of a work notice, one of DingTalk's message types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkMessage {
    /// Plain text.
    Text {
        /// The text.
        content: String,
    },
    /// DingTalk markdown; `title` shows in the conversation list.
    Markdown {
        /// Title in the conversation list.
        title: String,
        /// Markdown text.
        text: String,
    },
    /// A link card.
    Link {
        /// Where a tap goes.
        message_url: String,
        /// Picture URL or media id.
        pic_url: String,
        /// Title.
        title: String,
        /// Summary text.
        text: String,
    },
    /// A card with markdown and one or more buttons.
    ActionCard {
        /// Title.
        title: String,
        /// Markdown body.
        markdown: String,
        /// Its button(s).
        action: CardAction,
    },
}

/// The buttons of an action card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CardAction {
    /// One button spanning the card.
    Single {
        /// Button text.
        title: String,
        /// Where it goes.
        url: String,
    },
    /// Several buttons.
    Buttons {
        /// Stacked vertically (otherwise side by side).
        vertical: bool,
        /// The buttons.
        buttons: Vec<CardButton>,
    },
}

/// One button of an action card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardButton {
    /// Button text.
    pub title: String,
    /// Where it goes.
    pub action_url: String,
}

impl WorkMessage {
    /// Plain text.
    pub fn text(content: impl Into<String>) -> WorkMessage {
        WorkMessage::Text { content: content.into() }
    }

    /// Markdown with a title.
    pub fn markdown(title: impl Into<String>, text: impl Into<String>) -> WorkMessage {
        WorkMessage::Markdown { title: title.into(), text: text.into() }
    }

    /// DingTalk's `msgtype` of this message.
    pub fn msgtype(&self) -> &'static str {
        match self {
            WorkMessage::Text { .. } => "text",
            WorkMessage::Markdown { .. } => "markdown",
            WorkMessage::Link { .. } => "link",
            WorkMessage::ActionCard { .. } => "action_card",
        }
    }

    /// The `msg` object DingTalk expects.
    pub fn to_json(&self) -> Value {
        match self {
            WorkMessage::Text { content } => json!({"msgtype": "text", "text": {"content": content}}),
            WorkMessage::Markdown { title, text } => json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}}),
            WorkMessage::Link { message_url, pic_url, title, text } => {
                json!({"msgtype": "link", "link": {"messageUrl": message_url, "picUrl": pic_url, "title": title, "text": text}})
            }
            WorkMessage::ActionCard { title, markdown, action } => {
                let card = match action {
                    CardAction::Single { title: t, url } => json!({"title": title, "markdown": markdown, "single_title": t, "single_url": url}),
                    CardAction::Buttons { vertical, buttons } => {
                        let list: Vec<Value> = buttons.iter().map(|b| json!({"title": b.title, "action_url": b.action_url})).collect();
                        json!({"title": title, "markdown": markdown, "btn_orientation": if *vertical { "0" } else { "1" }, "btn_json_list": list})
                    }
                };
                json!({"msgtype": "action_card", "action_card": card})
            }
        }
    }

    /// Reads a `msg` object (the inverse of [`WorkMessage::to_json`]).
    pub fn from_json(msg: &Value) -> Result<WorkMessage> {
        let msgtype = msg.get("msgtype").and_then(Value::as_str).ok_or_else(|| Error::Invalid("msg.msgtype is missing".into()))?;
        let body = msg.get(msgtype).filter(|b| b.is_object()).ok_or_else(|| Error::Invalid(format!("msg.{msgtype} is missing")))?;
        let field = |name: &str| -> Result<String> {
            body.get(name).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| Error::Invalid(format!("msg.{msgtype}.{name} is missing")))
        };
        Ok(match msgtype {
            "text" => WorkMessage::Text { content: field("content")? },
            "markdown" => WorkMessage::Markdown { title: field("title")?, text: field("text")? },
            "link" => WorkMessage::Link { message_url: field("messageUrl")?, pic_url: field("picUrl")?, title: field("title")?, text: field("text")? },
            "action_card" => {
                let action = if let Some(list) = body.get("btn_json_list").and_then(Value::as_array) {
                    let buttons = list
                        .iter()
                        .map(|b| {
                            let get = |k: &str| b.get(k).and_then(Value::as_str).map(str::to_owned);
                            match (get("title"), get("action_url")) {
                                (Some(title), Some(action_url)) => Ok(CardButton { title, action_url }),
                                _ => Err(Error::Invalid("msg.action_card.btn_json_list needs title and action_url".into())),
                            }
                        })
                        .collect::<Result<Vec<_>>>()?;
                    CardAction::Buttons { vertical: body.get("btn_orientation").and_then(Value::as_str) == Some("0"), buttons }
                } else {
                    CardAction::Single { title: field("single_title")?, url: field("single_url")? }
                };
                WorkMessage::ActionCard { title: field("title")?, markdown: field("markdown")?, action }
            }
            other => return Err(Error::Invalid(format!("msg.msgtype {other:?} is not text, markdown, link or action_card"))),
        })
    }

    /// Refuses empty required fields.
    fn check(&self) -> Result<()> {
        let empty = |what: &str, s: &str| if s.trim().is_empty() { Err(Error::Invalid(format!("work notice {what} is empty"))) } else { Ok(()) };
        match self {
            WorkMessage::Text { content } => empty("text", content),
            WorkMessage::Markdown { title, text } => empty("title", title).and(empty("markdown text", text)),
            WorkMessage::Link { message_url, pic_url, title, text } => {
                empty("link URL", message_url).and(empty("picture", pic_url)).and(empty("title", title)).and(empty("link text", text))
            }
            WorkMessage::ActionCard { title, markdown, action } => {
                empty("title", title)?;
                empty("card markdown", markdown)?;
                match action {
                    CardAction::Single { title, url } => empty("button title", title).and(empty("button URL", url)),
                    CardAction::Buttons { buttons, .. } if buttons.is_empty() => Err(Error::Invalid("action card has no buttons".into())),
                    CardAction::Buttons { buttons, .. } => buttons.iter().try_for_each(|b| empty("button title", &b.title).and(empty("button URL", &b.action_url))),
                }
            }
        }
    }
}

impl WorkNotice {
    /// Checks DingTalk's limits and returns the `msg` JSON to send.
    pub fn validate(&self) -> Result<String> {
        if self.userids.is_empty() && self.dept_ids.is_empty() {
            return Err(Error::Invalid("work notice has no recipients (userids or dept_ids)".into()));
        }
        if self.userids.len() > MAX_USERIDS {
            return Err(Error::Invalid(format!("work notice names {} users; DingTalk allows at most {MAX_USERIDS} per call", self.userids.len())));
        }
        if self.dept_ids.len() > MAX_DEPT_IDS {
            return Err(Error::Invalid(format!("work notice names {} departments; DingTalk allows at most {MAX_DEPT_IDS} per call", self.dept_ids.len())));
        }
        if let Some(bad) = self.userids.iter().find(|u| u.trim().is_empty() || u.contains(',') || u.len() > 64) {
            return Err(Error::Invalid(format!("{bad:?} is not a DingTalk userid")));
        }
        if let Some(bad) = self.dept_ids.iter().find(|d| **d <= 0) {
            return Err(Error::Invalid(format!("{bad} is not a DingTalk department id")));
        }
        self.msg.check()?;
        let msg = self.msg.to_json().to_string();
        if msg.len() > MAX_MSG_BYTES {
            return Err(Error::Invalid(format!("work notice msg is {} bytes of JSON; DingTalk allows at most {MAX_MSG_BYTES}", msg.len())));
        }
        Ok(msg)
    }
}

/// How a work notice went, per recipient (DingTalk keeps it for a limited time).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendResult {
    /// Delivered and read.
    pub read: Vec<String>,
    /// Delivered, not read yet.
    pub unread: Vec<String>,
    /// Delivery failed.
    pub failed: Vec<String>,
    /// Not sent because of DingTalk's limits (same content to the same user twice in
    /// a day, too many notices to one user in a day, rate limits).
    pub forbidden: Vec<String>,
    /// Not userids of this organisation.
    pub invalid: Vec<String>,
    /// Not departments of this organisation.
    pub invalid_dept_ids: Vec<i64>,
}

/// Where DingTalk is with sending a work notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendProgress {
    /// 0–100.
    pub percent: u8,
    /// The task's state.
    pub status: SendStatus,
}

/// The state of a work notice task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendStatus {
    /// Not started (0).
    NotStarted,
    /// Sending (1).
    InProgress,
    /// Finished (2).
    Done,
    /// A status this adapter does not know.
    Other(i64),
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawSendResult {
    read_user_id_list: Vec<String>,
    unread_user_id_list: Vec<String>,
    failed_user_id_list: Vec<String>,
    forbidden_user_id_list: Vec<String>,
    forbidden_list: Vec<RawForbidden>,
    invalid_user_id_list: Vec<String>,
    invalid_dept_id_list: Vec<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawForbidden {
    userid: String,
}

impl From<RawSendResult> for SendResult {
    fn from(r: RawSendResult) -> SendResult {
        let mut forbidden = r.forbidden_user_id_list;
        for f in r.forbidden_list {
            if !f.userid.is_empty() && !forbidden.contains(&f.userid) {
                forbidden.push(f.userid);
            }
        }
        SendResult {
            read: r.read_user_id_list,
            unread: r.unread_user_id_list,
            failed: r.failed_user_id_list,
            forbidden,
            invalid: r.invalid_user_id_list,
            invalid_dept_ids: r.invalid_dept_id_list.iter().filter_map(as_i64).collect(),
        }
    }
}

impl DingTalk {
    /// Sends a work notice as the app's agent and returns DingTalk's task id.
    /// Delivery is asynchronous: ask [`DingTalk::send_result`] how it went.
    pub async fn send_work_notice(&self, notice: &WorkNotice) -> Result<i64> {
        let msg = notice.validate()?;
        let msg: Value = serde_json::from_str(&msg).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut body = json!({"agent_id": self.config.agent_id, "msg": msg});
        if !notice.userids.is_empty() {
            body["userid_list"] = Value::String(notice.userids.join(","));
        }
        if !notice.dept_ids.is_empty() {
            body["dept_id_list"] = Value::String(notice.dept_ids.iter().map(i64::to_string).collect::<Vec<_>>().join(","));
        }
        let path = "/topapi/message/corpconversation/asyncsend_v2";
        let answer = self.transport.call(&ApiRequest::post(Gateway::Oapi, path, body)).await?;
        let task_id = answer.get("task_id").and_then(as_i64).ok_or_else(|| Error::Transport(format!("{path} answered without a task_id")))?;
        tracing::debug!(task_id, users = notice.userids.len(), depts = notice.dept_ids.len(), "DingTalk work notice accepted");
        Ok(task_id)
    }

    /// Who read, has not read, or did not get the work notice `task_id`.
    pub async fn send_result(&self, task_id: i64) -> Result<SendResult> {
        let path = "/topapi/message/corpconversation/getsendresult";
        let mut answer = self.transport.call(&ApiRequest::post(Gateway::Oapi, path, json!({"agent_id": self.config.agent_id, "task_id": task_id}))).await?;
        let raw = answer.get_mut("send_result").map(Value::take).unwrap_or(Value::Null);
        let raw: RawSendResult = if raw.is_null() { RawSendResult::default() } else { crate::client::decode(path, raw)? };
        Ok(raw.into())
    }

    /// How far DingTalk is with sending the work notice `task_id`.
    pub async fn send_progress(&self, task_id: i64) -> Result<SendProgress> {
        let path = "/topapi/message/corpconversation/getsendprogress";
        let answer = self.transport.call(&ApiRequest::post(Gateway::Oapi, path, json!({"agent_id": self.config.agent_id, "task_id": task_id}))).await?;
        let progress = answer.get("progress").ok_or_else(|| Error::Transport(format!("{path} answered without progress")))?;
        let percent = progress.get("progress_in_percent").and_then(as_i64).unwrap_or(0).clamp(0, 100) as u8;
        let status = match progress.get("status").and_then(as_i64).unwrap_or(-1) {
            0 => SendStatus::NotStarted,
            1 => SendStatus::InProgress,
            2 => SendStatus::Done,
            other => SendStatus::Other(other),
        };
        Ok(SendProgress { percent, status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(msg: WorkMessage) -> WorkNotice {
        WorkNotice { userids: vec!["u1".into()], dept_ids: vec![], msg }
    }

    #[test]
    fn messages_round_trip() {
        let all = [
            WorkMessage::text("你好"),
            WorkMessage::markdown("工单", "# 新工单\n请处理"),
            WorkMessage::Link { message_url: "https://x/1".into(), pic_url: "@lADO".into(), title: "t".into(), text: "x".into() },
            WorkMessage::ActionCard { title: "t".into(), markdown: "m".into(), action: CardAction::Single { title: "查看".into(), url: "https://x".into() } },
            WorkMessage::ActionCard {
                title: "t".into(),
                markdown: "m".into(),
                action: CardAction::Buttons { vertical: true, buttons: vec![CardButton { title: "a".into(), action_url: "https://a".into() }] },
            },
        ];
        for m in all {
            assert_eq!(WorkMessage::from_json(&m.to_json()).expect("parses"), m);
        }
        assert_eq!(WorkMessage::text("x").to_json().to_string(), r#"{"msgtype":"text","text":{"content":"x"}}"#);
    }

    #[test]
    fn limits_are_enforced() {
        assert!(notice(WorkMessage::text("ok")).validate().is_ok());
        let err = notice(WorkMessage::text("长".repeat(700))).validate().expect_err("too big");
        assert!(err.to_string().contains("at most 2048"), "{err}");
        let mut n = notice(WorkMessage::text("x"));
        n.userids = (0..101).map(|i| format!("u{i}")).collect();
        assert!(n.validate().expect_err("too many").to_string().contains("at most 100"));
        n.userids = vec![];
        assert!(n.validate().is_err());
        n.dept_ids = (1..=21).collect();
        assert!(n.validate().expect_err("too many").to_string().contains("at most 20"));
        n.dept_ids = vec![1];
        assert!(n.validate().is_ok());
        n.userids = vec!["a,b".into()];
        assert!(n.validate().is_err());
        assert!(notice(WorkMessage::text("  ")).validate().is_err());
        assert!(WorkMessage::from_json(&json!({"msgtype": "oa", "oa": {}})).is_err());
        assert!(WorkMessage::from_json(&json!({"msgtype": "text"})).is_err());
    }

    #[test]
    fn send_result_merges_forbidden_lists() {
        let raw: RawSendResult = serde_json::from_value(json!({
            "read_user_id_list": ["a"], "forbidden_user_id_list": ["b"],
            "forbidden_list": [{"code": "143105", "count": 1, "userid": "c"}, {"userid": "b"}],
            "invalid_dept_id_list": [9, "10"]
        }))
        .expect("decodes");
        let r: SendResult = raw.into();
        assert_eq!(r.read, ["a"]);
        assert_eq!(r.forbidden, ["b", "c"]);
        assert_eq!(r.invalid_dept_ids, [9, 10]);
    }
}
