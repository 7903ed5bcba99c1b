//! `/account`: the person's recent sign-ins and their password, behind
//! single sign-on.

use crate::helpers::{Browser, Landing, PASSWORD, TestApp};

crate::both!(the_account_page_changes_the_password_and_lists_sign_ins);

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
