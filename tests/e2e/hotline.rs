//! The 12345 hotline over HTTP: whole ticket lifecycles taken by agents,
//! handlers and supervisors signed in through the hub, with the notices
//! they cause reaching the DingTalk and CMPP simulators over NATS.

use std::time::Duration;

use civichub_dingtalk::simulator::DingTalkSimulator;
use civichub_sms::{CmppSimConfig, CmppSimulator};
use serde_json::{Value, json};
use sqlx::Row;

use crate::helpers::{Backend, Browser, NatsServer, TestApp, eventually, http, query_param, service_token};
use crate::messaging::{dingtalk_config, dingtalk_flags};
use crate::messaging_sms::cmpp_flags;

/// A person's access token with scope `hotline`, signed in through the hub.
async fn sign_in(app: &TestApp, secret: &str, username: &str) -> String {
    let rp = app.rp("hotline-console", Some(secret.to_owned())).await;
    let req = rp.authorize(&["hotline"]);
    let cb = Browser::new().sign_in(req.url.as_str(), username, crate::helpers::PASSWORD).await;
    let tokens = rp.exchange(&query_param(&cb, "code").expect("code"), req.verifier).await;
    openidconnect::OAuth2TokenResponse::access_token(&tokens).secret().clone()
}

async fn call(app: &TestApp, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = app.url(path);
    let req = match method {
        "GET" => http().get(url),
        _ => http().post(url),
    };
    let req = req.bearer_auth(token);
    let req = match body {
        Some(b) => req.json(&b),
        None => req,
    };
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn act(app: &TestApp, token: &str, number: &str, action: &str, body: Value) -> Value {
    let (status, v) = call(app, token, "POST", &format!("/api/hotline/tickets/{number}/{action}"), Some(body)).await;
    assert_eq!(status, 200, "{action} on {number}: {v}\n{}", app.log());
    v
}

async fn register(app: &TestApp, token: &str, body: Value) -> String {
    let (status, v) = call(app, token, "POST", "/api/hotline/tickets", Some(body)).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["status"], "registered");
    let number = v["number"].as_str().expect("number").to_owned();
    assert!(number.starts_with("12345-") && number.len() == 21, "{number}");
    number
}

/// Waits for an SMS to `to` whose text contains `needle`.
async fn sms_to(sim: &CmppSimulator, to: &str, needle: &str) -> String {
    let found = eventually(15, || async {
        sim.received().into_iter().find(|s| s.to.iter().any(|t| t == to) && s.text.contains(needle)).map(|s| s.text)
    })
    .await;
    found.unwrap_or_else(|| panic!("no SMS to {to} with {needle:?}; got {:?}", sim.received().iter().map(|s| (&s.to, &s.text)).collect::<Vec<_>>()))
}

crate::both_backends!(ticket_lifecycles_with_notices_over_nats);
crate::both!(hotline_api_checks_input_and_roles, an_answered_call_prefills_the_workbench, crossed_merges_leave_one_ticket_open);

/// The workbench page of a signed-in agent.
async fn workbench(app: &TestApp, browser: &Browser) -> String {
    let mut landing = browser.visit(&app.url("/hotline")).await;
    if let crate::helpers::Landing::Page { url, body, .. } = &landing
        && body.contains("name=\"password\"")
    {
        landing = browser.submit(url, body, &[("username", "agent"), ("password", crate::helpers::PASSWORD)]).await;
    }
    match landing {
        crate::helpers::Landing::Page { status: 200, body, .. } => body,
        crate::helpers::Landing::Page { status, url, body } => panic!("{status} at {url}:\n{body}"),
        crate::helpers::Landing::Callback(u) => panic!("redirected to {u}"),
    }
}

async fn an_answered_call_prefills_the_workbench(app: &TestApp) {
    app.add_user("agent", &["--role", "agent"]);
    let browser = Browser::new();
    let page = workbench(app, &browser).await;
    assert!(!page.contains("通话中"), "no call yet");
    let centre = service_token(app, &["fusion:events"]).await;
    let event = |kind: &str| json!({"event": kind, "callId": "c-1001", "from": "13912345678", "to": "12345", "direction": "inbound", "agent": "agent"});
    for kind in ["newCall", "answer"] {
        let r = http().post(app.url("/api/fusion/call-events")).bearer_auth(&centre).json(&event(kind)).send().await.unwrap();
        assert_eq!(r.status(), 202);
    }
    let page = eventually(15, || async {
        let page = workbench(app, &browser).await;
        page.contains("通话中").then_some(page)
    })
    .await
    .unwrap_or_else(|| panic!("the answered call never showed\n{}", app.log()));
    assert!(page.contains("name=\"caller_phone\" maxlength=\"20\" inputmode=\"tel\" autocomplete=\"off\" value=\"13912345678\""), "{page}");
    // Hung up (a hangup need not say whose call it was): the form is no longer pre-filled.
    let mut hangup = event("hangup");
    hangup.as_object_mut().unwrap().remove("agent");
    let r = http().post(app.url("/api/fusion/call-events")).bearer_auth(&centre).json(&hangup).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let cleared = eventually(15, || async { (!workbench(app, &browser).await.contains("通话中")).then_some(()) }).await;
    assert!(cleared.is_some(), "the call ended");
    // The caller's number is sealed in the database too.
    let mut db = app.db().await;
    let caller: String = sqlx::query("SELECT caller FROM hotline_calls WHERE call_id = 'c-1001'").fetch_one(&mut db).await.unwrap().try_get("caller").unwrap();
    assert!(caller.starts_with("v1:") && !caller.contains("1391234"));
}
crate::both_backends!(citizens_register_and_look_up_without_login, an_sms_becomes_a_ticket_and_a_survey_answer_rates_it);

async fn an_sms_becomes_a_ticket_and_a_survey_answer_rates_it(backend: Backend) {
    // The embedded bus: SMS intake works without NATS too.
    let sms = CmppSimulator::start(CmppSimConfig::default()).await.unwrap();
    let flags = cmpp_flags(&sms);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = TestApp::spawn_with(backend, &flags).await;
    app.add_user("agent", &["--role", "agent"]);
    app.add_user("zhang", &["--role", "handler", "--department", "城管局", "--phone", "13800000001"]);
    let secret = app.add_client("hotline-console", &["--first-party", "--scope", "hotline"]).expect("secret");
    let agent = sign_in(&app, &secret, "agent").await;
    let zhang = sign_in(&app, &secret, "zhang").await;

    // A bare survey answer with nothing to rate is not a ticket.
    sms.inject_mo("13912345678", "1").unwrap();
    sms.inject_mo("13912345678", "幸福小区垃圾三天没人清运").unwrap();
    let answer = sms_to(&sms, "13912345678", "工单号").await;
    let start = answer.find("12345-").expect("a number in the answer");
    let number = answer[start..start + 21].to_owned();
    let (_, list) = call(&app, &agent, "GET", "/api/hotline/tickets", None).await;
    assert_eq!(list["total"], 1, "{list}");
    let t = &list["items"][0];
    assert_eq!((t["number"].as_str(), t["channel"].as_str(), t["caller_phone"].as_str()), (Some(number.as_str()), Some("sms"), Some("13912345678")));
    assert_eq!(t["content"], "幸福小区垃圾三天没人清运");

    act(&app, &agent, &number, "dispatch", json!({"department": "城管局"})).await;
    act(&app, &zhang, &number, "accept", json!({})).await;
    act(&app, &zhang, &number, "reply", json!({"text": "已安排环卫清运。"})).await;
    sms_to(&sms, "13912345678", "回复1满意").await;
    sms.inject_mo("13912345678", "3").unwrap();
    let rated = eventually(15, || async {
        let (_, t) = call(&app, &agent, "GET", &format!("/api/hotline/tickets/{number}"), None).await;
        (t["status"] == "visited").then_some(t)
    })
    .await
    .unwrap_or_else(|| panic!("the survey answer was not recorded\n{}", app.log()));
    assert_eq!(rated["rating"], "unsatisfied");
    let last = rated["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["action"].as_str(), last["actor"].as_str()), (Some("callback"), Some("citizen-sms")));
    // Unsatisfied: the agent reopens it.
    act(&app, &agent, &number, "reopen", json!({"reason": "群众短信评价不满意"})).await;
}

async fn citizens_register_and_look_up_without_login(backend: Backend) {
    let app = TestApp::spawn_with(backend, &["--hotline-rate-limit", "6"]).await;
    let form = |body: Value| http().post(app.url("/api/public/hotline/tickets")).json(&body).send();
    let r = form(json!({"content": "楼下餐馆油烟扰民", "caller_phone": "+86 139-1234-5678", "caller_name": "李女士"})).await.unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let number = v["number"].as_str().unwrap().to_owned();
    assert_eq!(v["status"], "registered");
    let r = form(json!({"content": "x", "caller_phone": "12345"})).await.unwrap();
    assert_eq!(r.status(), 400, "a mobile number is needed to look the ticket up");
    let r = form(json!({"content": "x", "caller_phone": "13912345678", "channel": "phone"})).await.unwrap();
    assert_eq!(r.status(), 400, "the form sets the channel itself");

    let lookup = |q: &str| http().get(app.url(&format!("/api/public/hotline/tickets/{number}{q}"))).send();
    let r = lookup("?phone_last4=5678").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["status"].as_str(), v["content"].as_str()), (Some("registered"), Some("楼下餐馆油烟扰民")));
    assert_eq!(v["progress"][0]["event"], "created");
    assert!(v.get("caller_phone").is_none() && v.get("caller_name").is_none(), "{v}");
    assert_eq!(lookup("?phone_last4=0000").await.unwrap().status(), 404, "a wrong phone learns nothing");
    assert_eq!(lookup("").await.unwrap().status(), 400);
    // Six requests a minute from one address: the next is refused with Retry-After.
    let r = lookup("?phone_last4=5678").await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
}

async fn ticket_lifecycles_with_notices_over_nats(backend: Backend) {
    let nats = NatsServer::start().await;
    let sms = CmppSimulator::start(CmppSimConfig::default()).await.unwrap();
    let dingtalk = DingTalkSimulator::start(dingtalk_config()).await.unwrap();
    let mut flags = vec!["--nats-url".to_owned(), nats.url(), "--hotline-deadline-sweep".into(), "1".into()];
    flags.extend(cmpp_flags(&sms));
    flags.extend(dingtalk_flags(&dingtalk));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = TestApp::spawn_with(backend, &flags).await;

    app.add_user("agent", &["--role", "agent"]);
    app.add_user("zhang", &["--role", "handler", "--department", "城管局", "--phone", "13800000001"]);
    app.cli_ok(&["user", "link", "zhang", "--dingtalk", "zhangsan"], None);
    app.add_user("li", &["--role", "handler", "--department", "住建局", "--phone", "13800000002"]);
    app.add_user("boss", &["--role", "supervisor", "--phone", "13800000003"]);
    let secret = app.add_client("hotline-console", &["--first-party", "--scope", "hotline"]).expect("secret");
    let agent = sign_in(&app, &secret, "agent").await;
    let zhang = sign_in(&app, &secret, "zhang").await;
    let li = sign_in(&app, &secret, "li").await;
    let boss = sign_in(&app, &secret, "boss").await;

    // Direct answer from the knowledge base: closed at once.
    let direct = register(&app, &agent, json!({"channel": "phone", "content": "公积金提取需要什么材料？", "caller_phone": "13900000009"})).await;
    let v = act(&app, &agent, &direct, "answer-directly", json!({"answer": "携带身份证和购房合同到公积金中心办理。"})).await;
    assert_eq!((v["status"].as_str(), v["direct_answer"].as_bool()), (Some("closed"), Some(true)));

    // Registered: the citizen hears the number by SMS.
    let number = register(
        &app,
        &agent,
        json!({"channel": "phone", "caller_name": "王小明", "caller_phone": "13912345678", "content": "幸福小区门口路灯不亮已一周",
               "location": "幸福路12号", "category": "070101"}),
    )
    .await;
    sms_to(&sms, "13912345678", &number).await;
    // The caller's name and phone are sealed at rest.
    let mut db = app.db().await;
    let stored = sqlx::query("SELECT doc, caller_phone FROM hotline_tickets WHERE number = $1").bind(&number).fetch_one(&mut db).await.unwrap();
    let (doc, phone_column): (String, Option<String>) = (stored.try_get("doc").unwrap(), stored.try_get("caller_phone").unwrap());
    assert!(!doc.contains("13912345678") && !doc.contains("王小明") && doc.contains("\"caller_phone\":\"v1:"), "{doc}");
    assert!(phone_column.is_some_and(|p| p.len() == 64 && !p.contains("1391234")));

    // A repeat of the same matter is merged into it.
    let repeat = register(&app, &agent, json!({"channel": "app", "content": "幸福小区路灯坏了", "category": "070101"})).await;
    let v = act(&app, &agent, &repeat, "merge", json!({"into": number})).await;
    assert_eq!((v["status"].as_str(), v["merged_into"].as_str()), (Some("merged"), Some(number.as_str())));

    // Dispatched to 城管局: its handler gets a DingTalk work notice.
    let v = act(&app, &agent, &number, "dispatch", json!({"department": "城管局"})).await;
    assert_eq!(v["status"], "dispatched");
    assert!(v["sign_due_ms"].as_i64().is_some() && v["due_ms"].as_i64().is_some(), "{v}");
    let notices = dingtalk.wait_for_notices(1, Duration::from_secs(15)).await;
    assert_eq!(notices.len(), 1, "{}", app.log());
    assert_eq!(notices[0].userids, ["zhangsan"]);
    assert!(format!("{:?}", notices[0].msg).contains(&number), "{:?}", notices[0].msg);

    // Another department neither sees nor signs it; its own sees the caller masked.
    let (status, _) = call(&app, &li, "GET", &format!("/api/hotline/tickets/{number}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&app, &li, "POST", &format!("/api/hotline/tickets/{number}/accept"), Some(json!({}))).await;
    assert_eq!(status, 404);
    let (status, seen) = call(&app, &zhang, "GET", &format!("/api/hotline/tickets/{number}"), None).await;
    assert_eq!((status, seen["caller_phone"].as_str(), seen["caller_name"].as_str()), (200, Some("139****5678"), Some("王**")));

    // Returned (not our area), reviewed and re-dispatched to 住建局, whose handler
    // has no DingTalk and is told by SMS.
    act(&app, &zhang, &number, "accept", json!({})).await;
    act(&app, &zhang, &number, "return", json!({"reason": "属地不符，路灯属小区物业"})).await;
    let (status, err) = call(&app, &agent, "POST", &format!("/api/hotline/tickets/{number}/review-return"), Some(json!({"decision": "uphold", "reason": "x"}))).await;
    assert_eq!(status, 403, "only supervisors review returns: {err}");
    let v = act(&app, &boss, &number, "review-return", json!({"decision": "redispatch", "department": "住建局"})).await;
    assert_eq!((v["status"].as_str(), v["department"].as_str()), (Some("dispatched"), Some("住建局")));
    sms_to(&sms, "13800000002", &number).await;

    // An extension asked before the deadline and granted moves the deadline.
    act(&app, &li, &number, "accept", json!({})).await;
    let before = act(&app, &li, &number, "extend", json!({"working_days": 3, "reason": "需物业配合更换灯具"})).await["due_ms"].as_i64().unwrap();
    let after = act(&app, &boss, &number, "review-extension", json!({"approve": true})).await["due_ms"].as_i64().unwrap();
    assert!(after >= before + 3 * 86_400_000, "{before} → {after}");
    sms_to(&sms, "13800000002", "延期申请已批准").await;

    // Overdue (the clock moved past the deadline): the handler is pressed, the supervisors
    // are told, the ticket is listed as overdue and supervised.
    sqlx::query("UPDATE hotline_tickets SET due_ms = 1, next_alert_ms = 1 WHERE number = $1").bind(&number).execute(&mut db).await.unwrap();
    sms_to(&sms, "13800000002", "督办").await;
    sms_to(&sms, "13800000003", &format!("超期工单 {number}")).await;
    let (_, overdue) = call(&app, &boss, "GET", "/api/hotline/tickets?overdue=true", None).await;
    assert!(overdue["items"].as_array().unwrap().iter().any(|t| t["number"] == number), "{overdue}");
    let v = act(&app, &boss, &number, "supervise", json!({"level": "yellow", "note": "请加快办理"})).await;
    assert_eq!(v["supervision"], "yellow");
    sms_to(&sms, "13800000002", "黄牌督办").await;

    // Replied: the citizen is told; called back unsatisfied, reopened, and the department hears again.
    act(&app, &li, &number, "reply", json!({"text": "已协调物业更换路灯。"})).await;
    sms_to(&sms, "13912345678", "已办理答复").await;
    act(&app, &agent, &number, "callback", json!({"rating": "unsatisfied", "note": "仍有两盏不亮"})).await;
    let v = act(&app, &agent, &number, "reopen", json!({"reason": "群众不满意"})).await;
    assert_eq!((v["status"].as_str(), v["reopened"].as_i64()), (Some("dispatched"), Some(1)));
    let reopened = eventually(15, || async {
        (sms.received().iter().filter(|s| s.to == ["13800000002"] && s.text.contains(&number)).count() >= 2).then_some(())
    })
    .await;
    assert!(reopened.is_some(), "the handler hears of the reopened ticket");
    act(&app, &li, &number, "accept", json!({})).await;
    act(&app, &li, &number, "reply", json!({"text": "两盏路灯已全部修复。"})).await;
    act(&app, &agent, &number, "callback", json!({"rating": "satisfied"})).await;
    let v = act(&app, &agent, &number, "close", json!({})).await;
    assert_eq!(v["status"], "closed");

    // Every action is in the audit trail: who, what, from which state.
    let (_, t) = call(&app, &agent, "GET", &format!("/api/hotline/tickets/{number}"), None).await;
    let trail: Vec<(String, String, String)> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] != "deadline")
        .map(|e| (e["action"].as_str().unwrap().to_owned(), e["actor"].as_str().unwrap().to_owned(), e["from_status"].as_str().unwrap_or("-").to_owned()))
        .collect();
    assert!(t["events"].as_array().unwrap().iter().any(|e| e["event"] == "overdue" && e["actor"] == "system"), "{t}");
    let expected = [
        ("register", "agent", "-"),
        ("dispatch", "agent", "registered"),
        ("accept", "zhang", "dispatched"),
        ("return", "zhang", "accepted"),
        ("review-return", "boss", "returned"),
        ("accept", "li", "dispatched"),
        ("extend", "li", "accepted"),
        ("review-extension", "boss", "accepted"),
        ("supervise", "boss", "accepted"),
        ("reply", "li", "accepted"),
        ("callback", "agent", "replied"),
        ("reopen", "agent", "visited"),
        ("accept", "li", "dispatched"),
        ("reply", "li", "accepted"),
        ("callback", "agent", "replied"),
        ("close", "agent", "visited"),
    ];
    let expected: Vec<(String, String, String)> = expected.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
    assert_eq!(trail, expected);

    // The leaders' and supervisors' KPIs: three tickets today, one answered directly, one merged.
    let (status, kpi) = call(&app, &boss, "GET", "/api/hotline/stats", None).await;
    assert_eq!(status, 200, "{kpi}");
    assert_eq!((kpi["total"].as_u64(), kpi["merged"].as_u64()), (Some(3), Some(1)), "{kpi}");
    assert_eq!(kpi["direct_answer_rate"], 0.5);
    assert_eq!(kpi["callback_rate"], 1.0);
    assert_eq!(kpi["satisfaction_rate"], 1.0, "the last rating counts");
    assert_eq!(kpi["by_channel"]["phone"], 2);
    assert_eq!(kpi["by_department"][0]["department"], "住建局");
    assert_eq!(kpi["one_time_resolution_rate"], 0.0, "the one handled ticket was reopened");
    let daily = kpi["daily"].as_array().expect("daily");
    assert_eq!(daily.len(), 30, "the last 30 days, quiet ones included");
    // Today's, or yesterday's and today's if the city's midnight (16:00 UTC)
    // fell while this test ran.
    let last_two = daily[28]["registered"].as_u64().unwrap_or(0) + daily[29]["registered"].as_u64().unwrap_or(0);
    assert_eq!(last_two, 3, "{kpi}");
    let (_, week) = call(&app, &boss, "GET", "/api/hotline/stats?from=2026-01-01&to=2026-01-07", None).await;
    assert_eq!((week["total"].as_u64(), week["daily"].as_array().map(Vec::len)), (Some(0), Some(7)), "{week}");
    let (status, _) = call(&app, &agent, "GET", "/api/hotline/stats", None).await;
    assert_eq!(status, 403);
    let (status, _) = call(&app, &boss, "GET", "/api/hotline/stats?from=2026-13-01", None).await;
    assert_eq!(status, 400);
    let (status, _) = call(&app, &boss, "GET", "/api/hotline/stats?to=%2B262142-12-31", None).await;
    assert_eq!(status, 400, "a date at the end of the calendar is refused, not a crash");
    let (status, _) = call(&app, &boss, "GET", "/api/hotline/tickets?page=9223372036854775807", None).await;
    assert_eq!(status, 200, "a page far beyond the end is just empty");

    // The events are on NATS for other systems.
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("CIVICHUB_EVENTS").await.expect("events stream");
    let info = stream.info().await.expect("info");
    assert!(info.state.messages >= 20, "ticket events in JetStream: {}", info.state.messages);
    let msg = stream.get_last_raw_message_by_subject("civichub.hotline.ticket.closed").await.expect("closed event");
    let env: Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(env["payload"]["number"], number);

    // Co-handling: what 住建局 contributes reaches the lead department's handler.
    let shared = register(&app, &agent, json!({"channel": "phone", "content": "小区排水管破裂，路面积水", "caller_phone": "13912340001"})).await;
    act(&app, &agent, &shared, "dispatch", json!({"department": "城管局", "co_departments": ["住建局"]})).await;
    sms_to(&sms, "13800000002", &format!("协办工单 {shared}")).await;
    act(&app, &li, &shared, "contribute", json!({"text": "管网属小区物业维护，已通知物业抢修"})).await;
    let heard = eventually(15, || async {
        dingtalk.notices().into_iter().find(|n| n.userids == ["zhangsan"] && format!("{:?}", n.msg).contains("协办意见")).map(|n| format!("{:?}", n.msg))
    })
    .await
    .unwrap_or_else(|| panic!("the lead never heard of the contribution\n{}", app.log()));
    assert!(heard.contains(&shared) && heard.contains("住建局") && heard.contains("已通知物业抢修"), "{heard}");
}

/// Two agents merge two reports of one matter into each other at the same
/// moment: one merge wins and the other is refused, never both (which would
/// close both tickets with neither left to handle).
async fn crossed_merges_leave_one_ticket_open(app: &TestApp) {
    app.add_user("agent", &["--role", "agent"]);
    let secret = app.add_client("hotline-console", &["--first-party", "--scope", "hotline"]).expect("secret");
    let agent = sign_in(app, &secret, "agent").await;
    for round in 0..12 {
        let a = register(app, &agent, json!({"channel": "web", "content": format!("小区门口积水{round}"), "category": "070101"})).await;
        let b = register(app, &agent, json!({"channel": "app", "content": format!("小区门口积水严重{round}"), "category": "070101"})).await;
        let (a_into_b, b_into_a) = (format!("/api/hotline/tickets/{a}/merge"), format!("/api/hotline/tickets/{b}/merge"));
        let (ab, ba) = tokio::join!(
            call(app, &agent, "POST", &a_into_b, Some(json!({"into": b}))),
            call(app, &agent, "POST", &b_into_a, Some(json!({"into": a}))),
        );
        let mut codes = [ab.0, ba.0];
        codes.sort();
        assert_eq!(codes, [200, 409], "round {round}: {ab:?} {ba:?}\n{}", app.log());
        let mut merged = 0;
        for n in [&a, &b] {
            let (status, t) = call(app, &agent, "GET", &format!("/api/hotline/tickets/{n}"), None).await;
            assert_eq!(status, 200, "{t}");
            merged += usize::from(t["status"] == "merged");
        }
        assert_eq!(merged, 1, "round {round}: exactly one of {a} and {b} is merged");
    }
}

async fn hotline_api_checks_input_and_roles(app: &TestApp) {
    app.add_user("agent", &["--role", "agent"]);
    app.add_user("clerk", &[]);
    let secret = app.add_client("hotline-console", &["--first-party", "--scope", "hotline"]).expect("secret");
    let agent = sign_in(app, &secret, "agent").await;
    let clerk = sign_in(app, &secret, "clerk").await;
    let system = service_token(app, &["hotline"]).await;
    let other = service_token(app, &["kb:read"]).await;

    let r = http().post(app.url("/api/hotline/tickets")).json(&json!({"channel": "web", "content": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (status, err) = call(app, &other, "POST", "/api/hotline/tickets", Some(json!({"channel": "web", "content": "x"}))).await;
    assert_eq!((status, err["error"].as_str()), (403, Some("insufficient_scope")));
    let (status, _) = call(app, &clerk, "POST", "/api/hotline/tickets", Some(json!({"channel": "web", "content": "x"}))).await;
    assert_eq!(status, 403, "no agent role");
    for (body, needle) in [
        (json!({"channel": "fax", "content": "x"}), "unknown variant `fax`, expected one of `phone`"),
        (json!({"channel": "web", "content": "  "}), "content"),
        (json!({"channel": "web", "content": "x", "caller_phone": "call me"}), "phone"),
        (json!({"channel": "web", "content": "x", "category": "7"}), "category"),
        (json!({"channel": "web", "content": "x", "colour": "red"}), "colour"),
    ] {
        let (status, err) = call(app, &agent, "POST", "/api/hotline/tickets", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(err["message"].as_str().unwrap_or_default().contains(needle), "{body}: {err}");
    }
    // A system (the city app) registers and reads; numbers run on within the day.
    let first = register(app, &system, json!({"channel": "app", "content": "噪音扰民", "category": "070101"})).await;
    let second = register(app, &agent, json!({"channel": "web", "content": "噪音扰民2", "category": "070101"})).await;
    assert_eq!(second[..15], first[..15]);
    assert_eq!(second[15..].parse::<u32>().unwrap(), first[15..].parse::<u32>().unwrap() + 1);
    let (status, _) = call(app, &system, "POST", &format!("/api/hotline/tickets/{first}/dispatch"), Some(json!({"department": "城管局"}))).await;
    assert_eq!(status, 403, "systems do not act on tickets");

    // Departments that handled the category before are suggested.
    act(app, &agent, &first, "dispatch", json!({"department": "城管局"})).await;
    let (_, v) = call(app, &agent, "POST", "/api/hotline/tickets", Some(json!({"channel": "web", "content": "又有噪音", "category": "070101"}))).await;
    assert_eq!(v["suggested_departments"], json!(["城管局"]));

    // The dispatch catalogue in the knowledge base names a department too; it leads, history follows.
    let editor = service_token(app, &["kb:read", "kb:write"]).await;
    let entry = json!({ "title": "住宅电梯故障由谁负责维修？", "body": "住宅电梯故障、困人，由电梯使用管理单位负责维修，住建部门监督。", "department": "市住房和城乡建设局", "audience": "internal" });
    let r = http().post(app.url("/api/kb/entries")).bearer_auth(&editor).json(&entry).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let r = http().post(app.url(&format!("/api/kb/entries/{id}/publish"))).bearer_auth(&editor).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut found = false;
    for _ in 0..50 {
        let r = http().get(app.url("/api/kb/search?q=%E7%94%B5%E6%A2%AF")).bearer_auth(&editor).send().await.unwrap(); // 电梯
        if r.json::<Value>().await.unwrap()["total"] == 1 {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the catalogue entry is searchable");
    let (_, v) = call(app, &agent, "POST", "/api/hotline/tickets", Some(json!({"channel": "web", "content": "我家小区电梯故障三天没人修", "category": "070101"}))).await;
    let suggested = v["suggested_departments"].clone();
    assert_eq!(suggested, json!(["市住房和城乡建设局", "城管局"]));

    // Illegal transitions, unknown actions and tickets, bad bodies.
    let (status, err) = call(app, &agent, "POST", &format!("/api/hotline/tickets/{second}/close"), Some(json!({}))).await;
    assert_eq!(status, 409, "{err}");
    assert!(err["message"].as_str().unwrap().contains("registered"), "{err}");
    let (status, _) = call(app, &agent, "POST", &format!("/api/hotline/tickets/{second}/fly"), Some(json!({}))).await;
    assert_eq!(status, 400);
    let (status, _) = call(app, &agent, "POST", &format!("/api/hotline/tickets/{second}/dispatch"), Some(json!({}))).await;
    assert_eq!(status, 400);
    let (status, _) = call(app, &agent, "GET", "/api/hotline/tickets/12345-20260101-999999", None).await;
    assert_eq!(status, 404);
    let (status, _) = call(app, &agent, "GET", "/api/hotline/tickets/not-a-number", None).await;
    assert_eq!(status, 400);
    let (status, _) = call(app, &agent, "GET", "/api/hotline/tickets?status=lost", None).await;
    assert_eq!(status, 400);
    let (status, list) = call(app, &agent, "GET", "/api/hotline/tickets?status=registered", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 3, "{list}");
    let (status, _) = call(app, &clerk, "GET", "/api/hotline/tickets", None).await;
    assert_eq!(status, 403);
    let r = http().post(app.url("/api/hotline/tickets")).bearer_auth(&agent).body(vec![b' '; 70 * 1024]).send().await.unwrap();
    assert_eq!(r.status(), 413);

    // Co-handling: the helping department lists the ticket and contributes; the lead replies.
    app.add_user("power", &["--role", "handler", "--department", "供电公司"]);
    app.add_user("lead", &["--role", "handler", "--department", "城管局"]);
    let power = sign_in(app, &secret, "power").await;
    let lead = sign_in(app, &secret, "lead").await;
    let shared = register(app, &agent, json!({"channel": "phone", "content": "路灯线路老化", "caller_phone": "13912340000"})).await;
    act(app, &agent, &shared, "dispatch", json!({"department": "城管局", "co_departments": ["供电公司"]})).await;
    let (status, list) = call(app, &power, "GET", "/api/hotline/tickets", None).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().map(|t| t.iter().map(|t| t["number"].clone()).collect::<Vec<_>>()), Some(vec![json!(shared)]), "{list}");
    let (status, err) = call(app, &power, "POST", &format!("/api/hotline/tickets/{shared}/accept"), None).await;
    assert_eq!(status, 403, "{err}");
    let (status, err) = call(app, &lead, "POST", &format!("/api/hotline/tickets/{shared}/contribute"), Some(json!({"text": "x"}))).await;
    assert_eq!(status, 403, "{err}");
    let v = act(app, &power, &shared, "contribute", json!({"text": "线路已检修，待城管局更换灯具"})).await;
    assert_eq!(v["status"], "dispatched");
    let (_, seen) = call(app, &lead, "GET", &format!("/api/hotline/tickets/{shared}"), None).await;
    assert_eq!(seen["contributions"][0]["department"], "供电公司", "{seen}");
    assert_eq!(seen["contributions"][0]["text"], "线路已检修，待城管局更换灯具");
}
