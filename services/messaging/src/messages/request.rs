//! `POST /api/messages` bodies, parsed into checked values at the edge.

use serde::Deserialize;
use serde_json::Value;

use crate::{Error, Result};

/// A delivery channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// SMS through the configured gateway (CMPP or cloud API).
    Sms,
    /// DingTalk work notice.
    DingTalk,
    /// Voice notification (text to speech call).
    Voice,
}

impl ChannelKind {
    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Sms => "sms",
            ChannelKind::DingTalk => "dingtalk",
            ChannelKind::Voice => "voice",
        }
    }

    /// Parses an API or database name.
    pub fn parse(s: &str) -> Option<ChannelKind> {
        match s {
            "sms" => Some(ChannelKind::Sms),
            "dingtalk" => Some(ChannelKind::DingTalk),
            "voice" => Some(ChannelKind::Voice),
            _ => None,
        }
    }

    /// The subject its send orders go to.
    pub fn subject(self) -> &'static str {
        match self {
            ChannelKind::Sms => crate::subjects::SMS_OUT,
            ChannelKind::DingTalk => crate::subjects::DINGTALK_OUT,
            ChannelKind::Voice => crate::subjects::VOICE_OUT,
        }
    }

    /// The longest text the channel carries, in characters.
    pub fn max_chars(self) -> usize {
        match self {
            // Seven concatenated UCS-2 segments of 67 characters.
            ChannelKind::Sms => 469,
            // DingTalk caps a work notice's msg at 2048 bytes; leave room for the JSON around it.
            ChannelKind::DingTalk => 600,
            // A spoken notice longer than this is not listened to.
            ChannelKind::Voice => 200,
        }
    }
}

/// A mainland China mobile number: 11 digits starting 13–19.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    /// Accepts `13812345678`, `+86 138-1234-5678`, `86 13812345678`.
    pub fn parse(input: &str) -> Result<Phone> {
        let digits: String = input.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        let digits = digits.strip_prefix("+86").or_else(|| digits.strip_prefix("0086")).unwrap_or(&digits);
        let digits = if digits.len() == 13 { digits.strip_prefix("86").unwrap_or(digits) } else { digits };
        let ok = digits.len() == 11
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits.starts_with('1')
            && (b'3'..=b'9').contains(&digits.as_bytes()[1]);
        if ok {
            Ok(Phone(digits.to_owned()))
        } else {
            Err(Error::Invalid(format!("{input:?} is not a mainland China mobile number (11 digits starting 13–19)")))
        }
    }

    /// The 11 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who a message is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// A CivicHub user, by username.
    User(String),
    /// A phone number (a citizen).
    Phone(Phone),
    /// A DingTalk department, by its DingTalk department id.
    Department(i64),
}

impl Recipient {
    /// `user`, `phone` or `department`.
    pub fn kind(&self) -> &'static str {
        match self {
            Recipient::User(_) => "user",
            Recipient::Phone(_) => "phone",
            Recipient::Department(_) => "department",
        }
    }

    /// The value as stored.
    pub fn value(&self) -> String {
        match self {
            Recipient::User(u) => u.clone(),
            Recipient::Phone(p) => p.as_str().to_owned(),
            Recipient::Department(d) => d.to_string(),
        }
    }
}

/// A checked message request.
#[derive(Clone, Debug)]
pub struct MessageRequest {
    /// Who.
    pub to: Recipient,
    /// Which channel; `None` is `auto`.
    pub channel: Option<ChannelKind>,
    /// The text, as the recipient reads or hears it.
    pub text: String,
    /// A gateway template name, for gateways that send by template.
    pub template: Option<String>,
    /// Template parameters.
    pub params: Option<Value>,
    /// Also call (voice), and fall back sooner.
    pub urgent: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    to: Value,
    #[serde(default)]
    channel: Option<String>,
    text: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default)]
    urgent: Option<bool>,
}

impl MessageRequest {
    /// Parses and checks a JSON body; every error names the field.
    pub fn parse(body: &[u8]) -> Result<MessageRequest> {
        let body: Body = serde_json::from_slice(body).map_err(|e| Error::Invalid(format!("malformed JSON body: {e}")))?;
        let to = match &body.to {
            Value::Object(o) if o.len() == 1 => match o.iter().next() {
                Some((k, Value::String(v))) if k == "user" && !v.trim().is_empty() => Recipient::User(v.trim().to_owned()),
                Some((k, Value::String(v))) if k == "phone" => Recipient::Phone(Phone::parse(v)?),
                Some((k, v)) if k == "department" => {
                    let id = v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())).filter(|n| *n > 0);
                    Recipient::Department(id.ok_or_else(|| Error::Invalid("to.department must be a DingTalk department id (a positive integer)".into()))?)
                }
                _ => return Err(Error::Invalid("to must be {\"user\": USERNAME}, {\"phone\": NUMBER} or {\"department\": ID}".into())),
            },
            _ => return Err(Error::Invalid("to must be {\"user\": USERNAME}, {\"phone\": NUMBER} or {\"department\": ID}".into())),
        };
        let channel = match body.channel.as_deref().unwrap_or("auto") {
            "auto" => None,
            other => Some(ChannelKind::parse(other).ok_or_else(|| Error::Invalid(format!("channel must be auto, sms, dingtalk or voice, not {other:?}")))?),
        };
        let text = body.text.map(|t| t.trim().to_owned()).unwrap_or_default();
        if text.is_empty() {
            return Err(Error::Invalid("text is required".into()));
        }
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(Error::Invalid("text may not contain control characters other than line breaks".into()));
        }
        if let Some(t) = &body.template
            && (t.is_empty() || t.len() > 64 || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            return Err(Error::Invalid("template must be 1–64 letters, digits, '_' or '-'".into()));
        }
        if let Some(p) = &body.params
            && !p.is_object()
        {
            return Err(Error::Invalid("params must be an object".into()));
        }
        Ok(MessageRequest { to, channel, text, template: body.template, params: body.params, urgent: body.urgent.unwrap_or(false) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_mainland_mobiles() {
        assert_eq!(Phone::parse("13812345678").unwrap().as_str(), "13812345678");
        assert_eq!(Phone::parse("+86 138-1234-5678").unwrap().as_str(), "13812345678");
        assert_eq!(Phone::parse("8613812345678").unwrap().as_str(), "13812345678");
        for bad in ["12812345678", "1381234567", "138123456789", "0576-88888888", "1381234567x", ""] {
            assert!(Phone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bodies_are_checked_field_by_field() {
        let ok = MessageRequest::parse(r#"{"to":{"phone":"13812345678"},"text":"您好","urgent":true}"#.as_bytes()).unwrap();
        assert_eq!(ok.to, Recipient::Phone(Phone("13812345678".into())));
        assert!(ok.urgent && ok.channel.is_none());
        let dept = MessageRequest::parse(br#"{"to":{"department":"12"},"channel":"dingtalk","text":"x"}"#).unwrap();
        assert_eq!(dept.to, Recipient::Department(12));
        for (body, needle) in [
            (&br#"{"to":{"phone":"123"},"text":"x"}"#[..], "mobile"),
            (br#"{"to":{"email":"a@b"},"text":"x"}"#, "to must be"),
            (br#"{"to":{"user":"a"},"channel":"fax","text":"x"}"#, "channel"),
            (br#"{"to":{"user":"a"},"text":"  "}"#, "text is required"),
            (br#"{"to":{"user":"a"},"text":"x","params":[1]}"#, "params"),
            (br#"{"to":{"user":"a"},"text":"x","extra":1}"#, "malformed"),
            (br#"{"to":{"department":-1},"text":"x"}"#, "department"),
            (b"nope", "malformed"),
        ] {
            let e = MessageRequest::parse(body).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }
}
