//! SMS over CMPP 2.0 (the simulator in `integrations/sms` as the carrier's
//! gateway), on the embedded bus and on NATS JetStream: delivery reports,
//! a NATS outage, a gateway outage and the dead letters, poison messages,
//! and two nodes sharing the work.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream;
use civichub_sms::{CmppSimConfig, CmppSimulator};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{Backend, NatsServer, TestApp, eventually, service_token};

crate::both_backends!(a_shutdown_finishes_the_send_in_hand);
use crate::messaging::{post_message, wait_status};

pub fn cmpp_flags(sim: &CmppSimulator) -> Vec<String> {
    [
        "--sms-gateway",
        "cmpp",
        "--cmpp-addr",
        &sim.addr().to_string(),
        "--cmpp-sp-id",
        "901234",
        "--cmpp-secret",
        "secret",
        "--cmpp-src-id",
        "10690012345",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn spawn(backend: Backend, flags: &[String]) -> TestApp {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    TestApp::spawn_with(backend, &flags).await
}

/// Texts the simulator received, with how many times each.
fn received_counts(sim: &CmppSimulator) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for sms in sim.received() {
        *counts.entry(sms.text).or_insert(0) += 1;
    }
    counts
}

async fn sms_routing(backend: Backend, nats: Option<&NatsServer>) {
    let sim = CmppSimulator::start(CmppSimConfig::default()).await.unwrap();
    let mut flags = cmpp_flags(&sim);
    if let Some(n) = nats {
        flags.extend(["--nats-url".into(), n.url()]);
    }
    let app = spawn(backend, &flags).await;
    app.add_user("citizen-agent", &["--phone", "13900000002"]);
    let token = service_token(&app, &["messages:send"]).await;

    let text = "您反映的诉求（工单号 TZ20261128001）已办结，请回复1-5对办理结果评价。";
    let (status, accepted) = post_message(&app, &token, &json!({"to": {"phone": "+86 138 1234 5678"}, "text": text})).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap();
    let m = wait_status(&app, &token, id, "delivered", 15).await;
    let got = sim.received();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].to.as_slice(), got[0].text.as_str()), (["13812345678".to_owned()].as_slice(), text));
    let attempt = &m["attempts"][0];
    assert_eq!(attempt["channel"], "sms");
    assert_eq!(attempt["state"], "delivered");
    assert_eq!(attempt["outcome"], "DELIVRD");
    assert_eq!(attempt["gateway_id"], got[0].msg_ids[0].to_string());

    // A long message goes as concatenated segments and arrives whole.
    let long: String = "台州市12345政务服务热线提醒您：".chars().cycle().take(300).collect();
    let (_, accepted) = post_message(&app, &token, &json!({"to": {"user": "citizen-agent"}, "text": long})).await;
    wait_status(&app, &token, accepted["id"].as_str().unwrap(), "delivered", 15).await;
    assert!(sim.received().iter().any(|r| r.text == long && r.msg_ids.len() == 5), "300 characters are five segments");

    // A report that it never arrived fails the message (no other channel reaches a phone).
    sim.set_report_stat("UNDELIV");
    let (_, accepted) = post_message(&app, &token, &json!({"to": {"phone": "13812345679"}, "text": "测试未送达"})).await;
    let m = wait_status(&app, &token, accepted["id"].as_str().unwrap(), "failed", 15).await;
    assert!(m["attempts"][0]["outcome"].as_str().unwrap().contains("UNDELIV"), "{m}");
    // A citizen's reply reaches civichub.msg.sms.in (watched here on NATS).
    if let Some(n) = nats {
        let watcher = n.client().await;
        let mut incoming = watcher.subscribe("civichub.msg.sms.in").await.unwrap();
        // Once the server answers the flush it has the subscription: nothing published after is missed.
        watcher.flush().await.unwrap();
        sim.inject_mo("13812345678", "5 非常满意").unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(10), incoming.next())
            .await
            .unwrap_or_else(|_| panic!("the reply on NATS; the hub logged:\n{}", app.log()))
            .unwrap();
        let env: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(env["payload"]["from"], "13812345678");
        assert_eq!(env["payload"]["text"], "5 非常满意");
        assert_eq!(env["type"], "msg.sms.in");
        // The gateway sends the same DELIVER again (it missed the RESP): it is
        // answered, and the stream, which other systems consume, holds it once.
        let answered = sim.deliver_resps_received();
        sim.redeliver_last_mo().unwrap();
        eventually(10, || async { (sim.deliver_resps_received() > answered).then_some(()) })
            .await
            .expect("the hub answers the DELIVER sent again");
        sim.inject_mo("13812345678", "谢谢").unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), incoming.next()).await.expect("the next reply on NATS").unwrap();
            if serde_json::from_slice::<Value>(&msg.payload).unwrap()["payload"]["text"] == "谢谢" {
                break;
            }
        }
        let stream = jetstream::new(n.client().await).get_stream("CIVICHUB_MESSAGES").await.unwrap();
        let mut replies = stream
            .create_consumer(jetstream::consumer::pull::Config {
                filter_subject: "civichub.msg.sms.in".into(),
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(replies.info().await.unwrap().num_pending, 2, "the reply sent twice is in the stream once, beside the next one");
    }
    // Too long for SMS: a clear 400.
    let (status, err) = post_message(&app, &token, &json!({"to": {"phone": "13812345678"}, "text": "长".repeat(500)})).await;
    assert_eq!(status, 400, "{err}");
}

mod sms_message_is_delivered_and_reported {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_sqlite() {
        crate::helpers::limited(sms_routing(Backend::Sqlite, None), String::new).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_postgres() {
        crate::helpers::limited(sms_routing(Backend::Postgres, None), String::new).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_sqlite() {
        let nats = NatsServer::start().await;
        crate::helpers::limited(sms_routing(Backend::Sqlite, Some(&nats)), String::new).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_survive_a_nats_restart_exactly_once() {
    crate::helpers::limited(async {
        let mut nats = NatsServer::start().await;
        let sim = CmppSimulator::start(CmppSimConfig::default()).await.unwrap();
        let mut flags = cmpp_flags(&sim);
        flags.extend(["--nats-url".into(), nats.url()]);
        let app = spawn(Backend::Sqlite, &flags).await;
        let token = service_token(&app, &["messages:send"]).await;
        let post = |i: usize| {
            let body = json!({"to": {"phone": format!("139{:08}", i)}, "text": format!("第{i}条通知")});
            let (app, token) = (&app, &token);
            async move {
                let (status, r) = post_message(app, token, &body).await;
                assert_eq!(status, 202, "{r}");
            }
        };
        futures_util::stream::iter(0..300).map(post).buffer_unordered(8).collect::<Vec<_>>().await;
        nats.stop();
        // The API keeps accepting: the messages wait in the outbox.
        futures_util::stream::iter(300..700).map(post).buffer_unordered(8).collect::<Vec<_>>().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        nats.resume().await;
        futures_util::stream::iter(700..1000).map(post).buffer_unordered(8).collect::<Vec<_>>().await;

        let all = eventually(120, || async { (sim.received().len() >= 1000).then_some(()) }).await;
        assert!(all.is_some(), "{} of 1000 reached the gateway\n{}", sim.received().len(), app.log());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let counts = received_counts(&sim);
        assert_eq!(counts.len(), 1000, "every message arrived");
        let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(doubled.is_empty(), "sent more than once: {doubled:?}");
        for i in 0..1000 {
            assert!(counts.contains_key(&format!("第{i}条通知")), "message {i} missing");
        }
    }, String::new).await;
}

/// Reads every dead letter so far.
async fn dead_letters(nats: &NatsServer) -> Vec<async_nats::jetstream::Message> {
    let js = jetstream::new(nats.client().await);
    let stream = js.get_stream("CIVICHUB_DEAD_LETTERS").await.unwrap();
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config { deliver_policy: jetstream::consumer::DeliverPolicy::All, ..Default::default() })
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(100).expires(Duration::from_secs(1)).messages().await.unwrap();
    let mut out = Vec::new();
    while let Some(Ok(m)) = batch.next().await {
        out.push(m);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_gateway_is_retried_then_dead_lettered_while_other_messages_flow() {
    crate::helpers::limited(async {
        use civichub_dingtalk::simulator::{DingTalkSimulator, SimConfig, SimUser};
        let nats = NatsServer::start().await;
        let sim = CmppSimulator::start(CmppSimConfig::default()).await.unwrap();
        let dingtalk = DingTalkSimulator::start(SimConfig {
            users: vec![SimUser { userid: "lisi".into(), unionid: "u-lisi".into(), name: "李四".into(), ..Default::default() }],
            ..Default::default()
        })
        .await
        .unwrap();
        let mut flags = cmpp_flags(&sim);
        let dt = dingtalk.client_config();
        flags.extend(
            [
                "--nats-url", &nats.url(),
                "--cmpp-submit-timeout", "0.5",
                "--message-retry-backoff", "0.3,0.6",
                "--message-max-deliver", "3",
                "--dingtalk-app-key", &dt.app_key,
                "--dingtalk-app-secret", dt.app_secret.expose(),
                "--dingtalk-agent-id", &dt.agent_id.to_string(),
                "--dingtalk-api-base", dingtalk.base_url().as_str(),
                "--dingtalk-oapi-base", dingtalk.base_url().as_str(),
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let app = spawn(Backend::Sqlite, &flags).await;
        app.add_user("lisi", &[]);
        app.cli_ok(&["user", "link", "lisi", "--dingtalk", "lisi"], None);
        let token = service_token(&app, &["messages:send"]).await;

        sim.set_down(true);
        let (_, sms) = post_message(&app, &token, &json!({"to": {"phone": "13812345678"}, "text": "网关故障期间的短信"})).await;
        let (_, notice) = post_message(&app, &token, &json!({"to": {"user": "lisi"}, "text": "网关故障期间的钉钉通知"})).await;
        // The DingTalk notice does not wait for the SMS gateway.
        let notices = dingtalk.wait_for_notices(1, Duration::from_secs(5)).await;
        assert_eq!(notices.len(), 1, "{}", app.log());
        let m = wait_status(&app, &token, sms["id"].as_str().unwrap(), "dead", 30).await;
        assert_eq!(m["attempts"][0]["tries"], 3, "{m}");
        assert_eq!(m["attempts"][0]["state"], "dead", "{m}");
        assert_ne!(get_status(&app, &token, notice["id"].as_str().unwrap()).await, "dead");

        let dead = eventually(10, || async {
            let d = dead_letters(&nats).await;
            (!d.is_empty()).then_some(d)
        })
        .await
        .expect("a dead letter");
        assert_eq!(dead[0].subject.as_str(), "civichub.dead.sms-sender");
        let headers = dead[0].headers.clone().unwrap();
        assert!(headers.get("CivicHub-Reason").unwrap().as_str().contains("gave up after 3 deliveries"), "{headers:?}");
        assert_eq!(headers.get("CivicHub-Subject").unwrap().as_str(), "civichub.msg.sms.out");
        let envelope: Value = serde_json::from_slice(&dead[0].payload).unwrap();
        assert_eq!(envelope["payload"]["message_id"], sms["id"]);

        // Back up: once the link is up again (it reconnects with backoff), new messages go through.
        let ups = app.log().matches("CMPP link up").count();
        sim.set_down(false);
        eventually(15, || async { (app.log().matches("CMPP link up").count() > ups).then_some(()) }).await.expect("the CMPP link reconnects");
        let (_, later) = post_message(&app, &token, &json!({"to": {"phone": "13812345678"}, "text": "网关恢复后的短信"})).await;
        wait_status(&app, &token, later["id"].as_str().unwrap(), "delivered", 30).await;
        assert_eq!(received_counts(&sim).get("网关故障期间的短信"), None, "the dead message was never sent");
    }, String::new).await;
}

async fn get_status(app: &TestApp, token: &str, id: &str) -> String {
    crate::messaging::get_message(app, token, id).await["status"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_does_not_block_its_consumer() {
    crate::helpers::limited(async {
        let nats = NatsServer::start().await;
        let sim = CmppSimulator::start(CmppSimConfig::default()).await.unwrap();
        let mut flags = cmpp_flags(&sim);
        flags.extend(["--nats-url".into(), nats.url()]);
        let app = spawn(Backend::Sqlite, &flags).await;
        let token = service_token(&app, &["messages:send"]).await;
        // Another system publishes garbage on the send subject, and an envelope that is no send order.
        let js = jetstream::new(nats.client().await);
        js.publish("civichub.msg.sms.out", "not json at all".into()).await.unwrap().await.unwrap();
        let odd = json!({"id": "odd-1", "type": "msg.sms.out", "time": "2026-11-28T00:00:00Z", "source": "elsewhere", "trace_id": "t", "payload": {"hello": 1}});
        js.publish("civichub.msg.sms.out", serde_json::to_vec(&odd).unwrap().into()).await.unwrap().await.unwrap();
        let (_, accepted) = post_message(&app, &token, &json!({"to": {"phone": "13812345678"}, "text": "毒消息之后的正常短信"})).await;
        wait_status(&app, &token, accepted["id"].as_str().unwrap(), "delivered", 15).await;
        let dead = eventually(10, || async {
            let d = dead_letters(&nats).await;
            (d.len() >= 2).then_some(d)
        })
        .await
        .expect("both poison messages dead-lettered");
        let reasons: Vec<String> =
            dead.iter().map(|m| m.headers.as_ref().unwrap().get("CivicHub-Reason").unwrap().as_str().to_owned()).collect();
        assert!(reasons.iter().any(|r| r.contains("not an envelope")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("not a send order")), "{reasons:?}");
        assert_eq!(sim.received().len(), 1);
    }, String::new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_nats_never_double_send() {
    crate::helpers::limited(async {
        let nats = NatsServer::start().await;
        let sim = CmppSimulator::start(CmppSimConfig::default()).await.unwrap();
        let mut flags = cmpp_flags(&sim);
        flags.extend(["--nats-url".into(), nats.url()]);
        let first = spawn(Backend::Postgres, &flags).await;
        let flags_ref: Vec<&str> = flags.iter().map(String::as_str).collect();
        let second = first.another_node_with(&flags_ref).await;
        let token = service_token(&first, &["messages:send"]).await;
        let nodes = [&first, &second];
        futures_util::stream::iter(0..300)
            .map(|i| {
                let (app, token) = (nodes[i % 2], &token);
                async move {
                    let (status, r) =
                        post_message(app, token, &json!({"to": {"phone": format!("137{:08}", i)}, "text": format!("双节点第{i}条")})).await;
                    assert_eq!(status, 202, "{r}");
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        let all = eventually(60, || async { (sim.received().len() >= 300).then_some(()) }).await;
        assert!(all.is_some(), "{} of 300 arrived", sim.received().len());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let counts = received_counts(&sim);
        assert_eq!(counts.len(), 300);
        assert!(counts.values().all(|n| *n == 1), "a message was sent twice");
    }, String::new).await;
}

/// A hub told to stop while a send is in hand finishes it, records it and
/// acknowledges it before it exits: after the restart it is not sent again.
async fn a_shutdown_finishes_the_send_in_hand(backend: Backend) {
    // On the embedded bus with SQLite, on NATS JetStream with PostgreSQL.
    let nats = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(NatsServer::start().await),
    };
    let sim = CmppSimulator::start(CmppSimConfig::default()).await.unwrap();
    sim.set_response_delay(Duration::from_millis(1500));
    let mut flags = cmpp_flags(&sim);
    if let Some(n) = &nats {
        flags.extend(["--nats-url".into(), n.url()]);
    }
    let mut app = spawn(backend, &flags).await;
    let token = service_token(&app, &["messages:send"]).await;
    let (status, accepted) = post_message(&app, &token, &json!({"to": {"phone": "13812345678"}, "text": "【12345】停机前的最后一条"})).await;
    assert_eq!(status, 202, "{accepted}");
    assert!(sim.wait_for_submits(1, Duration::from_secs(15)).await, "the SUBMIT went out\n{}", app.log());
    // The gateway has not answered yet: the hub is asked to stop now.
    assert!(app.terminate(Duration::from_secs(20)).await, "the hub stopped\n{}", app.log());
    let mut db = app.db().await;
    use sqlx::Row;
    let state: String = sqlx::query("SELECT state FROM message_attempts WHERE message_id = $1")
        .bind(accepted["id"].as_str().unwrap())
        .fetch_one(&mut db)
        .await
        .unwrap()
        .get("state");
    assert_eq!(state, "sent", "the send in hand was finished and recorded before the exit\n{}", app.log());
    assert_eq!(sim.submits_received(), 1);
}
