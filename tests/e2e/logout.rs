//! RP-Initiated Logout and Back-Channel Logout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{JsonWebKey, OAuth2TokenResponse, TokenResponse};
use serde_json::Value;
use warp::Filter;

use crate::code_flow::urlencode;
use crate::helpers::{Browser, CALLBACK, PASSWORD, TestApp, http, query_param};

/// A relying party's back-channel endpoint: records logout tokens per path;
/// answers 500 to the first delivery on paths starting with `flaky`.
struct Receiver {
    base: String,
    received: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

async fn receiver() -> Receiver {
    let received: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let attempts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let store = received.clone();
    let route = warp::post().and(warp::path::param::<String>()).and(warp::body::form::<HashMap<String, String>>()).map(
        move |path: String, form: HashMap<String, String>| {
            let n = {
                let mut a = attempts.lock().unwrap();
                let n = a.entry(path.clone()).or_default();
                *n += 1;
                *n
            };
            if path.starts_with("flaky") && n == 1 {
                return warp::http::StatusCode::INTERNAL_SERVER_ERROR;
            }
            store.lock().unwrap().entry(path).or_default().push(form.get("logout_token").cloned().unwrap_or_default());
            warp::http::StatusCode::OK
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(warp::serve(route).incoming(listener).run());
    Receiver { base, received }
}

fn claims(jwt: &str) -> (Value, Value) {
    let mut parts = jwt.split('.');
    let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    let payload = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    (header, payload)
}

fn verify_signature(jwks: &CoreJsonWebKeySet, jwt: &str) {
    let (header, _) = claims(jwt);
    let kid = header["kid"].as_str().unwrap();
    let key = jwks.keys().iter().find(|k| k.key_id().map(|id| id.as_str()) == Some(kid)).expect("kid published");
    let (input, sig) = jwt.rsplit_once('.').unwrap();
    key.verify_signature(&CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256, input.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
        .expect("logout token signature verifies");
}

async fn logout_ends_sso_and_notifies_every_client(app: &TestApp) {
    let rx = receiver().await;
    app.add_user("sunqi", &[]);
    let a = app
        .add_client(
            "app-a",
            &["--first-party", "--post-logout-redirect-uri", "http://rp.example/bye", "--backchannel-logout-uri", &format!("{}/a", rx.base)],
        )
        .unwrap();
    let b = app.add_client("app-b", &["--first-party", "--backchannel-logout-uri", &format!("{}/flaky-b", rx.base)]).unwrap();
    let browser = Browser::new();
    let rp_a = app.rp("app-a", Some(a)).await;
    let req = rp_a.authorize(&["offline_access"]);
    let cb = browser.sign_in(req.url.as_str(), "sunqi", PASSWORD).await;
    let tokens_a = rp_a.exchange(&query_param(&cb, "code").unwrap(), req.verifier).await;
    let rp_b = app.rp("app-b", Some(b)).await;
    let req_b = rp_b.authorize(&[]);
    let cb = browser.visit(req_b.url.as_str()).await.callback();
    let tokens_b = rp_b.exchange(&query_param(&cb, "code").unwrap(), req_b.verifier).await;
    let id_claims = tokens_a.id_token().unwrap().claims(&rp_a.client.id_token_verifier(), &req.nonce).unwrap();
    let (_, raw_claims) = claims(&tokens_a.id_token().unwrap().to_string());
    let sid = raw_claims["sid"].as_str().unwrap().to_owned();

    let logout = format!(
        "{}?id_token_hint={}&post_logout_redirect_uri={}&state=bye-state",
        app.url("/end-session"),
        tokens_a.id_token().unwrap(),
        urlencode("http://rp.example/bye")
    );
    let landed = browser.visit(&logout).await.callback();
    assert!(landed.as_str().starts_with("http://rp.example/bye"), "{landed}");
    assert_eq!(query_param(&landed, "state").as_deref(), Some("bye-state"));

    // The SSO session is over.
    let silent = browser.visit(&format!("{}&prompt=none", rp_b.authorize(&[]).url)).await.callback();
    assert_eq!(query_param(&silent, "error").as_deref(), Some("login_required"));
    // app-b's session-bound refresh token is revoked; app-a's offline one survives.
    assert!(rp_b.client.exchange_refresh_token(tokens_b.refresh_token().unwrap()).unwrap().request_async(&http()).await.is_err());
    let refreshed = rp_a.client.exchange_refresh_token(tokens_a.refresh_token().unwrap()).unwrap().request_async(&http()).await.unwrap();
    // Asking for less than it was granted (no offline_access this time) does not make it session-bound.
    let narrowed = rp_a
        .client
        .exchange_refresh_token(refreshed.refresh_token().unwrap())
        .unwrap()
        .add_scope(openidconnect::Scope::new("openid".into()))
        .request_async(&http())
        .await;
    assert!(narrowed.is_ok(), "{narrowed:?}");

    // Both clients hear of it; the flaky one after a retry.
    let mut got = HashMap::new();
    for _ in 0..60 {
        got = rx.received.lock().unwrap().clone();
        if got.contains_key("a") && got.contains_key("flaky-b") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(got.contains_key("a") && got.contains_key("flaky-b"), "deliveries: {got:?}\n{}", app.log());
    let jwks = app.metadata().await.jwks().clone();
    for (path, client) in [("a", "app-a"), ("flaky-b", "app-b")] {
        let token = &got[path][0];
        verify_signature(&jwks, token);
        let (header, c) = claims(token);
        assert_eq!(header["typ"], "logout+jwt");
        assert_eq!(c["iss"], app.base.as_str());
        assert_eq!(c["aud"], client);
        assert_eq!(c["sid"], sid.as_str());
        assert_eq!(c["sub"], id_claims.subject().as_str());
        assert!(c["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());
        assert!(c.get("nonce").is_none());
        assert!(c["jti"].is_string());
    }
}

async fn logout_without_hint_asks_to_confirm(app: &TestApp) {
    app.add_user("sunqi", &[]);
    app.add_client("app-a", &["--first-party", "--post-logout-redirect-uri", "http://rp.example/bye"]);
    let browser = Browser::new();
    let rp = app.rp("app-a", None).await;
    browser.sign_in(rp.authorize(&[]).url.as_str(), "sunqi", PASSWORD).await;
    // A bare GET (say, an image tag on another site) does not log anyone out.
    let url = app.url("/end-session");
    let crate::helpers::Landing::Page { url: page_url, body, .. } = browser.visit(&url).await else { panic!("confirmation page") };
    assert!(body.contains("退出登录"));
    let silent = browser.visit(&format!("{}&prompt=none", rp.authorize(&[]).url)).await.callback();
    assert!(query_param(&silent, "code").is_some(), "still signed in");
    let (status, done) = browser.submit(&page_url, &body, &[("confirm", "yes")]).await.page();
    assert_eq!(status, 200);
    assert!(done.contains("已退出"), "{done}");
    let silent = browser.visit(&format!("{}&prompt=none", rp.authorize(&[]).url)).await.callback();
    assert_eq!(query_param(&silent, "error").as_deref(), Some("login_required"));
    // An unregistered post-logout target is refused, not followed.
    let bad = format!("{}?client_id=app-a&post_logout_redirect_uri={}", app.url("/end-session"), urlencode("http://evil.example/"));
    let (status, _) = browser.visit(&bad).await.page();
    assert_eq!(status, 400);
    let _ = CALLBACK;
}

async fn disabling_someone_logs_them_out_everywhere(app: &TestApp) {
    let rx = receiver().await;
    app.add_user("zhouba", &[]);
    let secret = app.add_client("app-a", &["--first-party", "--backchannel-logout-uri", &format!("{}/a", rx.base)]).unwrap();
    let rp = app.rp("app-a", Some(secret)).await;
    let req = rp.authorize(&[]);
    let browser = Browser::new();
    let cb = browser.sign_in(req.url.as_str(), "zhouba", PASSWORD).await;
    let tokens = rp.exchange(&query_param(&cb, "code").unwrap(), req.verifier).await;
    let (_, raw_claims) = claims(&tokens.id_token().unwrap().to_string());
    let unredeemed = rp.authorize(&[]);
    let cb = browser.visit(unredeemed.url.as_str()).await.callback();

    // Someone who left (here disabled by an administrator) is logged out of every client too,
    // and a code issued just before is worth nothing.
    app.cli_ok(&["user", "disable", "zhouba"], None);
    let late = rp
        .client
        .exchange_code(openidconnect::AuthorizationCode::new(query_param(&cb, "code").unwrap()))
        .unwrap()
        .set_pkce_verifier(unredeemed.verifier)
        .request_async(&http())
        .await;
    assert!(matches!(&late, Err(openidconnect::RequestTokenError::ServerResponse(e)) if e.error().as_ref() == "invalid_grant"), "{late:?}");
    let mut got = Vec::new();
    for _ in 0..60 {
        got = rx.received.lock().unwrap().get("a").cloned().unwrap_or_default();
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(got.len(), 1, "one logout token for the one session\n{}", app.log());
    let (_, c) = claims(&got[0]);
    assert_eq!(c["sid"], raw_claims["sid"]);
    assert_eq!(c["aud"], "app-a");
}

/// A logout committing while a code is being redeemed: whichever way the two
/// meet, the code buys no token that outlives the session. The test holds a
/// logout's transaction open across the redemption (on PostgreSQL the hub has
/// then claimed the code and seen the session live before the logout commits;
/// on SQLite the logout holds the write lock).
async fn a_code_redeemed_as_its_session_ends_buys_nothing(app: &TestApp) {
    use sqlx::Row;
    app.add_user("wujiu", &[]);
    let secret = app.add_client("app-a", &["--first-party"]).unwrap();
    let rp = app.rp("app-a", Some(secret)).await;
    let req = rp.authorize(&[]);
    let cb = Browser::new().sign_in(req.url.as_str(), "wujiu", PASSWORD).await;
    let code = query_param(&cb, "code").unwrap();

    let mut db = app.db().await;
    let user_id: String =
        sqlx::query("SELECT id FROM users WHERE username = 'wujiu'").fetch_one(&mut db).await.unwrap().try_get("id").unwrap();
    let begin = if app.backend == crate::helpers::Backend::Sqlite { "BEGIN IMMEDIATE" } else { "BEGIN" };
    sqlx::query(begin).execute(&mut db).await.unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    // What a logout writes: the session ends and its tokens are revoked.
    sqlx::query("UPDATE sso_sessions SET ended_at = $1 WHERE user_id = $2 AND ended_at IS NULL")
        .bind(now)
        .bind(&user_id)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(&user_id)
        .execute(&mut db)
        .await
        .unwrap();
    let client = http();
    let redeem = rp
        .client
        .exchange_code(openidconnect::AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(req.verifier)
        .request_async(&client);
    let logout = async {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        sqlx::query("COMMIT").execute(&mut db).await.unwrap();
    };
    let (redeemed, ()) = tokio::join!(redeem, logout);
    assert!(
        matches!(&redeemed, Err(openidconnect::RequestTokenError::ServerResponse(e)) if e.error().as_ref() == "invalid_grant"),
        "{redeemed:?}\n{}",
        app.log()
    );
    let live: i64 = sqlx::query("SELECT COUNT(*) AS n FROM tokens WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(&user_id)
        .fetch_one(&mut db)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(live, 0, "no live token of the ended session");
}

crate::both!(
    logout_ends_sso_and_notifies_every_client,
    logout_without_hint_asks_to_confirm,
    disabling_someone_logs_them_out_everywhere,
    a_code_redeemed_as_its_session_ends_buys_nothing
);
