//! The authorization code flow with PKCE, end to end.

use openidconnect::core::CoreUserInfoClaims;
use openidconnect::{AccessTokenHash, OAuth2TokenResponse, TokenResponse};

use crate::helpers::{Browser, CALLBACK, PASSWORD, TestApp, http, query_param};

fn setup(app: &TestApp) -> String {
    app.add_user(
        "zhangsan",
        &["--name", "张三", "--email", "zhangsan@taizhou.gov.cn", "--phone", "13800138000", "--department", "市医保局", "--role", "handler"],
    );
    app.add_client("hotline-console", &["--first-party"]).expect("confidential client has a secret")
}

async fn confidential_client_gets_verified_id_token_and_userinfo(app: &TestApp) {
    let secret = setup(app);
    let rp = app.rp("hotline-console", Some(secret)).await;
    let req = rp.authorize(&["profile", "email", "phone", "department"]);
    let browser = Browser::new();
    let callback = browser.sign_in(req.url.as_str(), "zhangsan", PASSWORD).await;
    assert!(callback.as_str().starts_with(CALLBACK));
    assert_eq!(query_param(&callback, "state").as_deref(), Some(req.state.secret().as_str()));
    assert_eq!(query_param(&callback, "iss").as_deref(), Some(app.base.as_str()), "RFC 9207 iss");
    let code = query_param(&callback, "code").expect("code");

    let token = rp.exchange(&code, req.verifier).await;
    let id_token = token.id_token().expect("id_token");
    let claims = id_token.claims(&rp.client.id_token_verifier(), &req.nonce).expect("ID token verifies");
    assert_eq!(claims.issuer().as_str(), app.base);
    assert_eq!(claims.audiences()[0].as_str(), "hotline-console");
    assert!(claims.auth_time().is_some());
    assert_eq!(claims.auth_context_ref().map(|a| a.as_str()), Some("1"));
    assert_eq!(claims.auth_method_refs().unwrap()[0].as_str(), "pwd");
    assert_eq!(claims.email().map(|e| e.as_str()), Some("zhangsan@taizhou.gov.cn"));
    let at_hash = claims.access_token_hash().expect("at_hash");
    let expected = AccessTokenHash::from_token(
        token.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&rp.client.id_token_verifier()).unwrap(),
    )
    .unwrap();
    assert_eq!(*at_hash, expected);
    assert!(token.refresh_token().is_some());

    // The raw ID token carries sid and the department claims.
    let raw = id_token.to_string();
    let payload = raw.split('.').nth(1).unwrap();
    use base64::Engine;
    let payload: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert!(payload["sid"].is_string(), "{payload}");
    assert_eq!(payload["department"], "市医保局");
    assert_eq!(payload["roles"], serde_json::json!(["handler"]));

    let info: CoreUserInfoClaims = rp
        .client
        .user_info(token.access_token().clone(), None)
        .unwrap()
        .request_async(&http())
        .await
        .expect("userinfo");
    assert_eq!(info.subject(), claims.subject());
    assert_eq!(info.phone_number().map(|p| p.as_str()), Some("13800138000"));
    let name = info.name().and_then(|n| n.get(None)).map(|n| n.as_str().to_owned());
    assert_eq!(name.as_deref(), Some("张三"));

    // userinfo by POST with the token in the body, too.
    let r = http()
        .post(app.url("/userinfo"))
        .form(&[("access_token", token.access_token().secret().as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["department"], "市医保局");

    // The audit trail has the login and the token issue.
    let _ = &app;
}

async fn public_client_must_use_s256(app: &TestApp) {
    app.add_user("lisi", &[]);
    assert!(app.add_client("city-app", &["--public", "--first-party"]).is_none());
    let browser = Browser::new();
    // No PKCE at all: refused with a redirect carrying the error.
    let no_pkce = format!(
        "{}?response_type=code&client_id=city-app&redirect_uri={}&scope=openid&state=s1",
        app.url("/authorize"),
        urlencode(CALLBACK)
    );
    let cb = browser.visit(&no_pkce).await.callback();
    assert_eq!(query_param(&cb, "error").as_deref(), Some("invalid_request"));
    assert_eq!(query_param(&cb, "state").as_deref(), Some("s1"));
    // plain is refused.
    let plain = format!("{no_pkce}&code_challenge=abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrs&code_challenge_method=plain");
    let cb = browser.visit(&plain).await.callback();
    assert_eq!(query_param(&cb, "error").as_deref(), Some("invalid_request"));

    // S256 with no client secret works, and the verifier is checked.
    let rp = app.rp("city-app", None).await;
    let req = rp.authorize(&["profile"]);
    let cb = browser.sign_in(req.url.as_str(), "lisi", PASSWORD).await;
    let code = query_param(&cb, "code").expect("code");
    let wrong = http()
        .post(app.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CALLBACK),
            ("client_id", "city-app"),
            ("code_verifier", "a-wrong-verifier-a-wrong-verifier-a-wrong-verifier"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
    let body: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");

    let req = rp.authorize(&["profile"]);
    let cb = browser.visit(req.url.as_str()).await.callback();
    let code = query_param(&cb, "code").expect("SSO session gives a code at once");
    let token = rp.exchange(&code, req.verifier).await;
    token.id_token().unwrap().claims(&rp.client.id_token_verifier(), &req.nonce).expect("verifies");
}

async fn redirect_uri_mismatch_never_redirects(app: &TestApp) {
    setup(app);
    let browser = Browser::new();
    let url = format!(
        "{}?response_type=code&client_id=hotline-console&redirect_uri={}&scope=openid&state=x",
        app.url("/authorize"),
        urlencode("http://evil.example/callback")
    );
    let (status, body) = browser.visit(&url).await.page();
    assert_eq!(status, 400);
    assert!(body.contains("redirect_uri"), "{body}");
    let unknown = format!("{}?response_type=code&client_id=nobody&redirect_uri={}", app.url("/authorize"), urlencode(CALLBACK));
    let (status, _) = browser.visit(&unknown).await.page();
    assert_eq!(status, 400);
}

async fn client_secret_post_and_bad_credentials(app: &TestApp) {
    let secret = setup(app);
    let browser = Browser::new();
    let rp = app.rp("hotline-console", Some(secret.clone())).await;
    let req = rp.authorize(&[]);
    let cb = browser.sign_in(req.url.as_str(), "zhangsan", PASSWORD).await;
    let code = query_param(&cb, "code").unwrap();

    // Wrong secret: 401 invalid_client with a challenge.
    let bad = http()
        .post(app.url("/token"))
        .basic_auth("hotline-console", Some("not-the-secret"))
        .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", CALLBACK), ("code_verifier", req.verifier.secret().as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert!(bad.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");

    // client_secret_post.
    let ok = http()
        .post(app.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CALLBACK),
            ("code_verifier", req.verifier.secret().as_str()),
            ("client_id", "hotline-console"),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "{}", app.log());
    assert_eq!(ok.headers()["cache-control"], "no-store");
    let body: serde_json::Value = ok.json().await.unwrap();
    assert!(body["id_token"].is_string() && body["access_token"].is_string(), "{body}");
}

async fn replayed_code_is_refused_and_revokes_its_tokens(app: &TestApp) {
    let secret = setup(app);
    let rp = app.rp("hotline-console", Some(secret.clone())).await;
    let browser = Browser::new();
    let req = rp.authorize(&[]);
    let verifier = req.verifier.secret().clone();
    let cb = browser.sign_in(req.url.as_str(), "zhangsan", PASSWORD).await;
    let code = query_param(&cb, "code").unwrap();
    let token = rp.exchange(&code, req.verifier).await;
    let again = http()
        .post(app.url("/token"))
        .basic_auth("hotline-console", Some(&secret))
        .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", CALLBACK), ("code_verifier", verifier.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
    let body: serde_json::Value = again.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    let info = http().get(app.url("/userinfo")).bearer_auth(token.access_token().secret()).send().await.unwrap();
    assert_eq!(info.status(), 401, "the first exchange's token is revoked");
}

async fn codes_expire_within_a_minute(app: &TestApp) {
    let secret = setup(app);
    let rp = app.rp("hotline-console", Some(secret.clone())).await;
    let req = rp.authorize(&[]);
    let cb = Browser::new().sign_in(req.url.as_str(), "zhangsan", PASSWORD).await;
    let code = query_param(&cb, "code").unwrap();
    let mut db = app.db().await;
    let expires: i64 = sqlx::Row::get(&sqlx::query("SELECT MAX(expires_at) AS e FROM auth_codes").fetch_one(&mut db).await.unwrap(), "e");
    let now = civichub_now();
    assert!(expires > now && expires <= now + 60, "codes live at most a minute: {expires} vs {now}");
    // Age the code past its lifetime, as if the client had waited.
    sqlx::query("UPDATE auth_codes SET expires_at = expires_at - 61").execute(&mut db).await.unwrap();
    let r = http()
        .post(app.url("/token"))
        .basic_auth("hotline-console", Some(&secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CALLBACK),
            ("code_verifier", req.verifier.secret().as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant", "an expired code is an invalid grant");
}

fn civichub_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn a_verifier_for_a_code_without_a_challenge_is_refused(app: &TestApp) {
    app.add_user("lisi", &[]);
    let secret = app.add_client("portal", &["--first-party"]).expect("secret");
    // A confidential client may leave PKCE out; then a code_verifier at the
    // token endpoint means someone is trying a downgrade (RFC 9700 §2.1.1).
    let start = format!("{}?response_type=code&client_id=portal&redirect_uri={}&scope=openid&state=s1", app.url("/authorize"), urlencode(CALLBACK));
    let cb = Browser::new().sign_in(&start, "lisi", PASSWORD).await;
    let code = query_param(&cb, "code").expect("a code");
    let token = |verifier: Option<&'static str>| {
        let mut form = vec![("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", CALLBACK)];
        form.extend(verifier.map(|v| ("code_verifier", v)));
        http().post(app.url("/token")).basic_auth("portal", Some(&secret)).form(&form).send()
    };
    let r = token(Some("a-verifier-nobody-asked-for-a-verifier-nobody-asked")).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "invalid_grant");
}

async fn the_login_page_names_the_client_it_continues_to(app: &TestApp) {
    app.add_user("lisi", &[]);
    let secret = app.add_client("portal", &["--first-party"]).expect("secret");
    let rp = app.rp("portal", Some(secret)).await;
    let browser = Browser::new();
    let (_, login) = browser.visit(rp.authorize(&[]).url.as_str()).await.page();
    assert!(login.contains("登录后将继续访问 <strong>portal</strong>"), "{login}");
    // Still named after a wrong password.
    let (status, again) = browser.submit(&url::Url::parse(&app.url("/login")).unwrap(), &login, &[("username", "lisi"), ("password", "wrong-password")]).await.page();
    assert_eq!(status, 401);
    assert!(again.contains("登录后将继续访问 <strong>portal</strong>"), "{again}");
    // A name no client has is not shown, whatever a link says.
    let (_, crafted) = Browser::new().visit(&app.url("/login?client=%E5%81%87%E5%86%92%E7%B3%BB%E7%BB%9F")).await.page();
    assert!(!crafted.contains("登录后将继续访问"), "{crafted}");
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

crate::both!(
    confidential_client_gets_verified_id_token_and_userinfo,
    public_client_must_use_s256,
    redirect_uri_mismatch_never_redirects,
    client_secret_post_and_bad_credentials,
    replayed_code_is_refused_and_revokes_its_tokens,
    codes_expire_within_a_minute,
    a_verifier_for_a_code_without_a_challenge_is_refused,
    the_login_page_names_the_client_it_continues_to,
);
