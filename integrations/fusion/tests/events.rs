//! Parsing call events: the valid shapes, and clear refusals.

use civichub_fusion::{CallEvent, CallEventKind, Direction};

fn err(body: &str) -> String {
    CallEvent::parse(body.as_bytes()).expect_err("should be refused").to_string()
}

const HANGUP: &str = r#"{"event":"hangup","callId":"1700000000.42","from":"+8613800000000","to":"12345","direction":"inbound",
    "agent":"8001","queue":"general","cause":"NORMAL_CLEARING","recordingUrl":"https://pbx.city.example/rec/42.wav",
    "time":"2024-05-01T08:00:00+08:00","answeringNumber":"8001","somethingNew":true}"#;

#[test]
fn parses_a_full_hangup() {
    let e = CallEvent::parse(HANGUP.as_bytes()).expect("valid");
    assert_eq!(e.event, CallEventKind::Hangup);
    assert_eq!(e.call_id, "1700000000.42");
    assert_eq!((e.from.as_str(), e.to.as_str(), e.direction), ("+8613800000000", "12345", Direction::Inbound));
    assert_eq!((e.agent.as_deref(), e.queue.as_deref(), e.cause.as_deref()), (Some("8001"), Some("general"), Some("NORMAL_CLEARING")));
    assert_eq!(e.recording_url.as_ref().map(|u| u.as_str()), Some("https://pbx.city.example/rec/42.wav"));
    assert_eq!(e.time.map(|t| t.to_rfc3339()), Some("2024-05-01T00:00:00+00:00".to_string()));
    assert_eq!(e.subject_suffix(), "hangup");
}

#[test]
fn parses_minimal_events_and_cti_variants() {
    let e = CallEvent::parse(br#"{"event":"newCall","callId":7,"from":"13800000000","to":"12345","direction":"inbound"}"#).expect("valid");
    assert_eq!((e.event, e.call_id.as_str(), e.agent.as_deref(), e.time), (CallEventKind::NewCall, "7", None, None));
    assert_eq!(e.subject_suffix(), "new_call");

    // The CTI push's `user[]` is the agent; Unix times in seconds or milliseconds.
    let e = CallEvent::parse(br#"{"event":"answer","callId":"c","from":"12345","to":"13800000000","direction":"outbound","user":["8002","8003"],"time":1714521600}"#).expect("valid");
    assert_eq!((e.agent.as_deref(), e.direction, e.subject_suffix()), (Some("8002"), Direction::Outbound, "answer"));
    assert_eq!(e.time.map(|t| t.timestamp()), Some(1_714_521_600));
    let e = CallEvent::parse(br#"{"event":"answer","callId":"c","from":"1","to":"2","direction":"inbound","user":"8004","time":"1714521600123","queue":""}"#).expect("valid");
    assert_eq!((e.agent.as_deref(), e.queue), (Some("8004"), None));
    assert_eq!(e.time.map(|t| t.timestamp_millis()), Some(1_714_521_600_123));
}

#[test]
fn round_trips_through_its_json() {
    let e = CallEvent::parse(HANGUP.as_bytes()).expect("valid");
    let json = e.to_json();
    assert!(json.contains(r#""callId":"1700000000.42""#) && json.contains(r#""recordingUrl""#) && json.contains(r#""event":"hangup""#), "{json}");
    assert_eq!(CallEvent::parse(json.as_bytes()).expect("own output parses"), e);
    let via_serde: CallEvent = serde_json::from_str(&json).expect("Deserialize validates too");
    assert_eq!(via_serde, e);
    assert!(serde_json::from_str::<CallEvent>(r#"{"event":"ring"}"#).is_err());
}

#[test]
fn refuses_bad_events_clearly() {
    let base = r#""from":"13800000000","to":"12345","direction":"inbound""#;
    assert_eq!(err(&format!(r#"{{"event":"answer",{base}}}"#)), "callId is missing");
    assert_eq!(err(&format!(r#"{{"event":"answer","callId":"",{base}}}"#)), "callId is empty");
    assert_eq!(err(&format!(r#"{{"callId":"c",{base}}}"#)), "event is missing");
    assert_eq!(err(&format!(r#"{{"event":"ring","callId":"c",{base}}}"#)), r#"event "ring" is not newCall, answer or hangup"#);
    assert!(err(r#"{"event":"answer","callId":"c","from":"138-0000","to":"12345","direction":"inbound"}"#).starts_with(r#"from "138-0000" is not a phone number"#));
    assert!(err(r#"{"event":"answer","callId":"c","from":"13800000000","to":"abc","direction":"inbound"}"#).starts_with("to "));
    assert_eq!(err(r#"{"event":"answer","callId":"c","from":"1","to":"2"}"#), "direction is missing");
    assert_eq!(err(r#"{"event":"answer","callId":"c","from":"1","to":"2","direction":"sideways"}"#), r#"direction "sideways" is not inbound or outbound"#);
    assert!(err(&format!(r#"{{"event":"answer","callId":"{}",{base}}}"#, "x".repeat(129))).contains("at most 128"));
    assert!(err(&format!(r#"{{"event":"answer","callId":"a b",{base}}}"#)).contains("without spaces"));
    assert!(err(&format!(r#"{{"event":"answer","callId":"c","agent":"{}",{base}}}"#, "a".repeat(65))).contains("agent is longer than 64"));
    assert!(err(&format!(r#"{{"event":"answer","callId":"c","queue":"a\u0000b",{base}}}"#)).contains("control characters"));
    assert!(err(&format!(r#"{{"event":"hangup","callId":"c","recordingUrl":"ftp://x/y",{base}}}"#)).contains("http or https"));
    assert!(err(&format!(r#"{{"event":"hangup","callId":"c","recordingUrl":"not a url",{base}}}"#)).contains("recordingUrl is not a URL"));
    assert!(err(&format!(r#"{{"event":"answer","callId":"c","time":"yesterday",{base}}}"#)).contains("time must be"));
    assert!(err(&format!(r#"{{"event":"answer","callId":"c","time":99999999999999999,{base}}}"#)).contains("time must be"));
    assert!(err(&format!(r#"{{"event":["answer"],"callId":"c",{base}}}"#)).contains("event must be a string"));
    assert!(err("[]").contains("JSON object"));
    assert!(err("{").contains("not JSON"));
    assert!(err(&" ".repeat(70_000)).contains("at most 65536"));
}

#[test]
fn a_withheld_caller_is_anonymous_but_a_bad_number_is_refused() {
    for shown in ["anonymous", "Unknown", "PRIVATE", "withheld"] {
        let body = format!(r#"{{"event":"newCall","callId":"c","from":"{shown}","to":"12345","direction":"inbound"}}"#);
        assert_eq!(CallEvent::parse(body.as_bytes()).expect("valid").from, civichub_fusion::WITHHELD);
    }
    assert!(err(r#"{"event":"newCall","callId":"c","from":"138-abc","to":"12345","direction":"inbound"}"#).contains("from"));
    assert!(err(r#"{"event":"newCall","callId":"c","from":"13800000000","to":"anonymous","direction":"inbound"}"#).contains("to"));
}
