//! `AliyunSms` against `AliyunSimulator` over HTTP.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use civichub_sms::*;
use serde_json::{Value, json};

async fn simulator() -> AliyunSimulator {
    AliyunSimulator::start(AliyunSimConfig {
        access_key_id: "LTAI-test".into(),
        access_key_secret: "right-secret".into(),
        ..AliyunSimConfig::default()
    })
    .await
    .unwrap()
}

fn client(sim: &AliyunSimulator, secret: &str) -> AliyunSms {
    AliyunSms::new(AliyunConfig {
        endpoint: sim.endpoint(),
        access_key_id: "LTAI-test".into(),
        access_key_secret: secret.into(),
        sign_name: "某市12345热线".into(),
        default_template_code: "SMS_100001".into(),
        ..AliyunConfig::default()
    })
    .unwrap()
}

fn sms(to: &str, text: &str) -> OutgoingSms {
    OutgoingSms {
        to: to.into(),
        text: text.into(),
        template: None,
        reference: "civichub-42".into(),
        want_report: true,
    }
}

#[tokio::test]
async fn send_with_default_template() {
    let sim = simulator().await;
    let c = client(&sim, "right-secret");
    assert_eq!(c.name(), "aliyun");
    let text = "您的诉求（工单 2024-001）已受理 & 将在 3 个工作日内答复 *";
    let submitted = c.send(&sms("13800138000", text)).await.unwrap();
    let sent = sim.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(submitted.gateway_ids, vec![sent[0].biz_id.clone()]);
    assert_eq!(sent[0].phone_numbers, vec!["13800138000".to_string()]);
    assert_eq!(sent[0].sign_name, "某市12345热线");
    assert_eq!(sent[0].template_code, "SMS_100001");
    assert_eq!(sent[0].template_param, json!({ "content": text }));
    assert_eq!(sent[0].out_id.as_deref(), Some("civichub-42"));
}

#[tokio::test]
async fn send_with_explicit_template() {
    let sim = simulator().await;
    let c = client(&sim, "right-secret");
    let mut m = sms("+8613900139000", "ignored");
    m.template = Some(Template {
        code: "SMS_200002".into(),
        params: json!({ "code": "482913", "minutes": "5" }),
    });
    c.send(&m).await.unwrap();
    let sent = sim.sent();
    assert_eq!(sent[0].template_code, "SMS_200002");
    assert_eq!(sent[0].template_param["code"], "482913");
    assert_eq!(sent[0].phone_numbers, vec!["13900139000".to_string()]);
}

#[tokio::test]
async fn wrong_secret_is_a_permanent_auth_failure() {
    let sim = simulator().await;
    let err = client(&sim, "wrong-secret")
        .send(&sms("13800138000", "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::AuthFailed(m) if m.starts_with("SignatureDoesNotMatch")),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert!(sim.sent().is_empty());
    assert_eq!(sim.requests(), 1);
}

#[tokio::test]
async fn throttling_and_system_errors_are_retryable() {
    let sim = simulator().await;
    let c = client(&sim, "right-secret");
    sim.fail_next("isv.BUSINESS_LIMIT_CONTROL", 1);
    let err = c.send(&sms("13800138000", "x")).await.unwrap_err();
    assert!(matches!(err, Error::FlowControl(_)), "{err}");
    assert!(err.is_retryable());

    sim.fail_next("Throttling.User", 1);
    let err = c.send(&sms("13800138000", "x")).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");

    sim.fail_next("isp.SYSTEM_ERROR", 1);
    let err = c.send(&sms("13800138000", "x")).await.unwrap_err();
    assert!(matches!(err, Error::Server(_)), "{err}");

    sim.fail_next("isv.TEMPLATE_MISSING_PARAMETERS", 1);
    let err = c.send(&sms("13800138000", "x")).await.unwrap_err();
    assert!(
        matches!(&err, Error::Rejected { code, .. } if code == "isv.TEMPLATE_MISSING_PARAMETERS")
    );
    assert!(!err.is_retryable());

    c.send(&sms("13800138000", "x")).await.unwrap();
    assert_eq!(sim.sent().len(), 1);
}

#[tokio::test]
async fn invalid_numbers_are_rejected_locally_and_by_the_simulator() {
    let sim = simulator().await;
    let err = client(&sim, "right-secret")
        .send(&sms("1234", "x"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidNumber(_)));
    assert_eq!(sim.requests(), 0);

    // A correctly signed request with a bad number gets Aliyun's business error.
    let (status, body) = raw_request(&sim, "right-secret", "12345", "nonce-1").await;
    assert_eq!(status, 200);
    assert_eq!(body["Code"], "isv.MOBILE_NUMBER_ILLEGAL");
    // Replaying a nonce is refused.
    let (status, _) = raw_request(&sim, "right-secret", "13800138000", "nonce-2").await;
    assert_eq!(status, 200);
    let (status, body) = raw_request(&sim, "right-secret", "13800138000", "nonce-2").await;
    assert_eq!(status, 400);
    assert_eq!(body["Code"], "SignatureNonceUsed");
    // A bad signature gets HTTP 400 SignatureDoesNotMatch.
    let (status, body) = raw_request(&sim, "bad", "13800138000", "nonce-3").await;
    assert_eq!(status, 400);
    assert_eq!(body["Code"], "SignatureDoesNotMatch");
    assert!(body["RequestId"].is_string());
}

#[tokio::test]
async fn unreachable_endpoint_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = AliyunSms::new(AliyunConfig {
        endpoint: format!("http://{addr}"),
        access_key_id: "id".into(),
        access_key_secret: "s".into(),
        sign_name: "x".into(),
        default_template_code: "SMS_1".into(),
        ..AliyunConfig::default()
    })
    .unwrap();
    let err = c.send(&sms("13800138000", "x")).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

async fn raw_request(
    sim: &AliyunSimulator,
    secret: &str,
    phone: &str,
    nonce: &str,
) -> (u16, Value) {
    let mut params: BTreeMap<String, String> = [
        ("AccessKeyId", "LTAI-test"),
        ("Action", "SendSms"),
        ("Format", "JSON"),
        ("RegionId", "cn-hangzhou"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", nonce),
        ("SignatureVersion", "1.0"),
        ("Version", "2017-05-25"),
        ("PhoneNumbers", phone),
        ("SignName", "测试"),
        ("TemplateCode", "SMS_1"),
        ("TemplateParam", "{\"a\":\"b\"}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    params.insert(
        "Timestamp".into(),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    );
    let signature = rpc_signature("GET", &params, secret);
    let url = format!(
        "{}/?{}&Signature={}",
        sim.endpoint(),
        canonicalized_query(&params),
        percent_encode(&signature)
    );
    let resp = reqwest::get(url).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}
