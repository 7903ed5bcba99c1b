//! The messaging hub over HTTP: `POST /api/messages` routed to the DingTalk,
//! voice and SMS simulators, status and attempts, fallbacks; call events and
//! audit events on NATS JetStream.

use std::time::Duration;

use civichub_dingtalk::simulator::{DingTalkSimulator, SimConfig, SimUser};
use civichub_fusion::simulator::{VoiceSimConfig, VoiceSimulator};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{Backend, NatsServer, TestApp, eventually, http, service_token};

pub async fn post_message(app: &TestApp, token: &str, body: &Value) -> (u16, Value) {
    let r = http().post(app.url("/api/messages")).bearer_auth(token).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

pub async fn get_message(app: &TestApp, token: &str, id: &str) -> Value {
    http().get(app.url(&format!("/api/messages/{id}"))).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

/// Waits until the message reaches `status`; returns it.
pub async fn wait_status(app: &TestApp, token: &str, id: &str, status: &str, secs: u64) -> Value {
    let found = eventually(secs, || {
        let fut = get_message(app, token, id);
        async move {
            let m = fut.await;
            (m["status"] == status).then_some(m)
        }
    })
    .await;
    match found {
        Some(m) => m,
        None => {
            let last = get_message(app, token, id).await;
            panic!("message {id} not {status} after {secs} s: {last}\n{}", app.log())
        }
    }
}

pub fn dingtalk_config() -> SimConfig {
    SimConfig {
        users: vec![SimUser {
            userid: "zhangsan".into(),
            unionid: "union-zhangsan".into(),
            name: "张三".into(),
            mobile: "13800000001".into(),
            dept_ids: vec![1],
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn dingtalk_flags(sim: &DingTalkSimulator) -> Vec<String> {
    let c = sim.client_config();
    vec![
        "--dingtalk-app-key".into(),
        c.app_key.clone(),
        "--dingtalk-app-secret".into(),
        c.app_secret.expose().to_owned(),
        "--dingtalk-agent-id".into(),
        c.agent_id.to_string(),
        "--dingtalk-api-base".into(),
        sim.base_url().to_string(),
        "--dingtalk-oapi-base".into(),
        sim.base_url().to_string(),
    ]
}

fn voice_flags(sim: &VoiceSimulator) -> Vec<String> {
    vec!["--voice-gateway-url".into(), sim.base_url().to_string(), "--voice-api-key".into(), "sim-voice-key".into()]
}

async fn spawn(backend: Backend, flags: Vec<String>) -> TestApp {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    TestApp::spawn_with(backend, &flags).await
}

crate::both!(messages_api_checks_input_and_scope);
crate::both_backends!(dingtalk_notice_confirmed_from_send_result, urgent_message_also_calls, dingtalk_failure_falls_back);

async fn messages_api_checks_input_and_scope(app: &TestApp) {
    let token = service_token(app, &["messages:send"]).await;
    let reader = service_token(app, &["kb:read"]).await;
    let body = json!({"to": {"phone": "13812345678"}, "text": "您好"});
    let r = http().post(app.url("/api/messages")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let (status, err) = post_message(app, &reader, &body).await;
    assert_eq!((status, err["error"].as_str()), (403, Some("insufficient_scope")));
    for (body, needle) in [
        (json!({"to": {"phone": "12345"}, "text": "x"}), "mobile number"),
        (json!({"to": {"user": "nobody"}, "text": "x"}), "no user named"),
        (json!({"to": {"phone": "13812345678"}, "text": "x", "channel": "sms"}), "not configured"),
        (json!({"to": {"phone": "13812345678"}, "text": ""}), "text is required"),
        (json!({"to": {"phone": "13812345678"}, "text": "x", "channel": "pigeon"}), "channel must be"),
        (json!({"to": "13812345678", "text": "x"}), "to must be"),
    ] {
        let (status, err) = post_message(app, &token, &body).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(err["message"].as_str().unwrap_or_default().contains(needle), "{body}: {err}");
    }
    let r = http().post(app.url("/api/messages")).bearer_auth(&token).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = http().get(app.url("/api/messages/nope")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // A sender reads its own messages; another sender's only with messages:read.
    let (status, accepted) = post_message(app, &token, &json!({"to": {"department": 3}, "channel": "dingtalk", "text": "x"})).await;
    assert_eq!(status, 400, "no DingTalk configured: {accepted}");
    let other = service_token(app, &["messages:send"]).await;
    let auditor = service_token(app, &["messages:read"]).await;
    let mut db = app.db().await;
    sqlx::query("INSERT INTO messages (id, recipient_kind, recipient, channel, text, urgent, status, plan, client_id, trace_id, created_ms, updated_ms) \
                 VALUES ('m-own', 'phone', '13812345678', 'sms', 'x', 0, 'sent', '', (SELECT client_id FROM tokens WHERE token_hash = $1), 't', 0, 0)")
        .bind(civichub_store::secret_key(&token))
        .execute(&mut db)
        .await
        .unwrap();
    for (who, expected) in [(&token, 200), (&other, 404), (&auditor, 200), (&reader, 403)] {
        let r = http().get(app.url("/api/messages/m-own")).bearer_auth(who).send().await.unwrap();
        assert_eq!(r.status(), expected);
    }
    let r = http().post(app.url("/api/messages")).bearer_auth(&token).body(vec![b' '; 64 * 1024]).send().await.unwrap();
    assert_eq!(r.status(), 413);
}

async fn dingtalk_notice_confirmed_from_send_result(backend: Backend) {
    let dingtalk = DingTalkSimulator::start(dingtalk_config()).await.unwrap();
    let mut flags = dingtalk_flags(&dingtalk);
    flags.extend(["--message-fallback-after".into(), "1".into()]);
    let app = spawn(backend, flags).await;
    app.add_user("zhang", &["--phone", "13800000001"]);
    app.cli_ok(&["user", "link", "zhang", "--dingtalk", "zhangsan"], None);
    let token = service_token(&app, &["messages:send"]).await;
    let (status, accepted) = post_message(&app, &token, &json!({"to": {"user": "zhang"}, "text": "您有一张新工单，请及时处理。"})).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "queued");
    let id = accepted["id"].as_str().unwrap();
    let notices = dingtalk.wait_for_notices(1, Duration::from_secs(10)).await;
    assert_eq!(notices.len(), 1, "{}", app.log());
    assert_eq!(notices[0].userids, ["zhangsan"]);
    // No SMS channel is configured; the send result (unread) confirms delivery at the fallback time.
    let m = wait_status(&app, &token, id, "delivered", 10).await;
    let attempts = m["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{m}");
    assert_eq!(attempts[0]["channel"], "dingtalk");
    assert_eq!(attempts[0]["gateway_id"], notices[0].task_id.to_string());
    assert_eq!(m["to"], json!({"user": "zhang"}));
}

async fn urgent_message_also_calls(backend: Backend) {
    let dingtalk = DingTalkSimulator::start(dingtalk_config()).await.unwrap();
    let voice = VoiceSimulator::start(VoiceSimConfig::default()).await.unwrap();
    let mut flags = dingtalk_flags(&dingtalk);
    flags.extend(voice_flags(&voice));
    let app = spawn(backend, flags).await;
    app.add_user("zhang", &["--phone", "13800000001"]);
    app.cli_ok(&["user", "link", "zhang", "--dingtalk", "zhangsan"], None);
    let token = service_token(&app, &["messages:send"]).await;
    let (status, accepted) =
        post_message(&app, &token, &json!({"to": {"user": "zhang"}, "text": "防汛紧急通知：请立即到岗。", "urgent": true})).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap();
    dingtalk.wait_for_notices(1, Duration::from_secs(10)).await;
    let call = eventually(10, || async { voice.calls().into_iter().next() }).await.expect("a voice call");
    assert_eq!(call.callee, "13800000001");
    assert_eq!(call.tts, "防汛紧急通知：请立即到岗。");
    let m = wait_status(&app, &token, id, "sent", 10).await;
    let channels: Vec<&str> = m["attempts"].as_array().unwrap().iter().map(|a| a["channel"].as_str().unwrap()).collect();
    assert!(channels.contains(&"dingtalk") && channels.contains(&"voice"), "{m}");
}

async fn dingtalk_failure_falls_back(backend: Backend) {
    // zhangsan is unknown to this DingTalk: the send result lists the userid as invalid.
    let dingtalk = DingTalkSimulator::start(SimConfig::default()).await.unwrap();
    let sms = civichub_sms::CmppSimulator::start(civichub_sms::CmppSimConfig::default()).await.unwrap();
    let voice = VoiceSimulator::start(VoiceSimConfig::default()).await.unwrap();
    let mut flags = dingtalk_flags(&dingtalk);
    flags.extend(voice_flags(&voice));
    flags.extend(crate::messaging_sms::cmpp_flags(&sms));
    flags.extend(["--message-fallback-after".into(), "1".into()]);
    let app = spawn(backend, flags).await;
    app.add_user("zhang", &["--phone", "13800000001"]);
    app.add_user("wang", &[]);
    app.cli_ok(&["user", "link", "zhang", "--dingtalk", "zhangsan"], None);
    app.cli_ok(&["user", "link", "wang", "--dingtalk", "wangwu"], None);
    let token = service_token(&app, &["messages:send"]).await;
    // A department is reached by DingTalk only.
    let (status, err) = post_message(&app, &token, &json!({"to": {"department": 7}, "channel": "voice", "text": "x"})).await;
    assert_eq!(status, 400, "{err}");

    // DingTalk reports the user invalid at the fallback time: the message goes by SMS.
    let (status, accepted) = post_message(&app, &token, &json!({"to": {"user": "zhang"}, "text": "请查收工单。"})).await;
    assert_eq!(status, 202, "{accepted}");
    let m = wait_status(&app, &token, accepted["id"].as_str().unwrap(), "delivered", 15).await;
    let tried: Vec<(&str, &str)> =
        m["attempts"].as_array().unwrap().iter().map(|a| (a["channel"].as_str().unwrap(), a["state"].as_str().unwrap())).collect();
    assert_eq!(tried, [("dingtalk", "failed"), ("sms", "delivered")], "{m}");
    assert_eq!(sms.received()[0].to, ["13800000001"]);
    assert!(voice.calls().is_empty(), "voice is not a fallback for a normal message");

    // With no phone, nothing is left to try after DingTalk.
    let (_, accepted) = post_message(&app, &token, &json!({"to": {"user": "wang"}, "text": "请查收。"})).await;
    let m = wait_status(&app, &token, accepted["id"].as_str().unwrap(), "failed", 15).await;
    assert_eq!(m["attempts"].as_array().unwrap().len(), 1, "{m}");
}

/// Call-centre events and identity audit events reach JetStream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_events_and_audit_events_are_published_on_nats() {
    crate::helpers::limited(async {
        let nats = NatsServer::start().await;
        let app = spawn(Backend::Sqlite, vec!["--nats-url".into(), nats.url()]).await;
        let client = nats.client().await;
        let mut events = client.subscribe("civichub.>").await.unwrap();
        client.flush().await.unwrap(); // the server has the subscription before anything is published
        let token = service_token(&app, &["fusion:events"]).await;
        let event = json!({"event": "answer", "callId": "call-001", "from": "13812345678", "to": "12345", "direction": "inbound", "agent": "1001", "queue": "hotline"});
        let r = http().post(app.url("/api/fusion/call-events")).bearer_auth(&token).json(&event).send().await.unwrap();
        assert_eq!(r.status(), 202);
        let accepted: Value = r.json().await.unwrap();
        assert_eq!(accepted["subject"], "civichub.fusion.call.answer");
        let bad = http().post(app.url("/api/fusion/call-events")).bearer_auth(&token).json(&json!({"event": "ring"})).send().await.unwrap();
        assert_eq!(bad.status(), 400);
        let mut seen_call = false;
        let mut seen_auth = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while !(seen_call && seen_auth) {
            let msg = tokio::time::timeout_at(deadline, events.next()).await.expect("events on NATS").unwrap();
            let env: Value = serde_json::from_slice(&msg.payload).unwrap();
            match msg.subject.as_str() {
                "civichub.fusion.call.answer" => {
                    assert_eq!(env["id"], accepted["id"]);
                    assert_eq!(env["payload"]["callId"], "call-001");
                    assert_eq!(env["type"], "fusion.call.answer");
                    seen_call = true;
                }
                "civichub.auth.token.issued" => {
                    assert!(env["id"].as_str().unwrap().starts_with("audit-"), "{env}");
                    assert_eq!(env["payload"]["event"], "token.issued");
                    seen_auth = true;
                }
                _ => {}
            }
        }
        // JetStream kept them: a durable stream other city systems can replay.
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("CIVICHUB_EVENTS").await.unwrap();
        assert!(stream.info().await.unwrap().state.messages >= 2);
    }, String::new).await;
}
