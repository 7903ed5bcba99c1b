//! The envelope every message on the bus travels in.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One message on the bus. `id` is also its `Nats-Msg-Id`, so JetStream
/// stores a re-published envelope once, and handlers dedupe on it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Envelope {
    /// Unique id.
    pub id: String,
    /// What happened or what to do, e.g. `msg.sms.out`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it was created, RFC 3339 UTC.
    pub time: String,
    /// Who created it, e.g. `civichub/identity`.
    pub source: String,
    /// Correlates every envelope caused by one request.
    pub trace_id: String,
    /// The body; its shape depends on `type`.
    pub payload: Value,
}

impl Envelope {
    /// A new envelope with a fresh id; `trace_id` defaults to that id.
    pub fn new(kind: &str, source: &str, trace_id: Option<&str>, payload: Value) -> Envelope {
        let id = new_id();
        Envelope {
            trace_id: trace_id.map(str::to_owned).unwrap_or_else(|| id.clone()),
            id,
            kind: kind.to_owned(),
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            source: source.to_owned(),
            payload,
        }
    }

    /// The JSON bytes sent on the wire.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads an envelope from the wire.
    pub fn decode(bytes: &[u8]) -> crate::Result<Envelope> {
        let e: Envelope = serde_json::from_slice(bytes)?;
        if e.id.is_empty() || e.kind.is_empty() {
            return Err(crate::Error::Invalid("an envelope needs an id and a type".into()));
        }
        Ok(e)
    }

    /// The payload as `T`.
    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> crate::Result<T> {
        Ok(serde_json::from_value(self.payload.clone())?)
    }
}

/// A unique, roughly time-ordered id: 12 hex digits of milliseconds, then 16 random.
pub fn new_id() -> String {
    civichub_store::ordered_id(8)
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let e = Envelope::new("msg.sms.out", "civichub/test", None, serde_json::json!({"x": 1}));
        assert_eq!(e.trace_id, e.id);
        assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        assert!(Envelope::decode(b"{").is_err());
        assert!(Envelope::decode(br#"{"id":"","type":"x","time":"","source":"","trace_id":"","payload":null}"#).is_err());
    }

    #[test]
    fn ids_are_unique_and_ordered_by_time() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id();
        assert!(a < b);
        assert_eq!(a.len(), 28);
    }
}
