//! Staff sign in with DingTalk, against the DingTalk simulator: a linked
//! member, a member matched by mobile number, a member linked by one
//! password login, and an account of another organisation, refused. The
//! relying party gets the same `sub` and department claims as through a
//! password login of the same person, with `amr` saying how.

use civichub_dingtalk::simulator::{DingTalkSimulator, SimConfig, SimUser};
use openidconnect::TokenResponse;
use url::Url;

use crate::helpers::{Backend, Browser, CALLBACK, Landing, PASSWORD, TestApp, query_param};
use crate::messaging::dingtalk_flags;

crate::both_backends!(staff_sign_in_with_dingtalk);

fn member(userid: &str, name: &str, mobile: &str) -> SimUser {
    SimUser { userid: userid.into(), unionid: format!("union-{userid}"), name: name.into(), mobile: mobile.into(), dept_ids: vec![1], ..Default::default() }
}

/// Follows a login through pages of the hub and the simulator until the
/// relying party's callback or a page of the hub.
async fn through(browser: &Browser, mut landing: Landing) -> Landing {
    for _ in 0..6 {
        match landing {
            Landing::Callback(u) if !u.as_str().starts_with(CALLBACK) => landing = browser.visit(u.as_str()).await,
            other => return other,
        }
    }
    panic!("too many hops");
}

/// The "钉钉登录" button's target on a login page.
fn dingtalk_button(base: &str, login_page: &str) -> String {
    let at = login_page.find("href=\"/login/upstream/dingtalk").expect("a DingTalk button");
    let href = &login_page[at + 6..];
    let href = &href[..href.find('"').unwrap()].replace("&amp;", "&");
    format!("{base}{href}")
}

/// `sub`, `amr` and `department` of the ID token a login through DingTalk as `userid` gets.
async fn through_dingtalk(app: &TestApp, sim: &DingTalkSimulator, userid: &str, secret: &str) -> Result<(String, Vec<String>, serde_json::Value), (u16, String)> {
    sim.set_current_user(userid);
    let rp = app.rp("oa", Some(secret.to_owned())).await;
    let req = rp.authorize(&["department"]);
    let browser = Browser::new();
    let (status, page) = browser.visit(req.url.as_str()).await.page();
    assert_eq!(status, 200);
    assert!(page.contains("钉钉登录"), "{page}");
    let landing = through(&browser, browser.visit(&dingtalk_button(&app.base, &page)).await).await;
    let callback = match landing {
        Landing::Callback(u) => u,
        Landing::Page { url, body, .. } if body.contains("name=\"link\"") => {
            // Unlinked: one password login links the account.
            let who = match userid {
                "wangwu" => "wang",
                other => panic!("{other} should not need linking: {body}"),
            };
            assert!(body.contains("钉钉账号「王五」尚未关联"), "{body}");
            through(&browser, browser.submit(&url, &body, &[("username", who), ("password", PASSWORD)]).await).await.callback()
        }
        Landing::Page { status, body, .. } => return Err((status, body)),
    };
    let code = query_param(&callback, "code").expect("code");
    let token = rp.exchange(&code, req.verifier).await;
    let claims = token.id_token().unwrap().claims(&rp.client.id_token_verifier(), &req.nonce).unwrap();
    let amr = claims.auth_method_refs().map(|a| a.iter().map(|m| m.as_str().to_owned()).collect()).unwrap_or_default();
    let raw = token.id_token().unwrap().to_string();
    use base64::Engine;
    let payload: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw.split('.').nth(1).unwrap()).unwrap()).unwrap();
    Ok((claims.subject().as_str().to_owned(), amr, payload["department"].clone()))
}

/// `sub` of a password login.
async fn password_sub(app: &TestApp, username: &str, secret: &str) -> String {
    let rp = app.rp("oa", Some(secret.to_owned())).await;
    let req = rp.authorize(&[]);
    let callback = Browser::new().sign_in(req.url.as_str(), username, PASSWORD).await;
    let token = rp.exchange(&query_param(&callback, "code").unwrap(), req.verifier).await;
    token.id_token().unwrap().claims(&rp.client.id_token_verifier(), &req.nonce).unwrap().subject().as_str().to_owned()
}

async fn staff_sign_in_with_dingtalk(backend: Backend) {
    let sim = DingTalkSimulator::start(SimConfig {
        users: vec![member("zhangsan", "张三", "13800000001"), member("lisi", "李四", "13800000002"), member("wangwu", "王五", "13900000003")],
        outsiders: vec![member("zhaoliu", "赵六", "13700000004")],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut flags = dingtalk_flags(&sim);
    let base = sim.base_url().to_string();
    let corp = sim.client_config().corp_id.unwrap_or_else(|| "dingsimcorp".into());
    flags.extend(["--dingtalk-login-base".into(), base, "--dingtalk-login".into(), "--dingtalk-link-by-mobile".into(), "--dingtalk-corp-id".into(), corp]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = TestApp::spawn_with(backend, &flags).await;
    app.add_user("zhang", &["--name", "张三", "--department", "市城管局", "--role", "handler"]);
    app.cli_ok(&["user", "link", "zhang", "--dingtalk", "zhangsan"], None);
    app.add_user("li", &["--name", "李四", "--phone", "13800000002", "--department", "市住建局"]);
    app.add_user("wang", &["--name", "王五", "--department", "市水利局"]);
    let secret = app.add_client("oa", &["--first-party"]).expect("secret");

    // A linked member: the same person as their password login, and amr says DingTalk.
    let (sub, amr, department) = through_dingtalk(&app, &sim, "zhangsan", &secret).await.expect("signed in");
    assert_eq!(sub, password_sub(&app, "zhang", &secret).await);
    assert_eq!(amr, vec!["dingtalk".to_owned()]);
    assert_eq!(department, "市城管局");

    // A member whose DingTalk mobile number is one user's: linked on the first login.
    let (sub, _, department) = through_dingtalk(&app, &sim, "lisi", &secret).await.expect("matched by mobile");
    assert_eq!((sub.as_str(), department.as_str()), (password_sub(&app, "li", &secret).await.as_str(), Some("市住建局")));

    // A member nobody matches: told to sign in once with a password, which links the account;
    // the next DingTalk login goes straight through.
    let (sub, amr, _) = through_dingtalk(&app, &sim, "wangwu", &secret).await.expect("linked by a password login");
    let wang = password_sub(&app, "wang", &secret).await;
    assert_eq!((sub.as_str(), amr), (wang.as_str(), vec!["pwd".to_owned()]));
    let (sub, amr, department) = through_dingtalk(&app, &sim, "wangwu", &secret).await.expect("linked now");
    assert_eq!((sub.as_str(), amr, department.as_str()), (wang.as_str(), vec!["dingtalk".to_owned()], Some("市水利局")));

    // Another organisation's account is refused, and says why.
    let (status, body) = through_dingtalk(&app, &sim, "zhaoliu", &secret).await.expect_err("an outsider");
    assert_eq!(status, 403);
    assert!(body.contains("不是本单位"), "{body}");

    // A callback works once, and only with the state it was sent with.
    sim.set_current_user("zhangsan");
    let browser = Browser::new();
    let to_dingtalk = match browser.visit(&app.url("/login/upstream/dingtalk?return_to=/kb")).await {
        Landing::Callback(u) => u,
        Landing::Page { status, body, .. } => panic!("{status}: {body}"),
    };
    let back: Url = match browser.visit(to_dingtalk.as_str()).await {
        Landing::Callback(u) => u,
        Landing::Page { status, body, .. } => panic!("{status}: {body}"),
    };
    let (status, _) = browser.visit(back.as_str()).await.page();
    assert_eq!(status, 200, "signed in, at the knowledge base");
    let (status, body) = browser.visit(back.as_str()).await.page();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("已完成或已过期"), "{body}");
    let (status, _) = browser.visit(&app.url("/login/upstream/dingtalk/callback?authCode=x&state=forged")).await.page();
    assert_eq!(status, 400);
    let (status, _) = browser.visit(&app.url("/login/upstream/nowhere")).await.page();
    assert_eq!(status, 404);

    // Every link and DingTalk login is in the audit trail.
    let log = app.cli_ok(&["audit", "list"], None);
    assert!(log.contains("user.linked"), "{log}");
}
