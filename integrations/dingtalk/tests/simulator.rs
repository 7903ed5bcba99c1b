//! The client against the simulator, over real HTTP.

use std::collections::HashSet;
use std::time::Duration;

use civichub_dingtalk::simulator::{DingTalkSimulator, SimConfig, SimDept, SimUser};
use civichub_dingtalk::{CallbackCrypto, CallbackEvent, DingTalk, Error, SendStatus, WorkMessage, WorkNotice};

fn user(userid: &str, dept_ids: &[i64]) -> SimUser {
    SimUser {
        userid: userid.into(),
        unionid: format!("union-{userid}"),
        name: format!("员工{userid}"),
        mobile: "13800000000".into(),
        email: format!("{userid}@city.example"),
        dept_ids: dept_ids.to_vec(),
        job_number: format!("NO-{userid}"),
        title: "坐席".into(),
    }
}

fn dept(dept_id: i64, name: &str, parent_id: i64) -> SimDept {
    SimDept { dept_id, name: name.into(), parent_id }
}

/// An organisation: root 1 → 10, 11; 11 → 20, 21; 20 → 30. Dept 21 has 230 members.
fn org() -> SimConfig {
    let mut users = vec![user("u1", &[10]), user("u2", &[20]), user("u3", &[20, 30])];
    users.extend((0..230).map(|i| user(&format!("agent{i:03}"), &[21])));
    SimConfig {
        users,
        departments: vec![dept(10, "市政府办公厅", 1), dept(11, "12345热线中心", 1), dept(20, "热线一科", 11), dept(21, "热线二科", 11), dept(30, "一组", 20)],
        ..SimConfig::default()
    }
}

async fn setup(config: SimConfig) -> (DingTalkSimulator, DingTalk) {
    let sim = DingTalkSimulator::start(config).await.expect("simulator starts");
    let client = DingTalk::new(sim.client_config()).expect("client");
    (sim, client)
}

fn text_to(userids: &[&str], text: &str) -> WorkNotice {
    WorkNotice { userids: userids.iter().map(|s| s.to_string()).collect(), dept_ids: vec![], msg: WorkMessage::text(text) }
}

#[tokio::test]
async fn token_is_fetched_once_for_50_concurrent_sends() {
    let (sim, client) = setup(org()).await;
    sim.set_latency(Duration::from_millis(20));
    let sends = (0..50).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.send_work_notice(&text_to(&["u1"], &format!("工单 {i} 已派发"))).await })
    });
    for send in sends {
        send.await.expect("task").expect("sent");
    }
    assert_eq!(sim.token_fetches(), 1);
    assert_eq!(sim.wait_for_notices(50, Duration::from_secs(5)).await.len(), 50);
}

#[tokio::test]
async fn token_is_refetched_when_it_expires() {
    let (sim, client) = setup(SimConfig { token_ttl: Duration::from_secs(2), ..org() }).await;
    // With the default 5 minute margin a 2 s token is never reused.
    client.send_work_notice(&text_to(&["u1"], "a")).await.expect("sent");
    client.send_work_notice(&text_to(&["u1"], "b")).await.expect("sent");
    assert_eq!(sim.token_fetches(), 2);

    // Without a margin it is reused until it expires, then replaced.
    let mut config = sim.client_config();
    config.token_refresh_margin = Duration::ZERO;
    let client = DingTalk::new(config).expect("client");
    client.send_work_notice(&text_to(&["u1"], "c")).await.expect("sent");
    client.send_work_notice(&text_to(&["u1"], "d")).await.expect("sent");
    assert_eq!(sim.token_fetches(), 3);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    client.send_work_notice(&text_to(&["u1"], "e")).await.expect("sent");
    assert_eq!(sim.token_fetches(), 4);
}

#[tokio::test]
async fn token_refused_by_dingtalk_is_replaced_and_the_call_retried_once() {
    let (sim, client) = setup(org()).await;
    let first = client.access_token().await.expect("token");
    client.send_work_notice(&text_to(&["u1"], "a")).await.expect("sent");
    sim.expire_tokens();
    let before = sim.requests();
    client.send_work_notice(&text_to(&["u1"], "b")).await.expect("sent after refetch");
    assert_eq!(sim.token_fetches(), 2);
    // refused send, token fetch, repeated send
    assert_eq!(sim.requests() - before, 3);
    assert_ne!(client.access_token().await.expect("token"), first);
}

#[tokio::test]
async fn wrong_secret_is_a_clear_permanent_error() {
    let sim = DingTalkSimulator::start(org()).await.expect("simulator starts");
    let mut config = sim.client_config();
    config.app_secret = "wrong".into();
    let client = DingTalk::new(config).expect("client");
    let err = client.send_work_notice(&text_to(&["u1"], "x")).await.expect_err("refused");
    assert!(matches!(&err, Error::Api { code, status: 400, .. } if code == "invalidClientIdOrSecret"), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("invalidClientIdOrSecret"), "{err}");
    assert!(sim.notices().is_empty());
}

#[tokio::test]
async fn work_notice_is_recorded_with_recipients_and_content() {
    let (sim, client) = setup(org()).await;
    let msg = WorkMessage::markdown("新工单", "### 工单 12345-0001\n请于 2 小时内处理");
    let notice = WorkNotice { userids: vec!["u1".into(), "u2".into()], dept_ids: vec![30], msg: msg.clone() };
    let task_id = client.send_work_notice(&notice).await.expect("sent");
    let notices = sim.wait_for_notices(1, Duration::from_secs(2)).await;
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].task_id, task_id);
    assert_eq!(notices[0].userids, ["u1", "u2"]);
    assert_eq!(notices[0].dept_ids, [30]);
    assert_eq!(notices[0].msg, msg);
    assert_eq!(notices[0].agent_id, client.config().agent_id);
    let result = client.send_result(task_id).await.expect("result");
    // dept 30 expands to u3
    assert_eq!(result.unread, ["u1", "u2", "u3"]);
    let progress = client.send_progress(task_id).await.expect("progress");
    assert_eq!((progress.percent, progress.status), (100, SendStatus::Done));
}

#[tokio::test]
async fn send_result_lists_invalid_forbidden_and_read_users() {
    let (sim, client) = setup(org()).await;
    let task = client.send_work_notice(&text_to(&["u1", "ghost"], "请回访市民")).await.expect("sent");
    let result = client.send_result(task).await.expect("result");
    assert_eq!(result.invalid, ["ghost"]);
    assert_eq!(result.unread, ["u1"]);
    sim.mark_read(task, "u1");
    assert_eq!(client.send_result(task).await.expect("result").read, ["u1"]);

    // The same content to the same user again today is not delivered.
    let again = client.send_work_notice(&text_to(&["u1", "u2"], "请回访市民")).await.expect("accepted");
    let result = client.send_result(again).await.expect("result");
    assert_eq!(result.forbidden, ["u1"]);
    assert_eq!(result.unread, ["u2"]);

    let task = client.send_work_notice(&WorkNotice { userids: vec![], dept_ids: vec![999], msg: WorkMessage::text("x") }).await.expect("accepted");
    let result = client.send_result(task).await.expect("result");
    assert_eq!(result.invalid_dept_ids, [999]);
}

#[tokio::test]
async fn rate_limit_and_busy_errors_are_retryable() {
    let (sim, client) = setup(org()).await;
    sim.fail_next(1, 143103);
    let err = client.send_work_notice(&text_to(&["u1"], "x")).await.expect_err("rate limited");
    assert_eq!(err.api_code(), Some("143103"));
    assert!(err.is_retryable(), "{err:?}");
    sim.fail_next(1, -1);
    assert!(client.send_work_notice(&text_to(&["u1"], "y")).await.expect_err("busy").is_retryable());
    client.send_work_notice(&text_to(&["u1"], "z")).await.expect("sent once the limit passes");
    assert_eq!(sim.notices().len(), 1);
}

#[tokio::test]
async fn outages_are_retryable_and_bad_requests_are_not() {
    let (mut sim, client) = setup(org()).await;
    let err = client.send_work_notice(&text_to(&["u1"], &"长".repeat(800))).await.expect_err("too large");
    assert!(matches!(err, Error::Invalid(_)) && !err.is_retryable() && err.to_string().contains("2048"), "{err}");
    assert_eq!(sim.requests(), 0, "nothing is sent for an invalid notice");

    let mut config = sim.client_config();
    config.agent_id = 42;
    let wrong_agent = DingTalk::new(config).expect("client");
    let err = wrong_agent.send_work_notice(&text_to(&["u1"], "x")).await.expect_err("bad agent");
    assert_eq!(err.api_code(), Some("40056"));
    assert!(!err.is_retryable());

    sim.set_down(true);
    let err = client.send_work_notice(&text_to(&["u1"], "x")).await.expect_err("down");
    assert!(err.is_retryable(), "{err:?}");
    sim.set_down(false);
    client.send_work_notice(&text_to(&["u1"], "x")).await.expect("up again");

    sim.stop().await;
    let err = client.send_work_notice(&text_to(&["u1"], "y")).await.expect_err("refused");
    assert!(matches!(err, Error::Transport(_)) && err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn timeouts_are_retryable_transport_errors() {
    let sim = DingTalkSimulator::start(org()).await.expect("simulator starts");
    let mut config = sim.client_config();
    config.timeout = Duration::from_millis(100);
    let client = DingTalk::new(config).expect("client");
    sim.set_latency(Duration::from_millis(400));
    let err = client.access_token().await.expect_err("times out");
    assert!(matches!(&err, Error::Transport(m) if m.contains("timed out")) && err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn login_with_dingtalk() {
    let (sim, client) = setup(SimConfig { current_user: Some("u2".into()), ..org() }).await;
    let url = client.authorize_url("http://civichub.test/auth/dingtalk/callback", "st4te");
    assert_eq!(url.path(), "/oauth2/auth");
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    for (k, v) in [("response_type", "code"), ("scope", "openid"), ("prompt", "consent"), ("state", "st4te")] {
        assert!(pairs.contains(&(k.into(), v.into())), "{k} in {url}");
    }

    // The browser's visit: the simulator approves and redirects back.
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let response = browser.get(url).send().await.expect("login page");
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().expect("ascii");
    let back = url::Url::parse(location).expect("redirect URL");
    assert_eq!((back.host_str(), back.path()), (Some("civichub.test"), "/auth/dingtalk/callback"));
    let q: std::collections::HashMap<String, String> = back.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "st4te");
    let code = &q["authCode"];

    let token = client.exchange_code(code).await.expect("exchanged");
    assert_eq!(token.corp_id.as_deref(), Some("dingsimcorp"));
    assert!(token.expire_in > 0);
    let me = client.me(&token.access_token).await.expect("me");
    assert_eq!(me.union_id, "union-u2");
    assert_eq!(me.nick, "员工u2");
    assert_eq!(client.user_by_unionid(&me.union_id).await.expect("userid"), "u2");

    // A code works once.
    let err = client.exchange_code(code).await.expect_err("used code");
    assert!(matches!(&err, Error::Api { status: 400, .. }) && !err.is_retryable(), "{err:?}");

    // Refresh tokens rotate.
    let refreshed = client.refresh_user_token(&token.refresh_token).await.expect("refreshed");
    assert_eq!(client.me(&refreshed.access_token).await.expect("me").union_id, "union-u2");
    assert!(client.refresh_user_token(&token.refresh_token).await.is_err());

    // A login for another organisation is refused.
    let mut config = sim.client_config();
    config.corp_id = Some("dingothercorp".into());
    let other = DingTalk::new(config).expect("client");
    let response = browser.get(other.authorize_url("http://civichub.test/cb", "s")).send().await.expect("login page");
    let back = url::Url::parse(response.headers()["location"].to_str().expect("ascii")).expect("redirect URL");
    let code = back.query_pairs().find(|(k, _)| k == "authCode").map(|(_, v)| v.into_owned()).expect("code");
    let err = other.exchange_code(&code).await.expect_err("other organisation");
    assert!(matches!(&err, Error::Invalid(m) if m.contains("dingsimcorp")), "{err:?}");

    // An expired user token is refused with 401.
    sim.expire_tokens();
    let err = client.me(&refreshed.access_token).await.expect_err("expired");
    assert!(matches!(&err, Error::Api { status: 401, code, .. } if code == "InvalidAuthentication"), "{err:?}");
    assert!(client.me("nonsense").await.is_err());
}

#[tokio::test]
async fn directory_walk_and_paged_users() {
    let (_sim, client) = setup(org()).await;
    let depts = client.walk_departments().await.expect("walked");
    let ids: HashSet<i64> = depts.iter().map(|d| d.dept_id).collect();
    assert_eq!(ids, HashSet::from([10, 11, 20, 21, 30]));
    assert_eq!(depts.len(), 5);
    let d30 = depts.iter().find(|d| d.dept_id == 30).expect("30");
    assert_eq!((d30.name.as_str(), d30.parent_id), ("一组", 20));

    let first = client.list_users(21, 0, 100).await.expect("page");
    assert_eq!(first.list.len(), 100);
    assert!(first.has_more);
    assert_eq!(first.next_cursor, Some(100));
    let all = client.all_users(21).await.expect("all pages");
    assert_eq!(all.len(), 230);
    assert_eq!(all.iter().map(|u| &u.userid).collect::<HashSet<_>>().len(), 230);
    let small = client.list_users(20, 0, 1).await.expect("page");
    assert_eq!((small.list.len(), small.has_more), (1, true));
    let rest = client.list_users(20, small.next_cursor.expect("cursor"), 1).await.expect("page");
    assert_eq!((rest.list[0].userid.as_str(), rest.has_more), ("u3", false));
    assert!(client.list_users(20, 0, 101).await.is_err());

    let u3 = client.get_user("u3").await.expect("user");
    assert_eq!((u3.unionid.as_str(), u3.dept_id_list.as_slice(), u3.job_number.as_deref()), ("union-u3", &[20, 30][..], Some("NO-u3")));
    let err = client.get_user("ghost").await.expect_err("unknown");
    assert_eq!(err.api_code(), Some("60121"));
    assert!(client.list_sub_departments(12345).await.is_err());
}

#[tokio::test]
async fn callback_round_trip() {
    // DingTalk's side: encrypt and sign an event; ours: verify, decrypt, reply.
    let key = "QkPCXgGsnTRGXsl400XZ8hxdmODnk891tcoqIyuVKmB";
    let dingtalk = CallbackCrypto::new("callback-token", key, "dingsimcorp").expect("crypto");
    let event = r#"{"EventType":"user_modify_org","UserId":["u1"],"CorpId":"dingsimcorp","TimeStamp":"1700000000000"}"#;
    let encrypt = dingtalk.encrypt(event).expect("encrypts");
    let signature = dingtalk.signature("1700000000000", "n0nce", &encrypt);

    let ours = CallbackCrypto::new("callback-token", key, "dingsimcorp").expect("crypto");
    let plain = ours.decrypt_event(&signature, "1700000000000", "n0nce", &encrypt).expect("verified and decrypted");
    let parsed = CallbackEvent::parse(&plain).expect("event");
    assert_eq!((parsed.event_type.as_str(), parsed.user_ids.as_slice()), ("user_modify_org", &["u1".to_string()][..]));

    let reply = ours.success_reply().expect("reply");
    assert_eq!(dingtalk.decrypt_event(&reply.msg_signature, &reply.time_stamp, &reply.nonce, &reply.encrypt).expect("DingTalk reads it"), "success");
    assert!(ours.decrypt_event(&signature, "1700000000001", "n0nce", &encrypt).is_err(), "a changed timestamp breaks the signature");
}

#[tokio::test]
async fn simulator_speaks_dingtalk_shapes() {
    let sim = DingTalkSimulator::start(org()).await.expect("simulator starts");
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let get = |path: &str| http.get(base.join(path).expect("url")).send();

    // The older token endpoint.
    let bad: serde_json::Value = get("gettoken?appkey=dingsimappkey&appsecret=nope").await.expect("answer").json().await.expect("json");
    assert_eq!(bad["errcode"], 40089);
    let ok: serde_json::Value = get("gettoken?appkey=dingsimappkey&appsecret=sim-app-secret").await.expect("answer").json().await.expect("json");
    assert_eq!((ok["errcode"].as_i64(), ok["expires_in"].as_i64()), (Some(0), Some(7200)));
    let token = ok["access_token"].as_str().expect("token");
    assert_eq!(sim.token_fetches(), 1);

    // A form-encoded send with msg as JSON text, as older clients do.
    let msg = r#"{"msgtype":"text","text":{"content":"表单发送"}}"#;
    let url = base.join(&format!("topapi/message/corpconversation/asyncsend_v2?access_token={token}")).expect("url");
    let sent: serde_json::Value =
        http.post(url).form(&[("agent_id", "100001"), ("userid_list", "u1, u2"), ("msg", msg)]).send().await.expect("answer").json().await.expect("json");
    assert_eq!(sent["errcode"], 0, "{sent}");
    assert!(sent["task_id"].as_i64().is_some() && sent["request_id"].is_string());
    assert_eq!(sim.notices()[0].userids, ["u1", "u2"]);

    // Unknown token, unknown path, api-style 404.
    let url = base.join("topapi/v2/user/get?access_token=bogus").expect("url");
    let refused: serde_json::Value = http.post(url).json(&serde_json::json!({"userid": "u1"})).send().await.expect("answer").json().await.expect("json");
    assert_eq!(refused["errcode"], 40014);
    let url = base.join(&format!("topapi/nothing?access_token={token}")).expect("url");
    let missing: serde_json::Value = http.post(url).send().await.expect("answer").json().await.expect("json");
    assert_eq!(missing["errcode"], 404);
    let response = get("v1.0/nothing").await.expect("answer");
    assert_eq!(response.status(), 404);
    assert!(response.json::<serde_json::Value>().await.expect("json")["code"].is_string());
}
