//! `CmppClient` against `CmppSimulator` over real TCP.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use civichub_sms::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const SP: &str = "901234";
const SECRET: &str = "secret";

async fn simulator(tweak: impl FnOnce(&mut CmppSimConfig)) -> CmppSimulator {
    let mut cfg = CmppSimConfig {
        sp_id: SP.into(),
        secret: SECRET.into(),
        report_delay: Duration::from_millis(20),
        ..CmppSimConfig::default()
    };
    tweak(&mut cfg);
    CmppSimulator::start(cfg).await.unwrap()
}

fn config(sim: &CmppSimulator) -> CmppConfig {
    CmppConfig {
        addr: sim.addr().to_string(),
        sp_id: SP.into(),
        secret: SECRET.into(),
        src_id: "10690012345".into(),
        service_id: "CIVIC".into(),
        submit_timeout: Duration::from_secs(3),
        reconnect_backoff_min: Duration::from_millis(20),
        reconnect_backoff_max: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(2),
        ..CmppConfig::default()
    }
}

fn sms(to: &str, text: &str, want_report: bool) -> OutgoingSms {
    OutgoingSms {
        to: to.into(),
        text: text.into(),
        template: None,
        reference: "msg-1".into(),
        want_report,
    }
}

/// The next event, not yet said to be stored (the gateway has no answer yet).
async fn next_received(rx: &mut mpsc::Receiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5 s")
        .expect("event channel open")
}

/// The next event, said to be stored at once.
async fn next_event(rx: &mut mpsc::Receiver<Received>) -> SmsEvent {
    let received = next_received(rx).await;
    let event = received.event.clone();
    received.stored();
    event
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn login_succeeds_with_the_right_secret() {
    let sim = simulator(|_| {}).await;
    let (client, _events) = CmppClient::connect(config(&sim)).await.unwrap();
    assert!(client.wait_connected(Duration::from_secs(1)).await);
    assert_eq!(sim.logins(), 1);
    assert_eq!(client.name(), "cmpp");
    // Debug never shows the secret.
    let mut cfg = config(&sim);
    cfg.secret = "s3cr3t-value".into();
    let shown = format!("{cfg:?}");
    assert!(
        !shown.contains("s3cr3t-value") && shown.contains("Secret(***)"),
        "{shown}"
    );
}

#[tokio::test]
async fn login_fails_with_a_wrong_secret_or_sp_id() {
    let sim = simulator(|_| {}).await;
    let mut cfg = config(&sim);
    cfg.secret = "wrong".into();
    let err = CmppClient::connect(cfg).await.unwrap_err();
    assert!(
        matches!(&err, Error::AuthFailed(m) if m.contains("status 3")),
        "{err}"
    );
    assert!(!err.is_retryable());

    let mut cfg = config(&sim);
    cfg.sp_id = "999999".into();
    let err = CmppClient::connect(cfg).await.unwrap_err();
    assert!(
        matches!(&err, Error::AuthFailed(m) if m.contains("status 2")),
        "{err}"
    );
    assert_eq!(sim.auth_failures(), 2);
    assert_eq!(sim.logins(), 0);
}

#[tokio::test]
async fn client_rejects_a_gateway_that_does_not_know_the_secret() {
    // The simulator accepts "secret"; a client configured with the same SP id but another
    // secret is refused by the gateway, so here we check the other direction with a raw gateway:
    // a CONNECT_RESP whose AuthenticatorISMG was made with a different secret.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 39];
        sock.read_exact(&mut buf).await.unwrap();
        let Some((
            Frame {
                sequence_id,
                pdu: Pdu::Connect(c),
            },
            _,
        )) = decode_frame(&buf).unwrap()
        else {
            panic!("expected CONNECT");
        };
        let resp = ConnectResp::new(0, &c, "impostor");
        let bytes = Frame::new(sequence_id, Pdu::ConnectResp(resp))
            .encode()
            .unwrap();
        sock.write_all(&bytes).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let cfg = CmppConfig {
        addr: addr.to_string(),
        sp_id: SP.into(),
        secret: SECRET.into(),
        ..CmppConfig::default()
    };
    let err = CmppClient::connect(cfg).await.unwrap_err();
    assert!(
        matches!(&err, Error::AuthFailed(m) if m.contains("AuthenticatorISMG")),
        "{err}"
    );
}

#[tokio::test]
async fn simulator_refuses_other_protocol_versions_with_status_4() {
    let sim = simulator(|_| {}).await;
    let mut sock = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let mut connect = Connect::new(SP, SECRET, 1_128_183_000);
    connect.version = 0x30;
    sock.write_all(&Frame::new(1, Pdu::Connect(connect)).encode().unwrap())
        .await
        .unwrap();
    let mut buf = vec![0u8; 30];
    sock.read_exact(&mut buf).await.unwrap();
    let (frame, _) = decode_frame(&buf).unwrap().unwrap();
    let Pdu::ConnectResp(resp) = frame.pdu else {
        panic!()
    };
    assert_eq!(resp.status, 4);
    // ... and closes the connection.
    let n = tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn chinese_long_message_arrives_reassembled() {
    let sim = simulator(|_| {}).await;
    let (client, _events) = CmppClient::connect(config(&sim)).await.unwrap();
    // 165 characters → 330 octets of UCS-2 → 3 segments (134 + 134 + 62).
    let text = "市民您好：您反映的噪音扰民问题已转交区城管局办理，请保持电话畅通。".repeat(5);
    assert_eq!(text.chars().count(), 165);
    let submitted = client
        .send(&sms("13800138000", &text, false))
        .await
        .unwrap();
    assert_eq!(submitted.gateway_ids.len(), 3);

    let received = sim.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].text, text);
    assert_eq!(received[0].to, vec!["13800138000".to_string()]);
    assert_eq!(received[0].src_id, "10690012345");
    let ids: Vec<String> = received[0]
        .msg_ids
        .iter()
        .map(|id| format_msg_id(*id))
        .collect();
    assert_eq!(ids, submitted.gateway_ids);

    let submits = sim.submits();
    assert_eq!(submits.len(), 3);
    for (i, s) in submits.iter().enumerate() {
        assert_eq!(
            (s.pk_total, s.pk_number, s.tp_udhi, s.msg_fmt),
            (3, i as u8 + 1, 1, 8)
        );
        assert_eq!(s.reference, submits[0].reference);
        assert!(!s.registered_delivery);
    }
}

#[tokio::test]
async fn status_report_arrives_with_the_returned_gateway_id() {
    let sim = simulator(|_| {}).await;
    let (client, mut events) = CmppClient::connect(config(&sim)).await.unwrap();
    let submitted = client
        .send(&sms("13800138000", "您的工单已办结。", true))
        .await
        .unwrap();
    assert_eq!(submitted.gateway_ids.len(), 1);
    match next_event(&mut events).await {
        SmsEvent::Report {
            gateway_id,
            stat,
            delivered,
            to,
            done_time,
        } => {
            assert_eq!(gateway_id, submitted.gateway_ids[0]);
            assert_eq!(stat, "DELIVRD");
            assert!(delivered);
            assert_eq!(to, "13800138000");
            assert_eq!(done_time.len(), 10);
        }
        other => panic!("{other:?}"),
    }
    eventually("DELIVER_RESP", || sim.deliver_resps_received() == 1).await;

    sim.set_report_stat("UNDELIV");
    let submitted = client
        .send(&sms("13800138000", "second", true))
        .await
        .unwrap();
    match next_event(&mut events).await {
        SmsEvent::Report {
            gateway_id,
            stat,
            delivered,
            ..
        } => {
            assert_eq!(gateway_id, submitted.gateway_ids[0]);
            assert_eq!(stat, "UNDELIV");
            assert!(!delivered);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn mobile_originated_message_arrives_as_incoming() {
    let sim = simulator(|_| {}).await;
    let (_client, mut events) = CmppClient::connect(config(&sim)).await.unwrap();
    eventually("login", || sim.connections() == 1).await;
    sim.inject_mo("13900139000", "查询工单进度").unwrap();
    // The gateway is answered only once the event is stored.
    let received = next_received(&mut events).await;
    match &received.event {
        SmsEvent::Incoming { from, to, text, msg_id } => {
            assert_eq!((from.as_str(), to.as_str(), text.as_str()), ("13900139000", "10690012345", "查询工单进度"));
            assert!(!msg_id.is_empty(), "the gateway's id, to store it once");
        }
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sim.deliver_resps_received(), 0, "no DELIVER_RESP before the event is stored");
    received.stored();
    eventually("DELIVER_RESP once stored", || sim.deliver_resps_received() == 1).await;
    // A long MO message is reassembled before it is reported, and none of
    // its parts is answered before it is stored: a hub stopping in between
    // loses nothing, the gateway sends every part again.
    let long = "我家楼下的路灯已经坏了两个星期，晚上出行很不方便，请尽快安排维修。".repeat(3);
    let parts = civichub_sms::split_message(&long, 0).unwrap().len();
    assert!(parts >= 2);
    sim.inject_mo("13900139000", &long).unwrap();
    let received = next_received(&mut events).await;
    match &received.event {
        SmsEvent::Incoming { text, .. } => assert_eq!(text, &long),
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sim.deliver_resps_received(), 1, "no part answered before the message is stored");
    received.stored();
    eventually("a DELIVER_RESP for every part", || sim.deliver_resps_received() == 1 + parts).await;
}

#[tokio::test]
async fn a_message_left_unanswered_by_a_stopped_hub_comes_again() {
    let sim = simulator(|_| {}).await;
    let (first, mut events) = CmppClient::connect(config(&sim)).await.unwrap();
    eventually("login", || sim.connections() == 1).await;
    let long = "幸福小区三号楼的电梯又坏了，老人上下楼很困难，已经报修多次没有结果。".repeat(3);
    let parts = civichub_sms::split_message(&long, 0).unwrap().len();
    sim.inject_mo("13900139000", &long).unwrap();
    let held = next_received(&mut events).await;
    let SmsEvent::Incoming { msg_id: first_id, .. } = &held.event else { panic!("{:?}", held.event) };
    let first_id = first_id.clone();
    // The hub stops before the message is stored: nothing was answered.
    drop(held);
    first.shutdown().await;
    drop(events);
    eventually("the link closed", || sim.connections() == 0).await;
    assert_eq!(sim.deliver_resps_received(), 0);
    // The gateway sends every part again on the next login.
    let (_second, mut events) = CmppClient::connect(config(&sim)).await.unwrap();
    let again = next_received(&mut events).await;
    match &again.event {
        SmsEvent::Incoming { text, msg_id, .. } => {
            assert_eq!(text, &long);
            assert_eq!(msg_id, &first_id, "the same id, so the hub stores it once");
        }
        other => panic!("{other:?}"),
    }
    again.stored();
    eventually("every part answered", || sim.deliver_resps_received() == parts).await;
}

#[tokio::test]
async fn window_bounds_unanswered_submits() {
    let sim = simulator(|_| {}).await;
    sim.set_response_delay(Duration::from_millis(15));
    let mut cfg = config(&sim);
    cfg.window = 4;
    cfg.submit_timeout = Duration::from_secs(10);
    let (client, _events) = CmppClient::connect(cfg).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .send(&sms("13800138000", &format!("message {i}"), false))
                .await
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        let submitted = t.await.unwrap().unwrap();
        ids.extend(submitted.gateway_ids);
    }
    assert_eq!(ids.len(), 100, "gateway ids are unique");
    assert_eq!(sim.submits_received(), 100);
    assert!(
        sim.max_in_flight() <= 4,
        "max in flight {}",
        sim.max_in_flight()
    );
    assert!(sim.max_in_flight() >= 2, "the window was actually used");
}

#[tokio::test]
async fn client_reconnects_after_the_gateway_goes_down() {
    let sim = simulator(|_| {}).await;
    let mut cfg = config(&sim);
    cfg.submit_timeout = Duration::from_millis(500);
    let (client, _events) = CmppClient::connect(cfg).await.unwrap();
    client
        .send(&sms("13800138000", "before", false))
        .await
        .unwrap();

    sim.set_down(true);
    eventually("link down", || !client.is_connected()).await;
    let err = client
        .send(&sms("13800138000", "while down", false))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LinkDown), "{err}");
    assert!(err.is_retryable());

    // A send that starts while the link is down waits for the reconnection.
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { client.send(&sms("13800138000", "during", false)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    sim.set_down(false);
    pending.await.unwrap().unwrap();
    assert!(client.wait_connected(Duration::from_secs(2)).await);
    client
        .send(&sms("13800138000", "after", false))
        .await
        .unwrap();
    assert!(sim.logins() >= 2);
    let texts: Vec<String> = sim.received().into_iter().map(|r| r.text).collect();
    assert_eq!(texts, ["before", "during", "after"]);
}

#[tokio::test]
async fn client_started_before_the_gateway_comes_up() {
    let sim = simulator(|_| {}).await;
    sim.set_down(true);
    let mut cfg = config(&sim);
    cfg.submit_timeout = Duration::from_secs(3);
    let (client, _events) = CmppClient::spawn(cfg).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!client.is_connected());
    sim.set_down(false);
    client
        .send(&sms("13800138000", "hello", false))
        .await
        .unwrap();
}

#[tokio::test]
async fn flow_control_is_retryable_and_rejections_are_not() {
    let sim = simulator(|_| {}).await;
    let (client, _events) = CmppClient::connect(config(&sim)).await.unwrap();
    // A segment refused with flow control is submitted again within the send…
    sim.set_submit_result(8, 1);
    client.send(&sms("13800138000", "x", false)).await.unwrap();
    assert_eq!(sim.submits_received(), 2);
    // …three times at most; then the send fails, and may be tried again later.
    sim.set_submit_result(8, 4);
    let err = client
        .send(&sms("13800138000", "x", false))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::FlowControl(_)), "{err}");
    assert!(err.is_retryable());
    assert_eq!(sim.submits_received(), 6);

    sim.set_submit_result(7, 1);
    let err = client
        .send(&sms("13800138000", "x", false))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Rejected { code, .. } if code == "7"),
        "{err}"
    );
    assert!(!err.is_retryable());

    let err = client.send(&sms("12345", "x", false)).await.unwrap_err();
    assert!(matches!(err, Error::InvalidNumber(_)));
    assert!(!err.is_retryable());
    assert_eq!(sim.submits_received(), 7);
}

#[tokio::test]
async fn submit_timeout_is_retryable() {
    let sim = simulator(|_| {}).await;
    sim.set_response_delay(Duration::from_millis(800));
    let mut cfg = config(&sim);
    cfg.submit_timeout = Duration::from_millis(200);
    let (client, _events) = CmppClient::connect(cfg).await.unwrap();
    let err = client
        .send(&sms("13800138000", "slow", false))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn active_tests_flow_both_ways() {
    let sim = simulator(|c| c.active_test_interval = Some(Duration::from_millis(40))).await;
    let mut cfg = config(&sim);
    cfg.active_test_interval = Duration::from_millis(40);
    let (client, _events) = CmppClient::connect(cfg).await.unwrap();
    eventually("client answers the gateway's ACTIVE_TEST", || {
        sim.active_test_resps_received() >= 2
    })
    .await;
    assert!(client.is_connected());
    assert_eq!(sim.logins(), 1);
}

#[tokio::test]
async fn unanswered_active_tests_cause_a_reconnect() {
    let sim = simulator(|c| c.active_test_interval = None).await;
    let mut cfg = config(&sim);
    cfg.active_test_interval = Duration::from_millis(40);
    cfg.max_missed_active_tests = 2;
    let (client, _events) = CmppClient::connect(cfg).await.unwrap();
    sim.set_unresponsive(true);
    eventually("a second login", || sim.logins() >= 2).await;
    sim.set_unresponsive(false);
    client
        .send(&sms("13800138000", "still works", false))
        .await
        .unwrap();
}

#[tokio::test]
async fn shutdown_terminates_gracefully() {
    let sim = simulator(|_| {}).await;
    let (client, mut events) = CmppClient::connect(config(&sim)).await.unwrap();
    eventually("login", || sim.connections() == 1).await;
    client.shutdown().await;
    eventually("connection closed", || sim.connections() == 0).await;
    assert!(!client.is_connected());
    let err = client
        .send(&sms("13800138000", "x", false))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Closed), "{err}");
    // The event stream ends once the client task is gone.
    let end = tokio::time::timeout(Duration::from_secs(2), events.recv())
        .await
        .unwrap();
    assert!(end.is_none());
}
