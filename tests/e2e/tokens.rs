//! Refresh rotation, client credentials, introspection, revocation and key rotation.

use openidconnect::core::CoreJsonWebKeySet;
use openidconnect::{OAuth2TokenResponse, RefreshToken, TokenResponse};
use serde_json::{Value, json};

use crate::helpers::{Browser, CALLBACK, PASSWORD, TestApp, http, query_param};

async fn signed_in(app: &TestApp, client: &str, secret: &str, scopes: &[&str]) -> openidconnect::core::CoreTokenResponse {
    let rp = app.rp(client, Some(secret.to_owned())).await;
    let req = rp.authorize(scopes);
    let cb = Browser::new().sign_in(req.url.as_str(), "wangwu", PASSWORD).await;
    rp.exchange(&query_param(&cb, "code").unwrap(), req.verifier).await
}

fn setup(app: &TestApp, extra: &[&str]) -> String {
    app.add_user("wangwu", &["--name", "王五"]);
    let mut args = vec!["--first-party"];
    args.extend_from_slice(extra);
    app.add_client("records", &args).unwrap()
}

async fn introspect(app: &TestApp, secret: &str, token: &str) -> Value {
    http()
        .post(app.url("/introspect"))
        .basic_auth("records", Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn refresh_rotates_and_reuse_revokes_the_family(app: &TestApp) {
    let secret = setup(app, &[]);
    let first = signed_in(app, "records", &secret, &["profile"]).await;
    let rp = app.rp("records", Some(secret.clone())).await;
    let r1 = first.refresh_token().unwrap().clone();
    let second = rp.client.exchange_refresh_token(&r1).unwrap().request_async(&http()).await.expect("refresh");
    let r2 = second.refresh_token().expect("a new refresh token").clone();
    assert_ne!(r1.secret(), r2.secret());
    assert!(second.id_token().is_some(), "a fresh ID token comes with the refresh");
    assert_eq!(introspect(app, &secret, second.access_token().secret()).await["active"], true);

    // A refresh may narrow the access token's scope; the new refresh token keeps the whole
    // grant (RFC 6749 §6), so the next refresh may ask for all of it again.
    let narrow = rp.client.exchange_refresh_token(&r2).unwrap().add_scope(openidconnect::Scope::new("openid".into())).request_async(&http()).await.expect("narrowed");
    assert_eq!(introspect(app, &secret, narrow.access_token().secret()).await["scope"], "openid");
    let r3 = narrow.refresh_token().expect("a new refresh token").clone();
    let whole = rp.client.exchange_refresh_token(&r3).unwrap().add_scope(openidconnect::Scope::new("openid".into())).add_scope(openidconnect::Scope::new("profile".into())).request_async(&http()).await.expect("the whole scope again");
    let scope = introspect(app, &secret, whole.access_token().secret()).await["scope"].as_str().unwrap_or_default().to_owned();
    assert!(scope.contains("profile") && scope.contains("openid"), "{scope}");

    // The rotated token comes back: refused, and the whole family dies.
    let reuse = rp.client.exchange_refresh_token(&r1).unwrap().request_async(&http()).await;
    assert!(reuse.is_err(), "a rotated refresh token is refused");
    assert_eq!(introspect(app, &secret, second.access_token().secret()).await["active"], false);
    let after = rp.client.exchange_refresh_token(&r2).unwrap().request_async(&http()).await;
    assert!(after.is_err(), "the newest refresh token died with its family");
    let raw = http()
        .post(app.url("/token"))
        .basic_auth("records", Some(&secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", r2.secret().as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    assert_eq!(raw.json::<Value>().await.unwrap()["error"], "invalid_grant");
}

async fn refresh_with_client_secret_post(app: &TestApp) {
    let secret = setup(app, &[]);
    let first = signed_in(app, "records", &secret, &[]).await;
    let r = http()
        .post(app.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", first.refresh_token().unwrap().secret().as_str()),
            ("client_id", "records"),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // And not with another client's credentials.
    let other = app.add_client("other-system", &[]).unwrap();
    let stolen = http()
        .post(app.url("/token"))
        .basic_auth("other-system", Some(&other))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", first.refresh_token().unwrap().secret().as_str())])
        .send()
        .await
        .unwrap();
    assert!(stolen.status().is_client_error());
}

async fn client_credentials_for_service_scopes(app: &TestApp) {
    let secret = setup(app, &["--scope", "kb:read", "--scope", "messages:send"]);
    let rp = app.rp("records", Some(secret.clone())).await;
    let token = rp
        .client
        .exchange_client_credentials()
        .unwrap()
        .add_scope(openidconnect::Scope::new("kb:read".into()))
        .request_async(&http())
        .await
        .expect("client credentials");
    assert!(token.refresh_token().is_none());
    let info = introspect(app, &secret, token.access_token().secret()).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["scope"], "kb:read");
    assert_eq!(info["client_id"], "records");
    // client_secret_post works too; a bad secret is 401.
    let post = http()
        .post(app.url("/token"))
        .form(&[("grant_type", "client_credentials"), ("client_id", "records"), ("client_secret", secret.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    let body: Value = post.json().await.unwrap();
    let mut granted: Vec<&str> = body["scope"].as_str().unwrap().split(' ').collect();
    granted.sort();
    assert_eq!(granted, ["kb:read", "messages:send"], "no scope asked: every service scope of the client");
    let bad = http()
        .post(app.url("/token"))
        .basic_auth("records", Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    // RFC 6749 §2.3.1: Basic credentials are form-encoded before base64 ("-" may come as %2D).
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("records:{}", secret.replace('-', "%2D").replace('_', "%5F")));
    let basic = http()
        .post(app.url("/token"))
        .header("authorization", format!("Basic {encoded}"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 200, "form-encoded Basic credentials are decoded");
    // A public client cannot use it.
    app.add_client("spa", &["--public"]);
    let public = http().post(app.url("/token")).form(&[("grant_type", "client_credentials"), ("client_id", "spa")]).send().await.unwrap();
    assert!(public.status().is_client_error());
    // A client-credentials token is not a person: userinfo refuses it.
    let info = http().get(app.url("/userinfo")).bearer_auth(token.access_token().secret()).send().await.unwrap();
    assert_eq!(info.status(), 401);
}

async fn token_endpoint_errors_follow_rfc6749(app: &TestApp) {
    let secret = setup(app, &[]);
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], 400, "invalid_request"),
        (vec![("grant_type", "password")], 400, "unsupported_grant_type"),
        (vec![("grant_type", "authorization_code"), ("code", "nope"), ("redirect_uri", CALLBACK)], 400, "invalid_grant"),
        (vec![("grant_type", "refresh_token"), ("refresh_token", "nope")], 400, "invalid_grant"),
    ];
    for (form, status, error) in cases {
        let r = http().post(app.url("/token")).basic_auth("records", Some(&secret)).form(&form).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{form:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], error, "{form:?}: {body}");
    }
    // An authentication scheme's name is matched without regard to case (RFC 7235 §2.1).
    use base64::Engine as _;
    let basic = format!("basic {}", base64::engine::general_purpose::STANDARD.encode(format!("records:{secret}")));
    let r = http().post(app.url("/revoke")).header("authorization", basic).form(&[("token", "unknown")]).send().await.unwrap();
    assert_eq!(r.status(), 200, "a lower-case basic scheme authenticates");
    // error_description never echoes the request (RFC 6749 §5.2 allows printable ASCII without quotes or backslashes).
    let r = http().post(app.url("/token")).basic_auth("records", Some(&secret)).form(&[("grant_type", "\"\\\n中")]).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.chars().all(|c| matches!(c, ' '..='~') && c != '"' && c != '\\'), "{body}");
    // Userinfo's challenges as RFC 6750 §3.1 words them.
    let r = http().get(app.url("/userinfo")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"civichub\"", "no error code when no token came");
    let r = http().get(app.url("/userinfo")).bearer_auth("not-a-token").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"civichub\", error=\"invalid_token\"");
}

async fn revocation(app: &TestApp) {
    let secret = setup(app, &[]);
    let tokens = signed_in(app, "records", &secret, &[]).await;
    let access = tokens.access_token().secret().clone();
    let refresh = tokens.refresh_token().unwrap().secret().clone();
    let other = app.add_client("other-system", &[]).unwrap();
    // Another client cannot revoke it.
    let r = http().post(app.url("/revoke")).basic_auth("other-system", Some(&other)).form(&[("token", access.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(introspect(app, &secret, &access).await["active"], true);
    // Unknown tokens answer 200 (RFC 7009 §2.2).
    let r = http().post(app.url("/revoke")).basic_auth("records", Some(&secret)).form(&[("token", "unknown")]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Unauthenticated: 401.
    let r = http().post(app.url("/revoke")).form(&[("token", access.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Revoking the refresh token revokes its access token too.
    let r = http().post(app.url("/revoke")).basic_auth("records", Some(&secret)).form(&[("token", refresh.as_str()), ("token_type_hint", "refresh_token")]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(introspect(app, &secret, &access).await["active"], false);
    assert_eq!(introspect(app, &secret, &refresh).await["active"], false);
    let rp = app.rp("records", Some(secret)).await;
    assert!(rp.client.exchange_refresh_token(&RefreshToken::new(refresh)).unwrap().request_async(&http()).await.is_err());
}

async fn introspection_needs_a_confidential_client(app: &TestApp) {
    let secret = setup(app, &[]);
    let tokens = signed_in(app, "records", &secret, &["profile"]).await;
    let info = introspect(app, &secret, tokens.access_token().secret()).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["username"], "wangwu");
    assert_eq!(info["token_type"], "Bearer");
    assert!(info["exp"].as_i64().unwrap() > info["iat"].as_i64().unwrap());
    assert_eq!(introspect(app, &secret, "garbage").await, serde_json::json!({ "active": false }));
    let r = http().post(app.url("/introspect")).form(&[("token", tokens.access_token().secret().as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

async fn rotated_keys_keep_old_tokens_verifiable(app: &TestApp) {
    let secret = setup(app, &[]);
    let before = signed_in(app, "records", &secret, &[]).await;
    let old_kid = header_kid(&before.id_token().unwrap().to_string());
    let out = app.cli_ok(&["keys", "rotate"], None);
    assert!(out.contains("new signing key"), "{out}");
    // Key caches expire within seconds; wait until the new key signs.
    let mut new_kid = old_kid.clone();
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let after = signed_in(app, "records", &secret, &[]).await;
        new_kid = header_kid(&after.id_token().unwrap().to_string());
        if new_kid != old_kid {
            break;
        }
    }
    assert_ne!(new_kid, old_kid, "new tokens are signed with the new key");
    let jwks: CoreJsonWebKeySet = http().get(app.url("/jwks")).send().await.unwrap().json().await.unwrap();
    let kids: Vec<String> = jwks.keys().iter().filter_map(|k| openidconnect::JsonWebKey::key_id(k).map(|k| k.to_string())).collect();
    assert!(kids.contains(&old_kid) && kids.contains(&new_kid), "{kids:?}");
    // The old ID token still verifies against the discovered key set.
    let rp = app.rp("records", Some(secret)).await;
    before
        .id_token()
        .unwrap()
        .claims(&rp.client.id_token_verifier(), |_: Option<&openidconnect::Nonce>| Ok(()))
        .expect("old token verifies after rotation");
}

async fn es256_clients_get_es256_id_tokens(app: &TestApp) {
    let secret = setup(app, &["--id-token-alg", "ES256"]);
    let tokens = signed_in(app, "records", &secret, &[]).await;
    let raw = tokens.id_token().unwrap().to_string();
    let header = header_json(&raw);
    assert_eq!(header["alg"], "ES256");
    let rp = app.rp("records", Some(secret)).await;
    let verifier = rp.client.id_token_verifier().set_allowed_algs(vec![openidconnect::core::CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
    tokens.id_token().unwrap().claims(&verifier, |_: Option<&openidconnect::Nonce>| Ok(())).expect("ES256 token verifies");
}

fn header_json(jwt: &str) -> Value {
    use base64::Engine;
    let h = jwt.split('.').next().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

fn header_kid(jwt: &str) -> String {
    header_json(jwt)["kid"].as_str().unwrap().to_owned()
}

/// One refresh token spent by several requests at once, as a client that
/// retries too eagerly would: one of them gets new tokens, the others
/// `invalid_grant`, and the race is treated as reuse, so the winner's new
/// tokens die with the family too.
async fn a_refresh_token_spent_at_once_by_several_requests_revokes_the_family(app: &TestApp) {
    let secret = setup(app, &[]);
    let first = signed_in(app, "records", &secret, &["profile"]).await;
    let token = first.refresh_token().unwrap().secret().clone();
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (url, secret, token) = (app.url("/token"), secret.clone(), token.clone());
        attempts.spawn(async move {
            let r = http()
                .post(url)
                .basic_auth("records", Some(&secret))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", token.as_str())])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        });
    }
    let answers = attempts.join_all().await;
    let won: Vec<&Value> = answers.iter().filter(|(status, _)| *status == 200).map(|(_, body)| body).collect();
    assert_eq!(won.len(), 1, "exactly one request spends the token: {answers:?}");
    for (status, body) in answers.iter().filter(|(status, _)| *status != 200) {
        assert_eq!((*status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    }
    let access = won[0]["access_token"].as_str().unwrap();
    assert_eq!(introspect(app, &secret, access).await["active"], false, "the winner's access token died with the family");
    let next = http()
        .post(app.url("/token"))
        .basic_auth("records", Some(&secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", won[0]["refresh_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(next.status(), 400, "the winner's refresh token died with the family");
}

crate::both!(
    refresh_rotates_and_reuse_revokes_the_family,
    a_refresh_token_spent_at_once_by_several_requests_revokes_the_family,
    refresh_with_client_secret_post,
    client_credentials_for_service_scopes,
    token_endpoint_errors_follow_rfc6749,
    revocation,
    introspection_needs_a_confidential_client,
    rotated_keys_keep_old_tokens_verifiable,
    es256_clients_get_es256_id_tokens,
    nul_characters_are_refused_at_the_edge,
    a_body_broken_on_the_wire_is_a_bad_request,
);

/// A chunked body whose chunk size is not hexadecimal is the client's fault:
/// 400, not 413 ("too large") nor a 500.
async fn a_body_broken_on_the_wire_is_a_bad_request(app: &TestApp) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = reqwest::Url::parse(&app.url("/token")).unwrap();
    let mut stream = tokio::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap())).await.unwrap();
    let request = "POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                   Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\ngrant\r\nzz\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

/// A NUL character fits no field (PostgreSQL refuses it in any text
/// parameter): in a query, a form or a JSON body it gets a 400 in RFC 6749's
/// shape before any route looks anything up, never a 500.
async fn nul_characters_are_refused_at_the_edge(app: &TestApp) {
    let token = crate::helpers::service_token(app, &["messages:send"]).await;
    let mut answers = Vec::new();
    for path in ["/authorize?client_id=%00&response_type=code", "/login?client=%00", "/login/mfa?key=%00", "/end-session?client_id=%00"] {
        answers.push((path.to_owned(), http().get(app.url(path)).send().await.unwrap()));
    }
    let token_form = http().post(app.url("/token")).form(&[("grant_type", "client_credentials"), ("client_id", "\0"), ("client_secret", "x")]);
    answers.push(("POST /token".into(), token_form.send().await.unwrap()));
    let message = http().post(app.url("/api/messages")).bearer_auth(&token).json(&json!({"to": {"user": "a\u{0}"}, "channel": "sms", "text": "hi"}));
    answers.push(("POST /api/messages".into(), message.send().await.unwrap()));
    for (what, r) in answers {
        assert_eq!(r.status(), 400, "{what}\n{}", app.log());
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "invalid_request", "{what}: {v}");
        assert!(v["error_description"].as_str().unwrap_or_default().contains("NUL"), "{what}: {v}");
    }
    // Text that only looks like one passes the edge (to be refused here,
    // further on, only because this hub has no SMS channel).
    let r = http().post(app.url("/api/messages")).bearer_auth(&token).json(&json!({"to": {"phone": "13812345678"}, "channel": "sms", "text": "C:\\u0000 打折 100%00"})).send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(text.contains("channel sms is not configured") && !text.contains("NUL"), "{text}");
}
