//! Voice notifications (text-to-speech call-outs) through a voice gateway.
//! See [`VoiceGateway`] for the contract.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use crate::error::{Error, Result};
use crate::event::is_phone_number;

/// Largest answer body read from the gateway.
const MAX_BODY: usize = 1 << 20;
/// Longest text to speak, in characters.
pub const MAX_TTS_CHARS: usize = 500;
/// Longest `reference` (`outId`), in characters.
pub const MAX_REFERENCE: usize = 64;

/// The gateway's API key; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// The key itself, to put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl From<&str> for ApiKey {
    fn from(s: &str) -> ApiKey {
        ApiKey::new(s)
    }
}

impl From<String> for ApiKey {
    fn from(s: String) -> ApiKey {
        ApiKey(s)
    }
}

/// Where the voice gateway is and how to use it.
#[derive(Clone, Debug)]
pub struct VoiceConfig {
    /// The gateway, e.g. `https://voice.city.example/`.
    pub base_url: Url,
    /// Bearer key.
    pub api_key: ApiKey,
    /// The number the called person sees (e.g. `12345`).
    pub caller_number: String,
    /// Whole-request timeout (10 s).
    pub timeout: Duration,
}

impl VoiceConfig {
    /// A configuration with a 10 s timeout.
    pub fn new(base_url: Url, api_key: impl Into<ApiKey>, caller_number: impl Into<String>) -> VoiceConfig {
        VoiceConfig { base_url, api_key: api_key.into(), caller_number: caller_number.into(), timeout: Duration::from_secs(10) }
    }
}

/// A voice notification to place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoiceNotice {
    /// The number to call.
    pub to: String,
    /// What to say.
    pub text: String,
    /// CivicHub's id for this notification (the `outId` idempotency key).
    pub reference: String,
}

/// A call the gateway accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoiceCall {
    /// The gateway's id of the call.
    pub call_id: String,
}

/// How a voice notification call ended, or that it has not yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoiceState {
    /// Still ringing or queued.
    Pending,
    /// Answered (the text was played).
    Answered,
    /// Nobody answered.
    NoAnswer,
    /// The line was busy.
    Busy,
    /// The call could not be placed.
    Failed,
}

impl VoiceState {
    /// Whether the call has ended.
    pub fn is_final(self) -> bool {
        self != VoiceState::Pending
    }
}

/// The state of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoiceStatus {
    /// Where it is.
    pub state: VoiceState,
    /// Seconds connected (0 unless answered).
    pub duration_secs: u32,
}

/// The client of a voice gateway. Clones share connections.
///
/// No national protocol exists for this, so this is **CivicHub's generic
/// voice-gateway contract**; a city's fusion-communication platform (or a small
/// bridge in front of a carrier's or cloud vendor's voice API) implements it:
///
/// ```text
/// POST {base}/v1/voice/notify
/// Authorization: Bearer <api key>
/// {"callee":"13800000000","caller":"12345","tts":"您的工单已办结","outId":"ticket-42-1"}
/// → 200 {"code":"OK","callId":"v-…"}
///
/// GET {base}/v1/voice/calls/{callId}
/// Authorization: Bearer <api key>
/// → 200 {"code":"OK","callId":"v-…","state":"answered","durationSecs":12}
/// ```
///
/// `state` is `pending`, `answered`, `no_answer`, `busy` or `failed`. `outId` is an
/// idempotency key: a repeated `outId` gets the first call's `callId` back, so a
/// retried request never rings twice. Errors are a non-2xx status (or a `code`
/// other than `OK`) with `{"code","message"}`: 400 `InvalidParameter`, 401
/// `Unauthorized`, 404 `NotFound`, 429 `Throttled`, 5xx. Transport failures, 429,
/// 5xx and the codes `Throttled`, `Busy`, `ServiceUnavailable`, `InternalError` are
/// worth retrying; the rest are not.
#[derive(Clone, Debug)]
pub struct VoiceGateway {
    http: reqwest::Client,
    config: Arc<VoiceConfig>,
}

impl VoiceGateway {
    /// A client for `config`.
    pub fn new(config: VoiceConfig) -> Result<VoiceGateway> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Transport(e.to_string()))?;
        Ok(VoiceGateway { http, config: Arc::new(config) })
    }

    /// The configuration.
    pub fn config(&self) -> &VoiceConfig {
        &self.config
    }

    /// Places a call that speaks `notice.text` to `notice.to`.
    pub async fn notify(&self, notice: &VoiceNotice) -> Result<VoiceCall> {
        notice.validate()?;
        let body = json!({"callee": notice.to, "caller": self.config.caller_number, "tts": notice.text, "outId": notice.reference});
        let url = self.url(&["v1", "voice", "notify"]);
        let answer = self.send(self.http.post(url).json(&body)).await?;
        let call_id = text(&answer, "callId").ok_or_else(|| Error::Transport("notify answered without a callId".into()))?;
        tracing::debug!(call_id = %call_id, reference = %notice.reference, "voice notification placed");
        Ok(VoiceCall { call_id })
    }

    /// Where the call `call_id` is.
    pub async fn status(&self, call_id: &str) -> Result<VoiceStatus> {
        if call_id.is_empty() || call_id.len() > 128 {
            return Err(Error::Invalid("call id is empty or longer than 128 bytes".into()));
        }
        let url = self.url(&["v1", "voice", "calls", call_id]);
        let answer = self.send(self.http.get(url)).await?;
        let state = answer.get("state").cloned().ok_or_else(|| Error::Transport("status answered without a state".into()))?;
        let state: VoiceState = serde_json::from_value(state).map_err(|e| Error::Transport(format!("unknown call state: {e}")))?;
        let duration_secs = answer.get("durationSecs").and_then(Value::as_u64).map_or(0, |d| u32::try_from(d).unwrap_or(u32::MAX));
        Ok(VoiceStatus { state, duration_secs })
    }

    /// `base_url` with `segments` appended (each percent-encoded).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.config.base_url.clone();
        url.set_query(None);
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    async fn send(&self, builder: reqwest::RequestBuilder) -> Result<Value> {
        let describe = |e: reqwest::Error| {
            if e.is_timeout() {
                Error::Transport(format!("timed out: {e}"))
            } else if e.is_connect() {
                Error::Transport(format!("cannot connect: {e}"))
            } else {
                Error::Transport(e.to_string())
            }
        };
        let mut response = builder.bearer_auth(self.config.api_key.expose()).send().await.map_err(describe)?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(Error::Transport(format!("answer larger than {MAX_BODY} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let json: Option<Value> = serde_json::from_slice(&body).ok().filter(Value::is_object);
        let ok_status = (200..300).contains(&status);
        match json {
            Some(json) => {
                let code = text(&json, "code");
                if ok_status && code.as_deref() == Some("OK") {
                    return Ok(json);
                }
                let message = text(&json, "message").unwrap_or_default();
                Err(Error::Api { code: code.unwrap_or_else(|| format!("http_{status}")), message, status })
            }
            None if ok_status => Err(Error::Transport("answer is not a JSON object".into())),
            None => Err(Error::Api { code: format!("http_{status}"), message: String::from_utf8_lossy(&body).chars().take(200).collect(), status }),
        }
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl VoiceNotice {
    /// Checks the number, the text and the reference.
    pub fn validate(&self) -> Result<()> {
        if !is_phone_number(&self.to) {
            return Err(Error::Invalid(format!("{:?} is not a phone number (digits, optionally a leading +)", self.to)));
        }
        let chars = self.text.chars().count();
        if self.text.trim().is_empty() || chars > MAX_TTS_CHARS {
            return Err(Error::Invalid(format!("voice text must be 1 to {MAX_TTS_CHARS} characters, not {chars}")));
        }
        if self.reference.is_empty() || self.reference.chars().count() > MAX_REFERENCE || self.reference.chars().any(char::is_control) {
            return Err(Error::Invalid(format!("reference must be 1 to {MAX_REFERENCE} characters without control characters")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_hidden() {
        let c = VoiceConfig::new(Url::parse("http://gw/").expect("url"), "s3cret", "12345");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn urls_keep_the_base_path_and_encode_ids() {
        let gw = VoiceGateway::new(VoiceConfig::new(Url::parse("http://gw/voicegw/").expect("url"), "k", "12345")).expect("client");
        assert_eq!(gw.url(&["v1", "voice", "notify"]).as_str(), "http://gw/voicegw/v1/voice/notify");
        assert_eq!(gw.url(&["v1", "voice", "calls", "a/b?c"]).as_str(), "http://gw/voicegw/v1/voice/calls/a%2Fb%3Fc");
    }

    #[test]
    fn notices_are_validated() {
        let ok = VoiceNotice { to: "13800000000".into(), text: "您好".into(), reference: "t-1".into() };
        assert!(ok.validate().is_ok());
        assert!(VoiceNotice { to: "138 0000".into(), ..ok.clone() }.validate().is_err());
        assert!(VoiceNotice { text: " ".into(), ..ok.clone() }.validate().is_err());
        assert!(VoiceNotice { text: "长".repeat(501), ..ok.clone() }.validate().is_err());
        assert!(VoiceNotice { reference: String::new(), ..ok }.validate().is_err());
    }
}
