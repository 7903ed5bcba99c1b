//! Single sign-on: sessions, prompt, max_age, login_hint, consent, throttling, CSRF.

use crate::code_flow::urlencode;
use crate::helpers::{Browser, CALLBACK, Form, PASSWORD, TestApp, http, query_param};

fn two_clients(app: &TestApp) {
    app.add_user("zhaoliu", &["--name", "赵六"]);
    app.add_client("hotline-console", &["--first-party"]);
    app.add_client("kb-portal", &["--first-party"]);
}

fn authorize_url(app: &TestApp, client: &str, extra: &str) -> String {
    format!(
        "{}?response_type=code&client_id={client}&redirect_uri={}&scope=openid%20profile&state=st&nonce=n{extra}",
        app.url("/authorize"),
        urlencode(CALLBACK)
    )
}

async fn second_system_needs_no_login(app: &TestApp) {
    two_clients(app);
    let browser = Browser::new();
    let first = browser.sign_in(&authorize_url(app, "hotline-console", ""), "zhaoliu", PASSWORD).await;
    assert!(query_param(&first, "code").is_some());
    // The second system gets a code straight away: no page in between.
    let second = browser.visit(&authorize_url(app, "kb-portal", "")).await.callback();
    assert!(query_param(&second, "code").is_some(), "{second}");
    // prompt=none in a live session works too.
    let silent = browser.visit(&authorize_url(app, "kb-portal", "&prompt=none")).await.callback();
    assert!(query_param(&silent, "code").is_some());
}

async fn prompt_none_without_session_is_login_required(app: &TestApp) {
    two_clients(app);
    let cb = Browser::new().visit(&authorize_url(app, "kb-portal", "&prompt=none")).await.callback();
    assert_eq!(query_param(&cb, "error").as_deref(), Some("login_required"));
    assert_eq!(query_param(&cb, "state").as_deref(), Some("st"));
}

async fn prompt_login_and_max_age_force_a_fresh_login(app: &TestApp) {
    two_clients(app);
    let browser = Browser::new();
    browser.sign_in(&authorize_url(app, "hotline-console", ""), "zhaoliu", PASSWORD).await;
    let (status, body) = browser.visit(&authorize_url(app, "kb-portal", "&prompt=login")).await.page();
    assert_eq!(status, 200);
    assert!(body.contains("name=\"password\""), "prompt=login shows the login form");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (_, body) = browser.visit(&authorize_url(app, "kb-portal", "&max_age=0")).await.page();
    assert!(body.contains("name=\"password\""), "max_age=0 shows the login form");
    // Logging in again completes the request and leaves no prompt loop.
    let cb = browser.sign_in(&authorize_url(app, "kb-portal", "&prompt=login"), "zhaoliu", PASSWORD).await;
    assert!(query_param(&cb, "code").is_some());
}

async fn login_hint_fills_the_username(app: &TestApp) {
    two_clients(app);
    let (_, body) = Browser::new().visit(&authorize_url(app, "kb-portal", "&login_hint=zhaoliu")).await.page();
    assert!(body.contains("value=\"zhaoliu\""), "{body}");
}

async fn consent_is_asked_once_then_remembered(app: &TestApp) {
    app.add_user("zhaoliu", &[]);
    app.add_client("partner-portal", &[]);
    let browser = Browser::new();
    let mut landing = browser.visit(&authorize_url(app, "partner-portal", "")).await;
    let mut saw_consent = false;
    for _ in 0..3 {
        match landing {
            crate::helpers::Landing::Callback(cb) => {
                assert!(query_param(&cb, "code").is_some());
                break;
            }
            crate::helpers::Landing::Page { url, body, .. } => {
                landing = if body.contains("name=\"password\"") {
                    browser.submit(&url, &body, &[("username", "zhaoliu"), ("password", PASSWORD)]).await
                } else {
                    assert!(body.contains("授权确认") && body.contains("partner-portal"), "{body}");
                    saw_consent = true;
                    browser.submit(&url, &body, &[("decision", "allow")]).await
                };
            }
        }
    }
    assert!(saw_consent, "a third-party client asks for consent");
    let again = browser.visit(&authorize_url(app, "partner-portal", "")).await.callback();
    assert!(query_param(&again, "code").is_some(), "consent is remembered");
    // A denial goes back as access_denied.
    let browser = Browser::new();
    let landing = browser.visit(&authorize_url(app, "partner-portal", "&prompt=consent")).await;
    let crate::helpers::Landing::Page { url, body, .. } = landing else { panic!("login page") };
    let crate::helpers::Landing::Page { url, body, .. } = browser.submit(&url, &body, &[("username", "zhaoliu"), ("password", PASSWORD)]).await else {
        panic!("consent page")
    };
    let denied = browser.submit(&url, &body, &[("decision", "deny")]).await.callback();
    assert_eq!(query_param(&denied, "error").as_deref(), Some("access_denied"));
}

async fn repeated_failures_lock_the_account(app: &TestApp) {
    two_clients(app);
    let browser = Browser::new();
    let start = authorize_url(app, "kb-portal", "");
    let (_, mut body) = browser.visit(&start).await.page();
    let login_url = url::Url::parse(&app.url("/login")).unwrap();
    for i in 0..5 {
        let (status, next) = browser.submit(&login_url, &body, &[("username", "zhaoliu"), ("password", "wrong-password")]).await.page();
        assert_eq!(status, 401, "attempt {i}");
        assert!(next.contains("用户名或密码错误"), "{next}");
        body = next;
    }
    let (status, locked) = browser.submit(&login_url, &body, &[("username", "zhaoliu"), ("password", PASSWORD)]).await.page();
    assert_eq!(status, 429, "the right password is refused while locked");
    assert!(locked.contains("分钟后再试"), "{locked}");
    // Another account from another address is not affected... but this one is.
    let audit = app.log();
    let _ = audit;
}

async fn login_form_is_csrf_protected(app: &TestApp) {
    two_clients(app);
    let r = http()
        .post(app.url("/login"))
        .form(&[("username", "zhaoliu"), ("password", PASSWORD), ("csrf", "forged-value-forged-value"), ("return_to", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("set-cookie").is_none_or(|c| !c.to_str().unwrap().starts_with("civichub_session")));
    // The real form sets an HttpOnly, SameSite=Lax session cookie.
    let browser = Browser::new();
    let (_, body) = browser.visit(&app.url("/login")).await.page();
    let form = Form::parse(&body).unwrap();
    let mut fields = form.inputs.clone();
    fields.push(("username".into(), "zhaoliu".into()));
    fields.push(("password".into(), PASSWORD.into()));
    let r = browser.client.post(app.url("/login")).form(&fields).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers().get_all("set-cookie").iter().map(|c| c.to_str().unwrap().to_owned()).find(|c| c.starts_with("civichub_session=")).unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.contains("Secure"), "no Secure flag on a plain-http issuer");
}

async fn repeated_failures_lock_the_source_address(app: &TestApp) {
    two_clients(app);
    let browser = Browser::new();
    let login_url = url::Url::parse(&app.url("/login")).unwrap();
    let (_, mut body) = browser.visit(&app.url("/login")).await.page();
    // Twenty failures spread over many accounts, so no single account locks.
    for i in 0..20 {
        let name = format!("guess{i}");
        let (_, next) = browser.submit(&login_url, &body, &[("username", name.as_str()), ("password", "wrong-password")]).await.page();
        body = next;
    }
    let (status, locked) = browser.submit(&login_url, &body, &[("username", "zhaoliu"), ("password", PASSWORD)]).await.page();
    assert_eq!(status, 429, "this address is locked even for a good password");
    assert!(locked.contains("分钟后再试"));
}

async fn weaker_password_hashes_are_upgraded_at_login(app: &TestApp) {
    use argon2::PasswordHasher;
    two_clients(app);
    let weak = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon2::Params::new(8 * 1024, 1, 1, None).unwrap())
        .hash_password(PASSWORD.as_bytes())
        .unwrap()
        .to_string();
    let mut db = app.db().await;
    sqlx::query("UPDATE users SET password_hash = $1 WHERE username = 'zhaoliu'").bind(&weak).execute(&mut db).await.unwrap();
    let cb = Browser::new().sign_in(&authorize_url(app, "kb-portal", ""), "zhaoliu", PASSWORD).await;
    assert!(query_param(&cb, "code").is_some(), "the weak hash still verifies");
    let stored: String = sqlx::Row::get(
        &sqlx::query("SELECT password_hash FROM users WHERE username = 'zhaoliu'").fetch_one(&mut db).await.unwrap(),
        "password_hash",
    );
    assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "rehashed at the current parameters: {stored}");
}

crate::both!(
    repeated_failures_lock_the_source_address,
    weaker_password_hashes_are_upgraded_at_login,
    second_system_needs_no_login,
    prompt_none_without_session_is_login_required,
    prompt_login_and_max_age_force_a_fresh_login,
    login_hint_fills_the_username,
    consent_is_asked_once_then_remembered,
    repeated_failures_lock_the_account,
    parallel_guesses_cannot_outrun_the_lock,
    login_form_is_csrf_protected,
);

/// Wrong passwords sent all at once, before any has been checked, still get
/// only the account's five tries; the others are refused unchecked, and the
/// account is locked. A right password among the first tries still works.
async fn parallel_guesses_cannot_outrun_the_lock(app: &TestApp) {
    two_clients(app);
    let browser = Browser::new();
    let login_url = url::Url::parse(&app.url("/login")).unwrap();
    let (_, body) = browser.visit(&app.url("/login")).await.page();
    // Four wrong, then the right one: it signs in, and the count starts again.
    for _ in 0..4 {
        let (status, _) = browser.submit(&login_url, &body, &[("username", "zhaoliu"), ("password", "wrong-password")]).await.page();
        assert_eq!(status, 401);
    }
    let (status, page) = browser.submit(&login_url, &body, &[("username", "zhaoliu"), ("password", PASSWORD)]).await.page();
    assert_eq!(status, 200, "the right fifth try signs in: {page}");
    assert!(!page.contains("name=\"password\""), "not the login form again: {page}");
    let guesser = Browser::new();
    let (_, body) = guesser.visit(&app.url("/login")).await.page();
    let guesses = (0..12).map(|_| guesser.submit(&login_url, &body, &[("username", "zhaoliu"), ("password", "wrong-password")]));
    let mut statuses: Vec<u16> = futures_util::future::join_all(guesses).await.into_iter().map(|l| l.page().0).collect();
    statuses.sort();
    assert_eq!(statuses, [vec![401; 5], vec![429; 7]].concat(), "five tries checked, the rest refused");
    let (status, _) = guesser.submit(&login_url, &body, &[("username", "zhaoliu"), ("password", PASSWORD)]).await.page();
    assert_eq!(status, 429, "locked");
}
