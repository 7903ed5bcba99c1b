//! Passkeys over HTTP with a software authenticator (webauthn-authenticator-rs's
//! `SoftPasskey`): registered on the account page, then a passwordless login
//! that a client requiring multi-factor authentication accepts, with `acr` and
//! `amr` that say so. On PostgreSQL each ceremony starts on one hub node and
//! finishes on another (behind one issuer, as behind a load balancer): the
//! ceremony state is in the database. An admin reset removes the passkeys.

use openidconnect::TokenResponse;
use serde_json::Value;
use url::Url;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs_proto::{AllowCredentials, CreationChallengeResponse, RequestChallengeResponse};

use crate::helpers::{Backend, Browser, Form, PASSWORD, TestApp, csrf, free_port, query_param};

crate::both_backends!(passkeys_across_nodes);

/// Posts a passkey form's fields to an options endpoint: the ceremony key and the options.
async fn options(browser: &Browser, url: &str, fields: &[(&str, &str)]) -> (String, Value) {
    let resp = browser.client.post(url).form(fields).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    let v: Value = resp.json().await.unwrap();
    (v["key"].as_str().unwrap().to_owned(), serde_json::json!({ "publicKey": v["publicKey"] }))
}

async fn passkeys_across_nodes(backend: Backend) {
    let port = free_port();
    let issuer = format!("http://localhost:{port}");
    let a = TestApp::spawn_with(backend, &["--listen", &format!("127.0.0.1:{port}"), "--issuer", &issuer]).await;
    let b_node = match backend {
        Backend::Postgres => Some(a.another_node_with(&["--issuer", &issuer]).await),
        Backend::Sqlite => None,
    };
    let b = b_node.as_ref().unwrap_or(&a);
    let on_a = |path: &str| format!("{issuer}{path}");
    let b_port = Url::parse(&b.base).unwrap().port().unwrap();
    let on_b = |path: &str| format!("http://localhost:{b_port}{path}");
    let origin = Url::parse(&issuer).unwrap();

    a.add_user("wang", &["--name", "王芳"]);
    let secure = a.add_client("secure", &["--first-party", "--require-mfa"]).expect("secret");

    // Sign in with the password on node A and register a passkey, finishing on node B.
    let browser = Browser::new();
    let (_, login) = browser.visit(&on_a("/account")).await.page();
    assert!(login.contains("使用通行密钥登录"), "the login page offers passkeys at a domain-name issuer");
    let (_, account) = browser.submit(&Url::parse(&on_a("/login")).unwrap(), &login, &[("username", "wang"), ("password", PASSWORD)]).await.page();
    let token = csrf(&account);
    let (key, creation) = options(&browser, &on_a("/account/passkeys/options"), &[("csrf", &token)]).await;
    let creation: CreationChallengeResponse = serde_json::from_value(creation).unwrap();
    let handle = creation.public_key.user.id.to_vec();
    let mut authenticator = SoftPasskey::new(true);
    let mut soft = creation.clone();
    // SoftPasskey refuses requireResidentKey; residency is the authenticator's own business.
    soft.public_key.authenticator_selection.as_mut().unwrap().require_resident_key = false;
    let answer = authenticator.do_registration(origin.clone(), soft).unwrap();
    let resp = browser
        .client
        .post(on_b("/account/passkeys"))
        .form(&[("csrf", token.as_str()), ("ceremony", &key), ("name", "办公电脑"), ("credential", &serde_json::to_string(&answer).unwrap())])
        .send()
        .await
        .unwrap();
    let (status, added) = browser.follow(resp).await.page();
    assert_eq!(status, 200, "{added}");
    assert!(added.contains("办公电脑") && added.matches("class=\"recovery-code\"").count() == 10, "{added}");
    let cred_id = answer.id.clone();

    // Now that a passkey exists, this password-only session may neither add
    // nor delete one: the person proves again who they are, with the second factor.
    let more = browser.client.post(on_a("/account/passkeys/options")).form(&[("csrf", token.as_str())]).send().await.unwrap();
    assert_eq!(more.status(), 403);
    let remove = browser.client.post(on_b(&format!("/account/passkeys/{}/remove", answer.id))).form(&[("csrf", token.as_str())]).send().await.unwrap();
    assert_eq!(remove.status(), 303);
    assert!(remove.headers()["location"].to_str().unwrap().starts_with("/login?"), "{:?}", remove.headers());
    let (_, account) = browser.visit(&on_a("/account")).await.page();
    assert!(account.contains("id=\"passkeys-locked\"") && account.contains("办公电脑"), "{account}");

    // A password alone no longer signs this person in: the second factor is asked for.
    let rp = TestApp::rp_of(&issuer, "secure", Some(secure.clone())).await;
    let req = rp.authorize(&[]);
    let fresh = Browser::new();
    let (_, login) = fresh.visit(req.url.as_str()).await.page();
    let (status, second) = fresh.submit(&Url::parse(&on_a("/login")).unwrap(), &login, &[("username", "wang"), ("password", PASSWORD)]).await.page();
    assert_eq!(status, 200);
    assert!(second.contains("使用通行密钥验证"), "{second}");

    // A passwordless login in a new browser, begun on B and finished on A,
    // for a client that requires multi-factor authentication.
    let req = rp.authorize(&[]);
    let other = Browser::new();
    let (_, login) = other.visit(req.url.as_str().replace(&issuer, &on_b("")).as_str()).await.page();
    let token = csrf(&login);
    let return_to = Form::parse(&login).unwrap().inputs.into_iter().find(|(k, _)| k == "return_to").map(|(_, v)| v).unwrap();
    let (key, request) = options(&other, &on_b("/login/passkey/options"), &[("csrf", &token)]).await;
    let mut request: RequestChallengeResponse = serde_json::from_value(request).unwrap();
    assert!(request.public_key.allow_credentials.is_empty(), "the browser picks the passkey");
    // The authenticator finds its credential for this site and returns the user handle stored with it.
    let raw = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&cred_id).unwrap()
    };
    request.public_key.allow_credentials = vec![AllowCredentials { type_: "public-key".into(), id: raw, transports: None }];
    let mut assertion = authenticator.do_authentication(origin.clone(), request).unwrap();
    assertion.response.user_handle = Some(handle.clone());
    let assertion = serde_json::to_string(&assertion).unwrap();
    let resp = other
        .client
        .post(on_a("/login/passkey"))
        .form(&[("csrf", token.as_str()), ("ceremony", &key), ("credential", &assertion), ("return_to", &return_to)])
        .send()
        .await
        .unwrap();
    let callback = other.follow(resp).await.callback();
    let code = query_param(&callback, "code").unwrap_or_else(|| panic!("no code: {callback}"));
    let tokens = rp.exchange(&code, req.verifier).await;
    let claims = tokens.id_token().unwrap().claims(&rp.client.id_token_verifier(), &req.nonce).unwrap();
    assert_eq!(claims.auth_context_ref().map(|a| a.as_str()), Some("2"));
    let amr: Vec<&str> = claims.auth_method_refs().unwrap().iter().map(|m| m.as_str()).collect();
    assert_eq!(amr, ["hwk", "mfa"]);

    // The same assertion replayed: refused, and counted as a failed login.
    let replay = other
        .client
        .post(on_b("/login/passkey"))
        .form(&[("csrf", token.as_str()), ("ceremony", &key), ("credential", &assertion), ("return_to", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401);

    // The admin sees who has which second factors; a reset removes the
    // passkey, and it signs no one in any more.
    let list = a.cli_ok(&["user", "list"], None);
    let mfa_of = |list: &str| list.lines().find(|l| l.starts_with("wang ")).and_then(|l| l.split_whitespace().rev().nth(1).map(str::to_owned));
    assert_eq!(mfa_of(&list).as_deref(), Some("passkeys:1"), "{list}");
    a.cli_ok(&["user", "reset-mfa", "wang"], None);
    let list = a.cli_ok(&["user", "list"], None);
    assert_eq!(mfa_of(&list).as_deref(), Some("-"), "{list}");
    let later = Browser::new();
    let (_, login) = later.visit(&on_a("/login")).await.page();
    let token = csrf(&login);
    let (key, request) = options(&later, &on_a("/login/passkey/options"), &[("csrf", &token)]).await;
    let mut request: RequestChallengeResponse = serde_json::from_value(request).unwrap();
    let raw = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&cred_id).unwrap()
    };
    request.public_key.allow_credentials = vec![AllowCredentials { type_: "public-key".into(), id: raw, transports: None }];
    let mut assertion = authenticator.do_authentication(origin, request).unwrap();
    assertion.response.user_handle = Some(handle);
    let resp = later
        .client
        .post(on_a("/login/passkey"))
        .form(&[("csrf", token.as_str()), ("ceremony", &key), ("credential", &serde_json::to_string(&assertion).unwrap()), ("return_to", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Anonymous ceremonies are rows in the database: an address may start only so many a minute.
    let mut limited = None;
    // 610 tries: a minute boundary on the way leaves more than 300 on one side of it.
    for _ in 0..610 {
        let r = later.client.post(on_a("/login/passkey/options")).form(&[("csrf", token.as_str())]).send().await.unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("the 301st ceremony in a minute is refused");
    assert!(limited.headers().contains_key("retry-after"));
}
