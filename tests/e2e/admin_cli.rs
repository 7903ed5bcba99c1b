//! The admin command line, in the exact forms scripts rely on.

use crate::helpers::{Browser, PASSWORD, TestApp, http, query_param};

async fn users_and_clients_are_managed_from_the_cli(app: &TestApp) {
    app.add_user("admin", &["--name", "管理员", "--role", "admin", "--role", "leader", "--department", "市大数据局"]);
    let list = app.cli_ok(&["user", "list"], None);
    assert!(list.contains("admin") && list.contains("admin,leader") && list.contains("active"), "{list}");
    // Duplicate users and weak passwords are refused with a clear message.
    let dup = app.cli(&["user", "add", "admin", "--password-stdin"], Some("another-pass-1\n"));
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let weak = app.cli(&["user", "add", "weak", "--password-stdin"], Some("short\n"));
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 8"));

    let secret = app.add_client("dashboard", &["--first-party"]).unwrap();
    assert!(secret.len() >= 32);
    let clients = app.cli_ok(&["client", "list"], None);
    assert!(clients.contains("dashboard") && !clients.contains(&secret), "secrets are never listed: {clients}");
    let bad = app.cli(&["client", "add", "x", "--redirect-uri", "not a url"], None);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid redirect URI"));

    // A disabled user cannot sign in, and loses the session they had.
    let rp = app.rp("dashboard", Some(secret.clone())).await;
    let browser = Browser::new();
    let req = rp.authorize(&[]);
    let cb = browser.sign_in(req.url.as_str(), "admin", PASSWORD).await;
    let tokens = rp.exchange(&query_param(&cb, "code").unwrap(), req.verifier).await;
    app.cli_ok(&["user", "disable", "admin"], None);
    let info = http().get(app.url("/userinfo")).bearer_auth(openidconnect::OAuth2TokenResponse::access_token(&tokens).secret()).send().await.unwrap();
    assert_eq!(info.status(), 401);
    let silent = browser.visit(&format!("{}&prompt=none", rp.authorize(&[]).url)).await.callback();
    assert_eq!(query_param(&silent, "error").as_deref(), Some("login_required"));

    // Removing a client revokes its tokens and stops its logins.
    app.cli_ok(&["client", "remove", "dashboard"], None);
    let r = http().post(app.url("/token")).basic_auth("dashboard", Some(&secret)).form(&[("grant_type", "client_credentials")]).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

async fn every_login_and_token_issue_is_audited(app: &TestApp) {
    app.add_user("auditor", &[]);
    let secret = app.add_client("audited", &["--first-party"]).unwrap();
    let rp = app.rp("audited", Some(secret)).await;
    let req = rp.authorize(&[]);
    let browser = Browser::new();
    let cb = browser.sign_in(req.url.as_str(), "auditor", PASSWORD).await;
    rp.exchange(&query_param(&cb, "code").unwrap(), req.verifier).await;
    let crate::helpers::Landing::Page { url, body, .. } = browser.visit(&app.url("/end-session")).await else { panic!("confirmation page") };
    let (status, _) = browser.submit(&url, &body, &[("confirm", "yes")]).await.page();
    assert_eq!(status, 200);
    let events = app.cli_ok(&["audit", "list", "--limit", "20"], None);
    for event in ["login.succeeded", "token.issued", "logout"] {
        assert!(events.contains(event), "{event} missing from:\n{events}");
    }
}

crate::both!(users_and_clients_are_managed_from_the_cli, every_login_and_token_issue_is_audited);
