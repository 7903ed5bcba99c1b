//! Staff sign in through an upstream: DingTalk (against the DingTalk
//! simulator: a linked member, a member matched by mobile number, a member
//! linked by one password login, and an account of another organisation,
//! refused), `oidc-provider` from npm (a provider we did not write), and
//! another CivicHub. The relying party gets the same `sub` and department
//! claims as through a password login of the same person, with `amr` saying how.

use civichub_dingtalk::simulator::{DingTalkSimulator, SimConfig, SimUser};
use openidconnect::TokenResponse;
use url::Url;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::{Backend, Browser, CALLBACK, Landing, PASSWORD, TestApp, announced, free_port, query_param};
use crate::messaging::dingtalk_flags;

crate::both_backends!(staff_sign_in_with_dingtalk, staff_sign_in_through_oidc_provider, one_civichub_federates_to_another);

fn member(userid: &str, name: &str, mobile: &str) -> SimUser {
    SimUser { userid: userid.into(), unionid: format!("union-{userid}"), name: name.into(), mobile: mobile.into(), dept_ids: vec![1], ..Default::default() }
}

/// What the relying party learns from a login: `sub`, `amr`, `department`.
type Login = (String, Vec<String>, serde_json::Value);

/// Signs in at `app` through its upstream `name`: answers the upstream's login
/// page with `upstream_login` and, when the account is not linked yet, the
/// hub's own with `local_login` (checking the page names `whose` account).
/// A page it does not expect (a refusal) is the error.
async fn through_upstream(
    app: &TestApp,
    name: &str,
    upstream_login: (&str, &str),
    local_login: Option<(&str, &str, &str)>,
    secret: &str,
    browser: &Browser,
) -> Result<Login, (u16, String)> {
    let rp = app.rp("oa", Some(secret.to_owned())).await;
    let req = rp.authorize(&["department"]);
    let mut landing = browser.visit(req.url.as_str()).await;
    let mut linked_locally = false;
    for _ in 0..12 {
        landing = match landing {
            Landing::Callback(u) if u.as_str().starts_with(CALLBACK) => {
                landing = Landing::Callback(u);
                break;
            }
            Landing::Callback(u) => browser.visit(u.as_str()).await,
            Landing::Page { url, body, status } => {
                let ours = url.as_str().starts_with(&app.base);
                if ours && body.contains("name=\"link\"") {
                    let (user, password, whose) = local_login.unwrap_or_else(|| panic!("not expected to link: {body}"));
                    assert!(body.contains(whose), "the page says whose account: {body}");
                    linked_locally = true;
                    browser.submit(&url, &body, &[("username", user), ("password", password)]).await
                } else if ours && body.contains(&format!("href=\"/login/upstream/{name}")) {
                    let at = body.find(&format!("href=\"/login/upstream/{name}")).unwrap() + 6;
                    let href = body[at..][..body[at..].find('"').unwrap()].replace("&amp;", "&");
                    browser.visit(&format!("{}{href}", app.base)).await
                } else if !ours && body.contains("name=\"password\"") {
                    browser.submit(&url, &body, &[("username", upstream_login.0), ("password", upstream_login.1)]).await
                } else if !ours && body.contains("name=\"decision\"") {
                    browser.submit(&url, &body, &[("decision", "allow")]).await
                } else {
                    return Err((status, body));
                }
            }
        };
    }
    let callback = landing.callback();
    assert_eq!(local_login.is_some(), linked_locally, "a password login linked the account");
    let token = rp.exchange(&query_param(&callback, "code").expect("code"), req.verifier).await;
    let id_token = token.id_token().unwrap();
    let claims = id_token.claims(&rp.client.id_token_verifier(), &req.nonce).unwrap();
    let amr = claims.auth_method_refs().map(|a| a.iter().map(|m| m.as_str().to_owned()).collect()).unwrap_or_default();
    use base64::Engine;
    let raw = id_token.to_string();
    let payload: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw.split('.').nth(1).unwrap()).unwrap()).unwrap();
    Ok((claims.subject().as_str().to_owned(), amr, payload["department"].clone()))
}

/// A DingTalk login as `userid` (the simulator's signed-in user), in a new browser.
async fn through_dingtalk(app: &TestApp, sim: &DingTalkSimulator, userid: &str, local_login: Option<(&str, &str, &str)>, secret: &str) -> Result<Login, (u16, String)> {
    sim.set_current_user(userid);
    through_upstream(app, "dingtalk", ("", ""), local_login, secret, &Browser::new()).await
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
        users: vec![
            member("zhangsan", "张三", "13800000001"),
            member("lisi", "李四", "13800000002"),
            member("wangwu", "王五", "13900000003"),
            member("sunqi", "孙七", "13900000005"),
        ],
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
    let (sub, amr, department) = through_dingtalk(&app, &sim, "zhangsan", None, &secret).await.expect("signed in");
    assert_eq!(sub, password_sub(&app, "zhang", &secret).await);
    assert_eq!(amr, vec!["dingtalk".to_owned()]);
    assert_eq!(department, "市城管局");

    // A member whose DingTalk mobile number is one user's: linked on the first login.
    let (sub, _, department) = through_dingtalk(&app, &sim, "lisi", None, &secret).await.expect("matched by mobile");
    assert_eq!((sub.as_str(), department.as_str()), (password_sub(&app, "li", &secret).await.as_str(), Some("市住建局")));

    // A member nobody matches: told to sign in once with a password, which links the account;
    // the next DingTalk login goes straight through.
    let (sub, amr, _) = through_dingtalk(&app, &sim, "wangwu", Some(("wang", PASSWORD, "钉钉账号「王五」尚未关联")), &secret).await.expect("linked by a password login");
    let wang = password_sub(&app, "wang", &secret).await;
    assert_eq!((sub.as_str(), amr), (wang.as_str(), vec!["pwd".to_owned()]));
    let (sub, amr, department) = through_dingtalk(&app, &sim, "wangwu", None, &secret).await.expect("linked now");
    assert_eq!((sub.as_str(), amr, department.as_str()), (wang.as_str(), vec!["dingtalk".to_owned()], Some("市水利局")));

    // Linked from the account page: a signed-in person links their DingTalk account, and can unlink it.
    app.add_user("sun", &["--name", "孙七"]);
    let browser = Browser::new();
    let (_, login) = browser.visit(&app.url("/account")).await.page();
    let (_, account) =
        browser.submit(&Url::parse(&app.url("/login")).unwrap(), &login, &[("username", "sun"), ("password", PASSWORD)]).await.page();
    assert!(account.contains("钉钉：未关联"), "{account}");
    let at = account.find("href=\"/login/upstream/dingtalk?intent=link").expect("a link button") + 6;
    let href = account[at..][..account[at..].find('"').unwrap()].replace("&amp;", "&");
    sim.set_current_user("sunqi");
    let mut landing = browser.visit(&format!("{}{href}", app.base)).await;
    for _ in 0..4 {
        let Landing::Callback(u) = landing else { break };
        landing = browser.visit(u.as_str()).await;
    }
    let (_, account) = landing.page();
    assert!(account.contains("已关联钉钉") && account.contains("钉钉：已关联"), "{account}");
    let (sub, amr, _) = through_dingtalk(&app, &sim, "sunqi", None, &secret).await.expect("linked from the account page");
    assert_eq!((sub, amr), (password_sub(&app, "sun", &secret).await, vec!["dingtalk".to_owned()]));
    let unlink_form = &account[account.find("<form method=\"post\" action=\"/account/unlink/dingtalk\"").unwrap()..];
    let (_, account) = browser.submit(&Url::parse(&app.url("/account")).unwrap(), unlink_form, &[]).await.page();
    assert!(account.contains("已解除关联") && account.contains("钉钉：未关联"), "{account}");

    // With a second factor on the account, the password alone links nothing:
    // the link waits for the code.
    let (_, app_totp) = crate::mfa::enrol_totp(&app, "sun").await;
    let links = || async {
        let mut db = app.db().await;
        let n: i64 = sqlx::Row::get(
            &sqlx::query("SELECT COUNT(*) AS n FROM user_links l JOIN users u ON u.id = l.user_id WHERE u.username = 'sun' AND l.provider = 'dingtalk'")
                .fetch_one(&mut db)
                .await
                .unwrap(),
            "n",
        );
        n
    };
    sim.set_current_user("sunqi");
    let browser = Browser::new();
    let mut landing = browser.visit(&app.url("/login/upstream/dingtalk")).await;
    while let Landing::Callback(u) = landing {
        landing = browser.visit(u.as_str()).await;
    }
    let (url, body) = match landing {
        Landing::Page { url, body, .. } if body.contains("name=\"link\"") => (url, body),
        other => panic!("not asked to link: {:?}", other.page()),
    };
    // The page that offers the link, handed to someone else, offers them nothing.
    let (_, elsewhere) = Browser::new().visit(url.as_str()).await.page();
    assert!(!elsewhere.contains("name=\"link\""), "another browser is offered the link: {elsewhere}");
    let (status, mfa_page) = browser.submit(&url, &body, &[("username", "sun"), ("password", PASSWORD)]).await.page();
    assert!(status == 200 && mfa_page.contains("name=\"code\""), "asked for the code: {mfa_page}");
    assert_eq!(links().await, 0, "a password alone linked the DingTalk account");
    let code = app_totp.generate(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 30);
    let done = browser.submit(&Url::parse(&app.url("/login/mfa")).unwrap(), &mfa_page, &[("code", &code)]).await;
    assert!(matches!(done, Landing::Page { status: 200, .. }), "{:?}", done.page());
    assert_eq!(links().await, 1, "linked once the second factor was given");

    // Another organisation's account is refused, and says why.
    let (status, body) = through_dingtalk(&app, &sim, "zhaoliu", None, &secret).await.expect_err("an outsider");
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
    // A second login started in another tab of the same browser does not spoil the first.
    for _ in 0..4 {
        assert!(matches!(browser.visit(&app.url("/login/upstream/dingtalk")).await, Landing::Callback(_)));
    }
    // Opened in another browser (someone handed it the URL), the callback signs nobody in.
    let (status, body) = Browser::new().visit(back.as_str()).await.page();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("不是在这个浏览器中发起的"), "{body}");
    let (status, _) = browser.visit(back.as_str()).await.page();
    assert_eq!(status, 200, "signed in, at the knowledge base");
    let (status, body) = browser.visit(back.as_str()).await.page();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("已完成、已过期"), "{body}");
    let (status, _) = browser.visit(&app.url("/login/upstream/dingtalk/callback?authCode=x&state=forged")).await.page();
    assert_eq!(status, 400);
    let (status, _) = browser.visit(&app.url("/login/upstream/nowhere")).await.page();
    assert_eq!(status, 404);

    // Every link and DingTalk login is in the audit trail.
    let log = app.cli_ok(&["audit", "list"], None);
    assert!(log.contains("user.linked"), "{log}");
}

/// `oidc-provider` (npm), configured like CivicHub (`bench/oidc/provider.mjs`), on `port`,
/// sending browsers back to `redirect_uri`. Killed when dropped.
struct NodeProvider {
    child: Child,
    issuer: String,
}

impl NodeProvider {
    fn start(port: u16, redirect_uri: &str) -> NodeProvider {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/oidc/provider.mjs");
        let mut child = Command::new("node")
            .args([script, "--port", &port.to_string(), "--redirect-uri", redirect_uri])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (tests/run.sh installs it, and oidc-provider with npm ci in bench/oidc)");
        let Some(issuer) = announced(child.stdout.take().unwrap(), "oidc-provider listening on ", Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("oidc-provider did not start within 60 s");
        };
        NodeProvider { child, issuer }
    }
}

impl Drop for NodeProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn staff_sign_in_through_oidc_provider(backend: Backend) {
    let hub_port = free_port();
    let provider = NodeProvider::start(0, &format!("http://127.0.0.1:{hub_port}/login/upstream/zjzw/callback"));
    let spec = format!(
        "name=zjzw,issuer={},client_id=bench-conf,client_secret=bench-conf-secret-0123456789abcdef,scopes=openid profile email,label=浙江政务服务网登录",
        provider.issuer
    );
    let listen = format!("127.0.0.1:{hub_port}");
    let app = TestApp::spawn_with(backend, &["--listen", &listen, "--upstream-oidc", &spec]).await;
    app.add_user("wang", &["--name", "王五", "--department", "市水利局"]);
    let secret = app.add_client("oa", &["--first-party"]).expect("secret");
    let password = password_sub(&app, "wang", &secret).await;

    // First time: the upstream account is new here, and one password login links it.
    let browser = Browser::new();
    let (sub, amr, _) = through_upstream(&app, "zjzw", ("bench", "bench-password-1"), Some(("wang", PASSWORD, "浙江政务服务网账号尚未关联")), &secret, &browser).await.expect("linked");
    assert_eq!((sub.as_str(), amr), (password.as_str(), vec!["pwd".to_owned()]));
    // Next time (a new browser, a new upstream session): straight through, as the same person.
    let (sub, amr, department) = through_upstream(&app, "zjzw", ("bench", "bench-password-1"), None, &secret, &Browser::new()).await.expect("signed in");
    assert_eq!((sub.as_str(), amr, department.as_str()), (password.as_str(), vec!["fed".to_owned()], Some("市水利局")));

    // The login page offers the upstream by its configured label.
    let rp = app.rp("oa", Some(secret.clone())).await;
    let b = Browser::new();
    let (_, page) = b.visit(rp.authorize(&[]).url.as_str()).await.page();
    assert!(page.contains("浙江政务服务网登录"), "{page}");
}

async fn one_civichub_federates_to_another(backend: Backend) {
    // The upstream answers as localhost, the downstream as 127.0.0.1, so the
    // browser keeps a session cookie for each.
    let (upstream_port, hub_port) = (free_port(), free_port());
    let upstream_issuer = format!("http://localhost:{upstream_port}");
    let upstream_listen = format!("127.0.0.1:{upstream_port}");
    let upstream = TestApp::spawn_with(backend, &["--listen", &upstream_listen, "--issuer", &upstream_issuer]).await;
    upstream.add_user("remote", &["--name", "赵六", "--email", "zhaoliu@city.gov.cn"]);
    let upstream_secret = upstream
        .add_client(
            "downstream",
            &[
                "--first-party",
                "--redirect-uri",
                &format!("http://127.0.0.1:{hub_port}/login/upstream/city/callback"),
                "--backchannel-logout-uri",
                &format!("http://127.0.0.1:{hub_port}/login/upstream/city/backchannel-logout"),
            ],
        )
        .expect("secret");
    let spec = format!("name=city,issuer={upstream_issuer},client_id=downstream,client_secret={upstream_secret},link_by=email");
    let listen = format!("127.0.0.1:{hub_port}");
    let app = TestApp::spawn_with(backend, &["--listen", &listen, "--upstream-oidc", &spec]).await;
    app.add_user("local", &["--name", "赵六", "--email", "zhaoliu@city.gov.cn", "--department", "市政务服务管理办公室"]);
    let secret = app.add_client("oa", &["--first-party"]).expect("secret");

    // Matched by the e-mail address the upstream verified: no password here at all.
    let browser = Browser::new();
    let (sub, amr, department) = through_upstream(&app, "city", ("remote", PASSWORD), None, &secret, &browser).await.expect("signed in");
    assert_eq!((sub.as_str(), amr), (password_sub(&app, "local", &secret).await.as_str(), vec!["fed".to_owned()]));
    assert_eq!(department, "市政务服务管理办公室", "the downstream directory's claims");

    // Signing out at the upstream signs out here too, by its back-channel logout.
    let (status, _) = browser.visit(&app.url("/kb")).await.page();
    assert_eq!(status, 200, "signed in here");
    let (status, body) = browser.visit(&format!("{upstream_issuer}/end-session")).await.page();
    assert_eq!(status, 200, "{body}");
    let page_url = Url::parse(&format!("{upstream_issuer}/end-session")).unwrap();
    let _ = browser.submit(&page_url, &body, &[("confirm", "yes")]).await;
    let signed_out = crate::helpers::eventually(10, || async {
        match browser.visit(&app.url("/kb")).await {
            Landing::Page { body, .. } if body.contains("name=\"password\"") => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(signed_out.is_some(), "the downstream session ended:\n{}", app.log());

    // A forged logout token is refused with 400, as the specification asks.
    let r = crate::helpers::http()
        .post(app.url("/login/upstream/city/backchannel-logout"))
        .form(&[("logout_token", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
