//! Multi-factor login with an authenticator app, its codes computed by
//! `totp-rs` (a TOTP implementation we did not write): enrolment on the
//! account page, a client with `--require-mfa` that never gets a code after a
//! password alone, step-up that asks only for the second factor, `acr_values`,
//! replayed codes and reused recovery codes refused, and an admin reset.

use openidconnect::{OAuth2TokenResponse, TokenResponse};
use totp_rs::{Algorithm, Secret, TOTP};
use url::Url;

use crate::helpers::{Browser, CALLBACK, Landing, PASSWORD, TestApp, http, query_param, service_token};

crate::both!(logins_with_a_second_factor, the_admin_api_sets_a_clients_mfa_policy, a_second_factor_is_set_up_on_the_way_in, removing_the_app_takes_both_factors_and_few_guesses);

fn totp(secret: &str) -> TOTP {
    TOTP::new(Algorithm::SHA1, 6, 1, 30, Secret::Encoded(secret.to_owned()).to_bytes().unwrap()).unwrap()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The first form on `body` whose action is `action`, as a page of its own.
fn form(body: &str, action: &str) -> String {
    let at = body.find(&format!("action=\"{action}\"")).unwrap_or_else(|| panic!("no form {action} in {body}"));
    let start = body[..at].rfind("<form").unwrap();
    body[start..].to_owned()
}

/// `acr` and `amr` of the ID token a login ending at `callback` gets.
async fn acr_amr(app: &TestApp, rp_secret: &str, client: &str, req: crate::helpers::AuthRequest, callback: &Url) -> (String, Vec<String>) {
    let rp = app.rp(client, Some(rp_secret.to_owned())).await;
    let token = rp.exchange(&query_param(callback, "code").expect("a code"), req.verifier).await;
    let claims = token.id_token().unwrap().claims(&rp.client.id_token_verifier(), &req.nonce).unwrap();
    let acr = claims.auth_context_ref().map(|a| a.as_str().to_owned()).unwrap_or_default();
    let amr = claims.auth_method_refs().map(|a| a.iter().map(|m| m.as_str().to_owned()).collect()).unwrap_or_default();
    (acr, amr)
}

/// Signs in with the password only, from `start`: where the browser ends up.
async fn password_only(app: &TestApp, start: &str, username: &str) -> Landing {
    let browser = Browser::new();
    let (_, login) = browser.visit(start).await.page();
    browser.submit(&Url::parse(&app.url("/login")).unwrap(), &login, &[("username", username), ("password", PASSWORD)]).await
}

/// The landing is the account page asking for a second factor to be set up, not a code.
fn assert_asked_to_enrol(landed: &Landing) {
    match landed {
        Landing::Page { status, body, url } => {
            assert_eq!((*status, url.path()), (200, "/account"), "{body}");
            assert!(body.contains("id=\"enrol-required\""), "{body}");
        }
        Landing::Callback(u) => panic!("a password alone reached the client: {u}"),
    }
}

/// Signs `username` in with the password in a new browser and sets up an
/// authenticator app on the account page: the browser and the app.
pub(crate) async fn enrol_totp(app: &TestApp, username: &str) -> (Browser, TOTP) {
    let browser = Browser::new();
    let (_, login) = browser.visit(&app.url("/account")).await.page();
    let (_, account) = browser.submit(&Url::parse(&app.url("/login")).unwrap(), &login, &[("username", username), ("password", PASSWORD)]).await.page();
    let account_url = Url::parse(&app.url("/account")).unwrap();
    let (_, account) = browser.submit(&account_url, &form(&account, "/account/totp/begin"), &[]).await.page();
    let at = account.find("data-secret=\"").unwrap() + 13;
    let app_totp = totp(&account[at..][..account[at..].find('"').unwrap()]);
    let code = app_totp.generate(unix_now());
    let (status, enrolled) = browser.submit(&account_url, &form(&account, "/account/totp/confirm"), &[("code", &code)]).await.page();
    assert_eq!(status, 200, "{enrolled}");
    (browser, app_totp)
}

/// Enters `code` on a second-factor page.
async fn second_factor(browser: &Browser, page_url: &Url, body: &str, code: &str) -> Landing {
    browser.submit(page_url, body, &[("code", code)]).await
}

async fn logins_with_a_second_factor(app: &TestApp) {
    app.add_user("li", &["--name", "李雷"]);
    let secure = app.add_client("secure", &["--first-party", "--require-mfa"]).expect("secret");
    let plain = app.add_client("plain", &["--first-party"]).expect("secret");

    // A client that requires MFA: a password alone gets no code; someone
    // with no second factor is asked to set one up first.
    let rp = app.rp("secure", Some(secure.clone())).await;
    let req = rp.authorize(&[]);
    assert_asked_to_enrol(&password_only(app, req.url.as_str(), "li").await);

    // Enrol on the account page (a session with the password only, kept for the step-up below).
    let browser = Browser::new();
    let (_, login) = browser.visit(&app.url("/account")).await.page();
    let (_, account) = browser.submit(&Url::parse(&app.url("/login")).unwrap(), &login, &[("username", "li"), ("password", PASSWORD)]).await.page();
    let account_url = Url::parse(&app.url("/account")).unwrap();
    let (_, account) = browser.submit(&account_url, &form(&account, "/account/totp/begin"), &[]).await.page();
    assert!(account.contains("<svg"), "a QR code to scan: {account}");
    let at = account.find("data-secret=\"").unwrap() + 13;
    let secret = account[at..][..account[at..].find('"').unwrap()].to_owned();
    let app_totp = totp(&secret);
    let (status, _) = browser.submit(&account_url, &form(&account, "/account/totp/confirm"), &[("code", "000000")]).await.page();
    assert_eq!(status, 400, "a wrong code does not enrol");
    let (_, account) = browser.visit(&app.url("/account")).await.page();
    let enrolled_at = unix_now();
    let first = app_totp.generate(enrolled_at);
    let (status, enrolled) = browser.submit(&account_url, &form(&account, "/account/totp/confirm"), &[("code", &first)]).await.page();
    assert_eq!(status, 200, "{enrolled}");
    let recovery: Vec<String> = enrolled
        .split("<li class=\"recovery-code\">")
        .skip(1)
        .map(|s| s[..s.find('<').unwrap()].to_owned())
        .collect();
    assert_eq!(recovery.len(), 10, "{enrolled}");

    // Step-up: the password-only session meets the MFA client and is asked only for the code.
    let req = rp.authorize(&[]);
    let (status, page) = browser.visit(req.url.as_str()).await.page();
    assert_eq!(status, 200);
    assert!(page.contains("name=\"code\"") && !page.contains("name=\"password\""), "only the second factor: {page}");
    let mfa_url = Url::parse(&app.url("/login/mfa")).unwrap();
    // The code used to enrol is spent: the same step is refused, the next one works.
    let (status, page) = second_factor(&browser, &mfa_url, &page, &first).await.page();
    assert_eq!(status, 401, "a used code is refused: {page}");
    let next = app_totp.generate(enrolled_at + 30);
    let callback = second_factor(&browser, &mfa_url, &page, &next).await.callback();
    let (acr, amr) = acr_amr(app, &secure, "secure", req, &callback).await;
    assert_eq!(acr, "2");
    assert_eq!(amr, vec!["pwd", "otp", "mfa"]);

    // A new login: the password, then the code; the same code again elsewhere is refused.
    let fresh = Browser::new();
    let req = rp.authorize(&[]);
    let (_, login) = fresh.visit(req.url.as_str()).await.page();
    let (_, page) = fresh.submit(&Url::parse(&app.url("/login")).unwrap(), &login, &[("username", "li"), ("password", PASSWORD)]).await.page();
    assert!(page.contains("name=\"code\""), "the second factor is asked: {page}");
    let (status, page) = second_factor(&fresh, &mfa_url, &page, &next).await.page();
    assert_eq!(status, 401, "a replayed code is refused: {page}");
    // A recovery code works once.
    let callback = second_factor(&fresh, &mfa_url, &page, &recovery[0]).await.callback();
    assert!(callback.as_str().starts_with(CALLBACK));
    let (acr, _) = acr_amr(app, &secure, "secure", req, &callback).await;
    assert_eq!(acr, "2");
    let again = Browser::new();
    let (_, login) = again.visit(rp.authorize(&[]).url.as_str()).await.page();
    let (_, page) = again.submit(&Url::parse(&app.url("/login")).unwrap(), &login, &[("username", "li"), ("password", PASSWORD)]).await.page();
    let (status, _) = second_factor(&again, &mfa_url, &page, &recovery[0]).await.page();
    assert_eq!(status, 401, "a used recovery code is refused");

    // acr_values asks a client without the requirement for MFA, and gets it.
    let plain_rp = app.rp("plain", Some(plain.clone())).await;
    let mut req = plain_rp.authorize(&[]);
    req.url.query_pairs_mut().append_pair("acr_values", "2");
    let b = Browser::new();
    let (_, login) = b.visit(req.url.as_str()).await.page();
    let (_, page) = b.submit(&Url::parse(&app.url("/login")).unwrap(), &login, &[("username", "li"), ("password", PASSWORD)]).await.page();
    let callback = second_factor(&b, &mfa_url, &page, &recovery[1]).await.callback();
    let (acr, amr) = acr_amr(app, &plain, "plain", req, &callback).await;
    assert_eq!((acr.as_str(), amr.contains(&"mfa".to_owned())), ("2", true));

    // A lost phone: the admin resets the factors, and the password alone signs in again.
    let out = app.cli_ok(&["user", "reset-mfa", "li"], None);
    assert!(out.contains("removed"), "{out}");
    let req = plain_rp.authorize(&[]);
    let callback = Browser::new().sign_in(req.url.as_str(), "li", PASSWORD).await;
    let (acr, amr) = acr_amr(app, &plain, "plain", req, &callback).await;
    assert_eq!((acr.as_str(), amr), ("1", vec!["pwd".to_owned()]));
    let log = app.cli_ok(&["audit", "list"], None);
    for event in ["mfa.enrolled", "mfa.verified", "mfa.failed", "mfa.reset"] {
        assert!(log.contains(event), "{event} in the audit trail");
    }
}

/// `PUT /api/admin/clients/{id}/mfa` (scope `admin:clients`) makes a client
/// require a second factor, or not; the next login to it obeys.
async fn the_admin_api_sets_a_clients_mfa_policy(app: &TestApp) {
    app.add_user("han", &[]);
    let portal = app.add_client("portal", &["--first-party"]).expect("secret");
    let admin = service_token(app, &["admin:clients"]).await;
    let other = service_token(app, &["kb:read"]).await;
    let url = app.url("/api/admin/clients/portal/mfa");

    let shown: serde_json::Value = http().get(app.url("/api/admin/clients/portal")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(shown["mfa"], "optional");
    assert!(shown.get("client_secret").is_none() && !shown.to_string().contains(&portal), "no secret is shown");

    let put = |token: Option<&str>, body: &str| {
        let mut req = http().put(&url).header("content-type", "application/json").body(body.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(put(None, r#"{"mfa":"required"}"#).await.unwrap().status(), 401);
    assert_eq!(put(Some(&other), r#"{"mfa":"required"}"#).await.unwrap().status(), 403, "kb:read is not admin:clients");
    let bad = put(Some(&admin), r#"{"mfa":"sometimes"}"#).await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("required"), "the error says what is allowed");
    let missing = http().put(app.url("/api/admin/clients/nobody/mfa")).bearer_auth(&admin).body(r#"{"mfa":"required"}"#).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    // A console people sign in to may hold the scope; only administrators use it there.
    app.add_user("boss", &["--role", "admin"]);
    let console = app.add_client("console", &["--first-party", "--scope", "admin:clients"]).expect("secret");
    let rp = app.rp("console", Some(console)).await;
    for (who, expected) in [("han", 403), ("boss", 200)] {
        let req = rp.authorize(&["admin:clients"]);
        let landed = Browser::new().sign_in(req.url.as_str(), who, PASSWORD).await;
        let token = rp.exchange(&query_param(&landed, "code").expect("a code"), req.verifier).await;
        let r = http().get(app.url("/api/admin/clients")).bearer_auth(token.access_token().secret()).send().await.unwrap();
        assert_eq!(r.status(), expected, "{who}");
    }

    // Before: a password is enough. After: the client gets no code for one.
    let rp = app.rp("portal", Some(portal.clone())).await;
    let req = rp.authorize(&[]);
    let landed = Browser::new().sign_in(req.url.as_str(), "han", PASSWORD).await;
    let single = rp.exchange(&query_param(&landed, "code").expect("a code"), req.verifier).await;
    let userinfo = || http().get(app.url("/userinfo")).bearer_auth(single.access_token().secret()).send();
    assert_eq!(userinfo().await.unwrap().status(), 200);
    let set: serde_json::Value = put(Some(&admin), r#"{"mfa":"required"}"#).await.unwrap().json().await.unwrap();
    assert_eq!(set["mfa"], "required");
    assert_eq!(set["revoked_tokens"].as_u64().map(|n| n >= 1), Some(true), "{set}");
    assert_eq!(userinfo().await.unwrap().status(), 401, "the single-factor login's tokens are revoked");
    assert_asked_to_enrol(&password_only(app, rp.authorize(&[]).url.as_str(), "han").await);
    let list: serde_json::Value = http().get(app.url("/api/admin/clients")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    let portal_entry = list["clients"].as_array().unwrap().iter().find(|c| c["client_id"] == "portal").unwrap().clone();
    assert_eq!(portal_entry["mfa"], "required");

    // And back.
    let set: serde_json::Value = put(Some(&admin), r#"{"mfa":"optional"}"#).await.unwrap().json().await.unwrap();
    assert_eq!(set["mfa"], "optional");
    let landed = Browser::new().sign_in(rp.authorize(&[]).url.as_str(), "han", PASSWORD).await;
    assert!(query_param(&landed, "code").is_some(), "{landed}");
    assert!(app.cli_ok(&["audit", "list"], None).contains("client.mfa_policy"));
}

/// Someone without a second factor, at a client that requires one, sets up an
/// authenticator app on the way (as a required action) and then reaches the
/// client with both factors.
async fn a_second_factor_is_set_up_on_the_way_in(app: &TestApp) {
    app.add_user("zhao", &[]);
    let secure = app.add_client("secure", &["--first-party", "--require-mfa"]).expect("secret");
    let rp = app.rp("secure", Some(secure.clone())).await;
    let req = rp.authorize(&[]);
    let browser = Browser::new();
    let (_, login) = browser.visit(req.url.as_str()).await.page();
    let (_, account) = browser.submit(&Url::parse(&app.url("/login")).unwrap(), &login, &[("username", "zhao"), ("password", PASSWORD)]).await.page();
    assert!(account.contains("id=\"enrol-required\""), "{account}");
    let account_url = Url::parse(&app.url("/account")).unwrap();
    let (_, account) = browser.submit(&account_url, &form(&account, "/account/totp/begin"), &[]).await.page();
    assert!(account.contains("id=\"enrol-required\""), "the way back is kept: {account}");
    let at = account.find("data-secret=\"").unwrap() + 13;
    let secret = account[at..][..account[at..].find('"').unwrap()].to_owned();
    let code = totp(&secret).generate(unix_now());
    let (status, enrolled) = browser.submit(&account_url, &form(&account, "/account/totp/confirm"), &[("code", &code)]).await.page();
    assert_eq!(status, 200, "{enrolled}");
    let recovery = enrolled.split("<li class=\"recovery-code\">").nth(1).map(|s| s[..s.find('<').unwrap()].to_owned()).unwrap();
    // "Continue" goes back to the authorization request, which asks for the second factor.
    let needle = "id=\"continue\" href=\"";
    let at = enrolled.find(needle).expect("a way to continue") + needle.len();
    let next = &enrolled[at..][..enrolled[at..].find('"').unwrap()];
    let next = crate::helpers::unescape(next);
    assert!(next.starts_with("/authorize?"), "{next}");
    let (_, second) = browser.visit(&app.url(&next)).await.page();
    assert!(second.contains("name=\"code\"") && !second.contains("name=\"password\""), "only the second factor: {second}");
    let callback = second_factor(&browser, &Url::parse(&app.url("/login/mfa")).unwrap(), &second, &recovery).await.callback();
    let (acr, amr) = acr_amr(app, &secure, "secure", req, &callback).await;
    assert_eq!((acr.as_str(), amr), ("2", vec!["pwd".to_owned(), "otp".to_owned(), "mfa".to_owned()]));
}

async fn removing_the_app_takes_both_factors_and_few_guesses(app: &TestApp) {
    app.add_user("zhao", &[]);
    let (browser, app_totp) = enrol_totp(app, "zhao").await;
    let remove = |code: String| {
        let browser = &browser;
        async move {
            let (_, page) = browser.visit(&app.url("/account")).await.page();
            let token = crate::helpers::csrf(&page);
            browser.client.post(app.url("/account/totp/remove")).form(&[("csrf", token.as_str()), ("code", code.as_str())]).send().await.unwrap()
        }
    };
    // The session that enrolled it has the password only: removing the app asks for both factors first.
    let resp = remove(app_totp.generate(unix_now() + 30)).await;
    assert_eq!(resp.status(), 303);
    let login = app.url(resp.headers()["location"].to_str().unwrap());
    assert!(login.contains("/login?"), "{login}");
    let (_, body) = browser.visit(&login).await.page();
    let (_, mfa_page) = browser.submit(&Url::parse(&login).unwrap(), &body, &[("username", "zhao"), ("password", PASSWORD)]).await.page();
    let (status, _) = second_factor(&browser, &Url::parse(&app.url("/login/mfa")).unwrap(), &mfa_page, &app_totp.generate(unix_now() + 30)).await.page();
    assert_eq!(status, 200);

    // Wrong codes count like wrong codes at login: after five, even the right one waits.
    for _ in 0..5 {
        assert_eq!(remove("000000".into()).await.status(), 401);
    }
    assert_eq!(remove(app_totp.generate(unix_now() + 60)).await.status(), 429);
    let mut db = app.db().await;
    let kept: i64 = sqlx::Row::get(&sqlx::query("SELECT COUNT(*) AS n FROM mfa_totp t JOIN users u ON u.id = t.user_id WHERE u.username = 'zhao'").fetch_one(&mut db).await.unwrap(), "n");
    assert_eq!(kept, 1, "the app is still there");
}
