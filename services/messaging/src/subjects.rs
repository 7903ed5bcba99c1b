//! Every NATS subject and JetStream stream CivicHub uses, in one place.
//!
//! Subjects are `civichub.<area>.<kind>[.<event>]`; other city systems may
//! subscribe to any of them and publish to the `…in` subjects. The table in
//! ARCHITECTURE.md lists them; keep the two in step.

use std::time::Duration;

/// Prefix of every subject.
pub const ROOT: &str = "civichub";

/// A hotline ticket event, e.g. `civichub.hotline.ticket.created`.
pub fn ticket(event: &str) -> String {
    format!("civichub.hotline.ticket.{}", token(event))
}

/// Outbound SMS to send (one envelope per attempt).
pub const SMS_OUT: &str = "civichub.msg.sms.out";
/// Citizens' SMS (replies and new messages) received by the gateway.
pub const SMS_IN: &str = "civichub.msg.sms.in";
/// Delivery reports for SMS sent.
pub const SMS_RECEIPT: &str = "civichub.msg.sms.receipt";
/// DingTalk work notices to send.
pub const DINGTALK_OUT: &str = "civichub.msg.dingtalk.out";
/// Voice notifications to place.
pub const VOICE_OUT: &str = "civichub.msg.voice.out";
/// A routed message changed status (queued, sent, delivered, failed, dead).
pub const MESSAGE_STATUS: &str = "civichub.msg.status";

/// A call-centre event, e.g. `civichub.fusion.call.answer`.
pub fn call(event: &str) -> String {
    format!("civichub.fusion.call.{}", token(event))
}

/// An identity audit event, e.g. `civichub.auth.login.succeeded` for the
/// audit record `login.succeeded`.
pub fn auth(event: &str) -> String {
    let tokens: Vec<String> = event.split('.').map(token).collect();
    format!("civichub.auth.{}", tokens.join("."))
}

/// Where a consumer's dead letters go: `civichub.dead.<consumer>`.
pub fn dead(consumer: &str) -> String {
    format!("civichub.dead.{}", token(consumer))
}

/// One subject token: letters, digits, `_` and `-`; anything else becomes `_`.
fn token(s: &str) -> String {
    let t: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    if t.is_empty() { "_".into() } else { t }
}

/// Whether `subject` matches the NATS `filter` (`*` one token, `>` the rest).
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A JetStream stream CivicHub creates.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    /// Stream name.
    pub name: &'static str,
    /// Subjects it captures.
    pub subjects: &'static [&'static str],
    /// How long messages are kept.
    pub max_age: Duration,
}

/// Events: tickets, calls, identity. Kept 30 days for other systems to replay.
pub const EVENTS: StreamSpec = StreamSpec {
    name: "CIVICHUB_EVENTS",
    subjects: &["civichub.hotline.>", "civichub.fusion.>", "civichub.auth.>"],
    max_age: Duration::from_secs(30 * 86400),
};

/// Messages to and from people: SMS, DingTalk, voice, receipts, status.
pub const MESSAGES: StreamSpec = StreamSpec {
    name: "CIVICHUB_MESSAGES",
    subjects: &["civichub.msg.>"],
    max_age: Duration::from_secs(14 * 86400),
};

/// Dead letters, kept 90 days for inspection and replay.
pub const DEAD_LETTERS: StreamSpec = StreamSpec {
    name: "CIVICHUB_DEAD_LETTERS",
    subjects: &["civichub.dead.>"],
    max_age: Duration::from_secs(90 * 86400),
};

/// Every stream.
pub const STREAMS: [StreamSpec; 3] = [EVENTS, MESSAGES, DEAD_LETTERS];

/// JetStream's duplicate window: a re-published outbox row with the same
/// `Nats-Msg-Id` inside it is stored once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_nats() {
        assert!(matches("civichub.msg.>", "civichub.msg.sms.out"));
        assert!(!matches("civichub.msg.>", "civichub.msg"));
        assert!(matches("civichub.fusion.call.*", "civichub.fusion.call.answer"));
        assert!(!matches("civichub.fusion.call.*", "civichub.fusion.call.answer.x"));
        assert!(matches(SMS_OUT, SMS_OUT));
        assert!(!matches(SMS_OUT, SMS_IN));
    }

    #[test]
    fn every_subject_is_in_exactly_one_stream() {
        for subject in [ticket("created"), SMS_OUT.into(), SMS_IN.into(), SMS_RECEIPT.into(), DINGTALK_OUT.into(), VOICE_OUT.into(), MESSAGE_STATUS.into(), call("new_call"), auth("login"), dead("sms-sender")] {
            let n = STREAMS.iter().filter(|s| s.subjects.iter().any(|f| matches(f, &subject))).count();
            assert_eq!(n, 1, "{subject}");
        }
    }

    #[test]
    fn tokens_cannot_inject_wildcards() {
        assert_eq!(auth("a.b>*"), "civichub.auth.a.b__");
        assert_eq!(auth("login..x"), "civichub.auth.login._.x");
    }
}
