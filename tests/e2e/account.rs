//! `/account`: the person's recent sign-ins and their password, behind
//! single sign-on.

use std::time::Duration;

use civichub_dingtalk::simulator::DingTalkSimulator;

use crate::helpers::{Backend, Browser, Landing, PASSWORD, TestApp, csrf};
use crate::messaging::{dingtalk_config, dingtalk_flags};

crate::both!(the_account_page_changes_the_password_and_lists_sign_ins, new_ways_to_sign_in_need_a_recent_sign_in, the_home_page_leads_to_what_each_person_uses);
crate::both_backends!(people_hear_of_changes_to_their_sign_in);

async fn signed_in_browser(app: &TestApp, username: &str, password: &str) -> Browser {
    let browser = Browser::new();
    let (_, body) = browser.visit(&app.url("/account")).await.page();
    assert!(body.contains("name=\"password\""), "the login page first: {body}");
    let login = url::Url::parse(&app.url("/login")).unwrap();
    let (status, body) = browser.submit(&login, &body, &[("username", username), ("password", password)]).await.page();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("我的账号"), "{body}");
    browser
}

async fn the_account_page_changes_the_password_and_lists_sign_ins(app: &TestApp) {
    app.add_user("mei", &["--name", "韩梅梅", "--department", "市大数据局", "--email", "mei@city.gov.cn"]);
    let other_device = signed_in_browser(app, "mei", PASSWORD).await;
    // An app on the other device holds an offline refresh token.
    let notes = app.add_client("notes", &["--first-party"]).expect("secret");
    let rp = app.rp("notes", Some(notes)).await;
    let req = rp.authorize(&["offline_access"]);
    let cb = other_device.visit(req.url.as_str()).await.callback();
    let offline = rp.exchange(&crate::helpers::query_param(&cb, "code").unwrap(), req.verifier).await;
    let browser = signed_in_browser(app, "mei", PASSWORD).await;
    let (_, body) = browser.visit(&app.url("/account")).await.page();
    assert!(body.contains("韩梅梅") && body.contains("市大数据局"), "{body}");
    assert_eq!(body.matches("class=\"signin\"").count(), 2, "two sign-ins listed: {body}");
    assert!(body.contains("<td class=\"method\">密码</td>"), "{body}");

    let account = url::Url::parse(&app.url("/account")).unwrap();
    let form = |body: &str| body[body.find("<form method=\"post\" action=\"/account/password\"").unwrap()..].to_owned();
    // A wrong current password, and two new ones that differ, are refused.
    let (status, page) = browser.submit(&account, &form(&body), &[("current", "wrong-password"), ("new", "new-secret-123"), ("confirm", "new-secret-123")]).await.page();
    assert_eq!(status, 401);
    assert!(page.contains("当前密码不正确"), "{page}");
    let (status, page) = browser.submit(&account, &form(&page), &[("current", PASSWORD), ("new", "new-secret-123"), ("confirm", "new-secret-124")]).await.page();
    assert_eq!(status, 400);
    assert!(page.contains("不一致"), "{page}");
    let (status, page) = browser.submit(&account, &form(&page), &[("current", PASSWORD), ("new", "short"), ("confirm", "short")]).await.page();
    assert_eq!(status, 400, "{page}");

    // Changed: this browser stays signed in, the other device is signed out.
    let (status, page) = browser.submit(&account, &form(&page), &[("current", PASSWORD), ("new", "new-secret-123"), ("confirm", "new-secret-123")]).await.page();
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("密码已保存"), "{page}");
    match other_device.visit(&app.url("/account")).await {
        Landing::Page { body, .. } => assert!(body.contains("name=\"password\""), "the other device signs in again: {body}"),
        Landing::Callback(u) => panic!("{u}"),
    }
    use openidconnect::OAuth2TokenResponse;
    let refreshed = rp.client.exchange_refresh_token(offline.refresh_token().unwrap()).unwrap().request_async(&crate::helpers::http()).await;
    assert!(refreshed.is_err(), "what the old password granted, offline tokens included, stops working");
    // The old password no longer works; the new one does.
    let fresh = Browser::new();
    let (_, login) = fresh.visit(&app.url("/account")).await.page();
    let login_url = url::Url::parse(&app.url("/login")).unwrap();
    let (status, _) = fresh.submit(&login_url, &login, &[("username", "mei"), ("password", PASSWORD)]).await.page();
    assert_eq!(status, 401);
    signed_in_browser(app, "mei", "new-secret-123").await;
    let log = app.cli_ok(&["audit", "list"], None);
    assert!(log.contains("password.changed"), "{log}");
}

async fn people_hear_of_changes_to_their_sign_in(backend: Backend) {
    let dingtalk = DingTalkSimulator::start(dingtalk_config()).await.unwrap();
    let flags = dingtalk_flags(&dingtalk);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = TestApp::spawn_with(backend, &flags).await;
    app.add_user("zhang", &["--name", "张三"]);
    app.cli_ok(&["user", "link", "zhang", "--dingtalk", "zhangsan"], None);

    // The password changed on the account page: a DingTalk work notice says so.
    let browser = signed_in_browser(&app, "zhang", PASSWORD).await;
    let (_, body) = browser.visit(&app.url("/account")).await.page();
    let at = body.find("<form method=\"post\" action=\"/account/password\"").unwrap();
    let account = url::Url::parse(&app.url("/account")).unwrap();
    let (status, _) = browser.submit(&account, &body[at..], &[("current", PASSWORD), ("new", "new-secret-123"), ("confirm", "new-secret-123")]).await.page();
    assert_eq!(status, 200);
    let notices = dingtalk.wait_for_notices(1, Duration::from_secs(15)).await;
    assert_eq!(notices.len(), 1, "{}", app.log());
    assert_eq!(notices[0].userids, ["zhangsan"]);
    assert!(format!("{:?}", notices[0].msg).contains("密码已修改"), "{:?}", notices[0].msg);

    // An administrator's reset is told too; a plain sign-in is not.
    signed_in_browser(&app, "zhang", "new-secret-123").await;
    app.cli_ok(&["user", "reset-mfa", "zhang"], None);
    let notices = dingtalk.wait_for_notices(2, Duration::from_secs(15)).await;
    assert_eq!(notices.len(), 2, "{}", app.log());
    assert!(format!("{:?}", notices[1].msg).contains("管理员已重置"), "{:?}", notices[1].msg);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(dingtalk.notices().len(), 2, "nothing for the sign-ins");
}

/// Moves the browser's sign-in an hour into the past.
async fn age_sign_in(app: &TestApp, username: &str, by_secs: i64) {
    let mut db = app.db().await;
    sqlx::query("UPDATE sso_sessions SET auth_time = auth_time - $1 WHERE user_id = (SELECT id FROM users WHERE username = $2)")
        .bind(by_secs)
        .bind(username)
        .execute(&mut db)
        .await
        .unwrap();
}

/// An authenticator app or a first password outlives the session: someone at
/// an unlocked screen an hour after the sign-in may add neither.
async fn new_ways_to_sign_in_need_a_recent_sign_in(app: &TestApp) {
    app.add_user("lei", &["--name", "李雷"]);
    let browser = signed_in_browser(app, "lei", PASSWORD).await;
    age_sign_in(app, "lei", 3600).await;
    let (_, page) = browser.visit(&app.url("/account")).await.page();
    assert!(page.contains("id=\"mfa-locked\"") && !page.contains("action=\"/account/totp/begin\""), "{page}");
    let token = csrf(&page);
    for step in ["begin", "confirm"] {
        let resp = browser.client.post(app.url(&format!("/account/totp/{step}"))).form(&[("csrf", token.as_str()), ("code", "123456")]).send().await.unwrap();
        assert_eq!(resp.status(), 303, "{step}");
        let to = resp.headers()["location"].to_str().unwrap().to_owned();
        assert!(to.starts_with("/login?") && to.contains("return_to=%2Faccount%23mfa") && to.contains("login_hint=lei"), "{to}");
    }
    let mut db = app.db().await;
    let pending: i64 = sqlx::Row::get(&sqlx::query("SELECT COUNT(*) AS n FROM mfa_pending").fetch_one(&mut db).await.unwrap(), "n");
    assert_eq!(pending, 0, "no secret was made");

    // Signing in again (the login page the redirect names) unlocks it, and comes back to the section.
    let resp = browser.client.post(app.url("/account/totp/begin")).form(&[("csrf", token.as_str())]).send().await.unwrap();
    let login = app.url(resp.headers()["location"].to_str().unwrap());
    let (_, body) = browser.visit(&login).await.page();
    let (status, page) = browser.submit(&url::Url::parse(&login).unwrap(), &body, &[("username", "lei"), ("password", PASSWORD)]).await.page();
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("action=\"/account/totp/begin\"") && !page.contains("id=\"mfa-locked\""), "{page}");
    let resp = browser.client.post(app.url("/account/totp/begin")).form(&[("csrf", csrf(&page).as_str())]).send().await.unwrap();
    let (_, page) = browser.follow(resp).await.page();
    assert!(page.contains("id=\"totp-secret\""), "enrolment began: {page}");
    let token = csrf(&page);

    // A person without a password (one who signs in through DingTalk) sets a
    // first one only soon after signing in: no current password proves who they are.
    sqlx::query("UPDATE users SET password_hash = NULL WHERE username = 'lei'").execute(&mut db).await.unwrap();
    age_sign_in(app, "lei", 3600).await;
    let (_, page) = browser.visit(&app.url("/account")).await.page();
    assert!(page.contains("id=\"password-locked\"") && !page.contains("action=\"/account/password\""), "{page}");
    let first = [("csrf", token), ("new", "first-secret-1".to_owned()), ("confirm", "first-secret-1".to_owned())];
    let resp = browser.client.post(app.url("/account/password")).form(&first).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert!(resp.headers()["location"].to_str().unwrap().contains("return_to=%2Faccount%23password"), "{:?}", resp.headers());
    let unset: Option<String> = sqlx::Row::get(&sqlx::query("SELECT password_hash FROM users WHERE username = 'lei'").fetch_one(&mut db).await.unwrap(), "password_hash");
    assert!(unset.is_none(), "no password was set");
    age_sign_in(app, "lei", -3600).await;
    let (_, page) = browser.visit(&app.url("/account")).await.page();
    assert!(page.contains("设置密码") && page.contains("action=\"/account/password\""), "{page}");
    let resp = browser.client.post(app.url("/account/password")).form(&first).send().await.unwrap();
    assert_eq!(resp.headers()["location"].to_str().unwrap(), "/account?done=password");
    signed_in_browser(app, "lei", "first-secret-1").await;
}

async fn the_home_page_leads_to_what_each_person_uses(app: &TestApp) {
    app.add_user("agent", &["--name", "话务员甲", "--role", "agent"]);
    app.add_user("chief", &["--role", "leader"]);
    let (_, home) = signed_in_browser(app, "agent", PASSWORD).await.visit(&app.url("/")).await.page();
    assert!(home.contains("话务员甲") && home.contains("href=\"/hotline\"") && home.contains("href=\"/account\""), "{home}");
    assert!(!home.contains("href=\"/hotline/dashboard\""), "an agent is not offered the dashboard: {home}");
    let (_, home) = signed_in_browser(app, "chief", PASSWORD).await.visit(&app.url("/")).await.page();
    assert!(home.contains("href=\"/hotline/dashboard\"") && !home.contains("href=\"/hotline\""), "{home}");
    let (_, anonymous) = Browser::new().visit(&app.url("/")).await.page();
    assert!(anonymous.contains("href=\"/login\"") && !anonymous.contains("/hotline"), "{anonymous}");
}
