//! Call-centre events, in the shape of the generic CTI push helpdesks use.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use crate::error::{Error, Result};

/// Largest event body accepted.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
const MAX_CALL_ID: usize = 128;
const MAX_NUMBER_DIGITS: usize = 32;
const MAX_NAME: usize = 64;
const MAX_CAUSE: usize = 128;
const MAX_URL: usize = 2048;

/// What happened to the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CallEventKind {
    /// The call arrived (inbound) or was placed (outbound): `newCall`.
    NewCall,
    /// Someone answered: `answer`.
    Answer,
    /// The call ended: `hangup`.
    Hangup,
}

impl CallEventKind {
    /// The name on the wire: `newCall`, `answer`, `hangup`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallEventKind::NewCall => "newCall",
            CallEventKind::Answer => "answer",
            CallEventKind::Hangup => "hangup",
        }
    }

    /// The last token of the event's subject: `new_call`, `answer`, `hangup`
    /// (snake case, like CivicHub's other subject tokens).
    pub fn subject_suffix(self) -> &'static str {
        match self {
            CallEventKind::NewCall => "new_call",
            CallEventKind::Answer => "answer",
            CallEventKind::Hangup => "hangup",
        }
    }
}

/// Which way the call goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// A citizen calls the hotline.
    Inbound,
    /// The centre calls out (call-backs, voice notifications).
    Outbound,
}

/// One call-centre event, validated.
///
/// A telephony bridge (FreeSWITCH event socket, Asterisk AMI, a vendor's CTI) posts
/// one JSON object per event:
///
/// ```json
/// {"event":"answer","callId":"c-1","from":"13800000000","to":"12345","direction":"inbound",
///  "agent":"8001","queue":"general","time":"2024-05-01T08:00:00+08:00"}
/// ```
///
/// `event` is `newCall`, `answer` or `hangup`; hang-ups may carry `cause` and
/// `recordingUrl`. The CTI push's `user` (a string or an array of agent ids) is
/// read as `agent`; `time` may be RFC 3339 or Unix seconds or milliseconds. Unknown
/// members are ignored. [`CallEvent`] serialises back to this shape, with `time`
/// in RFC 3339 (UTC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "Value")]
pub struct CallEvent {
    /// What happened.
    pub event: CallEventKind,
    /// The telephony system's id of the call, the same for all its events.
    pub call_id: String,
    /// Calling number: digits, optionally with a leading `+`.
    pub from: String,
    /// Called number: digits, optionally with a leading `+`.
    pub to: String,
    /// Inbound or outbound.
    pub direction: Direction,
    /// The agent (extension or agent id) on the call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The queue (skill group) the call went through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Where the recording is (hang-ups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_url: Option<Url>,
    /// Why the call ended (hang-ups), e.g. `NORMAL_CLEARING`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// When it happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
}

impl CallEvent {
    /// Reads and validates one event body.
    pub fn parse(body: &[u8]) -> Result<CallEvent> {
        if body.len() > MAX_EVENT_BYTES {
            return Err(Error::Invalid(format!("call event is {} bytes; at most {MAX_EVENT_BYTES} are accepted", body.len())));
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| Error::Invalid(format!("call event is not JSON: {e}")))?;
        CallEvent::try_from(value)
    }

    /// The last token of this event's subject: `new_call`, `answer` or `hangup`.
    pub fn subject_suffix(&self) -> &'static str {
        self.event.subject_suffix()
    }

    /// The event as JSON text, in the shape [`CallEvent::parse`] reads.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl TryFrom<Value> for CallEvent {
    type Error = Error;

    fn try_from(value: Value) -> Result<CallEvent> {
        let Value::Object(m) = value else {
            return Err(Error::Invalid("call event must be a JSON object".into()));
        };
        let event = match required_text(&m, "event")?.as_str() {
            "newCall" | "new_call" => CallEventKind::NewCall,
            "answer" => CallEventKind::Answer,
            "hangup" => CallEventKind::Hangup,
            other => return Err(Error::Invalid(format!("event {:?} is not newCall, answer or hangup", clip(other)))),
        };
        let call_id = required_text(&m, "callId")?;
        if call_id.chars().count() > MAX_CALL_ID || !call_id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Error::Invalid(format!("callId must be at most {MAX_CALL_ID} printable ASCII characters without spaces")));
        }
        let from = caller_number(&m)?;
        let to = phone_number(&m, "to")?;
        let direction = match required_text(&m, "direction")?.as_str() {
            "inbound" => Direction::Inbound,
            "outbound" => Direction::Outbound,
            other => return Err(Error::Invalid(format!("direction {:?} is not inbound or outbound", clip(other)))),
        };
        let agent = match optional_text(&m, "agent", MAX_NAME)? {
            Some(a) => Some(a),
            None => agent_from_user(&m)?,
        };
        let queue = optional_text(&m, "queue", MAX_NAME)?;
        let cause = optional_text(&m, "cause", MAX_CAUSE)?;
        let recording_url = match optional_text(&m, "recordingUrl", MAX_URL)? {
            None => None,
            Some(s) => {
                let url = Url::parse(&s).map_err(|e| Error::Invalid(format!("recordingUrl is not a URL: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(Error::Invalid("recordingUrl must be http or https".into()));
                }
                Some(url)
            }
        };
        let time = time(&m)?;
        Ok(CallEvent { event, call_id, from, to, direction, agent, queue, recording_url, cause, time })
    }
}

/// At most 40 characters of untrusted text, for error messages.
fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// A member that must be a non-empty string (numbers are taken as their digits).
fn required_text(m: &Map<String, Value>, key: &str) -> Result<String> {
    match m.get(key) {
        None | Some(Value::Null) => Err(Error::Invalid(format!("{key} is missing"))),
        Some(Value::String(s)) if s.trim().is_empty() => Err(Error::Invalid(format!("{key} is empty"))),
        Some(Value::String(s)) => Ok(s.trim().to_owned()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(Error::Invalid(format!("{key} must be a string"))),
    }
}

/// A member that may be absent, null or empty; otherwise a string of at most `max`
/// characters without control characters.
fn optional_text(m: &Map<String, Value>, key: &str, max: usize) -> Result<Option<String>> {
    let s = match m.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(Error::Invalid(format!("{key} must be a string"))),
    };
    check_text(key, &s, max)?;
    Ok(if s.is_empty() { None } else { Some(s) })
}

fn check_text(key: &str, s: &str, max: usize) -> Result<()> {
    if s.chars().count() > max {
        return Err(Error::Invalid(format!("{key} is longer than {max} characters")));
    }
    if s.chars().any(char::is_control) {
        return Err(Error::Invalid(format!("{key} contains control characters")));
    }
    Ok(())
}

/// The CTI push's `user`: an agent id, or an array whose first entry is the agent.
fn agent_from_user(m: &Map<String, Value>) -> Result<Option<String>> {
    let first = match m.get("user") {
        Some(Value::Array(users)) => users.first().cloned(),
        other => other.cloned(),
    };
    let mut wrapped = Map::new();
    if let Some(v) = first {
        wrapped.insert("user".into(), v);
    }
    optional_text(&wrapped, "user", MAX_NAME)
}

/// A required phone number: an optional leading `+` and 1 to 32 digits.
fn phone_number(m: &Map<String, Value>, key: &str) -> Result<String> {
    let s = required_text(m, key)?;
    if !is_phone_number(&s) {
        return Err(Error::Invalid(format!("{key} {:?} is not a phone number (digits, optionally a leading +, at most {MAX_NUMBER_DIGITS})", clip(&s))));
    }
    Ok(s)
}

/// The calling number, or `anonymous` for a withheld one (exchanges send
/// `anonymous`, `unknown`, `private` or `withheld` as the caller id then).
fn caller_number(m: &Map<String, Value>) -> Result<String> {
    let s = required_text(m, "from")?;
    if matches!(s.to_ascii_lowercase().as_str(), "anonymous" | "unknown" | "private" | "withheld" | "restricted") {
        return Ok(WITHHELD.to_owned());
    }
    phone_number(m, "from")
}

/// The `from` of a call whose caller withheld the number.
pub const WITHHELD: &str = "anonymous";

/// Whether `s` is an optional leading `+` and 1 to 32 ASCII digits.
pub(crate) fn is_phone_number(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    !digits.is_empty() && digits.len() <= MAX_NUMBER_DIGITS && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `time`: RFC 3339 text, or Unix seconds or milliseconds (a number or digits).
fn time(m: &Map<String, Value>) -> Result<Option<DateTime<Utc>>> {
    let bad = || Error::Invalid("time must be RFC 3339 or Unix seconds or milliseconds".into());
    let unix = |n: i64| {
        // Values beyond year 5138 in seconds are taken as milliseconds.
        let dt = if n.unsigned_abs() >= 100_000_000_000 { DateTime::from_timestamp_millis(n) } else { DateTime::from_timestamp(n, 0) };
        dt.ok_or_else(bad)
    };
    match m.get("time") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(n) => unix(n).map(Some),
            Err(_) => DateTime::parse_from_rfc3339(s.trim()).map(|t| Some(t.with_timezone(&Utc))).map_err(|_| bad()),
        },
        Some(Value::Number(n)) => unix(n.as_i64().ok_or_else(bad)?).map(Some),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers() {
        for ok in ["12345", "+8613800000000", "8001", "0"] {
            assert!(is_phone_number(ok), "{ok}");
        }
        for bad in ["", "+", "138-0000", "abc", "++1", "1+", " 1", &"1".repeat(33)] {
            assert!(!is_phone_number(bad), "{bad}");
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(CallEventKind::NewCall.subject_suffix(), "new_call");
        assert_eq!(CallEventKind::NewCall.as_str(), "newCall");
        assert_eq!(serde_json::to_string(&CallEventKind::NewCall).expect("json"), r#""newCall""#);
    }
}
