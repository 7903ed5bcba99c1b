//! `civichub directory sync dingtalk` against the DingTalk simulator: the
//! department tree and its members (more than one page of them) come in; a
//! dry run writes nothing; a busy DingTalk is asked again; a page that keeps
//! failing stops the sync before anything is written; a department moved
//! and a member who left are applied by the next sync. DingTalk's encrypted
//! event callbacks apply one change at a time.

use civichub_dingtalk::simulator::{DingTalkSimulator, SimConfig, SimDept, SimUser};

use crate::helpers::{Backend, TestApp};
use crate::messaging::dingtalk_flags;

crate::both_backends!(directory_sync_from_dingtalk, dingtalk_events_update_the_directory);

/// The organisation: 城管局 (2) with its 执法大队 (3), and 住建局 (4); after
/// the change, 执法大队 belongs to 住建局 and 王五 has left.
fn org(changed: bool) -> SimConfig {
    let dept = |dept_id, name: &str, parent_id| SimDept { dept_id, name: name.into(), parent_id };
    let person = |userid: &str, name: &str, mobile: &str, dept_ids: Vec<i64>| SimUser {
        userid: userid.into(),
        unionid: format!("union-{userid}"),
        name: name.into(),
        mobile: mobile.into(),
        email: format!("{userid}@city.gov.cn"),
        dept_ids,
        job_number: format!("NO-{userid}"),
        title: "科员".into(),
    };
    let mut users = vec![person("zhangsan", "张三", "13800000001", vec![3]), person("lisi", "李四", "13800000002", vec![4, 2])];
    if !changed {
        users.push(person("wangwu", "王五", "13800000003", vec![2]));
    }
    // Enough members in one department for two pages of user/list.
    users.extend((1..=120).map(|n| person(&format!("staff{n:03}"), &format!("职员{n}"), &format!("139{n:08}"), vec![2])));
    SimConfig {
        departments: vec![dept(2, "城管局", 1), dept(3, "执法大队", if changed { 4 } else { 2 }), dept(4, "住建局", 1)],
        users,
        ..Default::default()
    }
}

fn sync(app: &TestApp, sim: &DingTalkSimulator, extra: &[&str]) -> (bool, String, String) {
    let flags = dingtalk_flags(sim);
    let mut args = vec!["directory", "sync", "dingtalk"];
    args.extend(extra);
    args.extend(flags.iter().map(String::as_str));
    let out = app.cli(&args, None);
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `user list` as (username, department, status) rows.
fn users(app: &TestApp) -> Vec<(String, String, String)> {
    let out = app.cli_ok(&["user", "list"], None);
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let status = (*cols.last()?).to_owned();
            // USERNAME NAME DEPARTMENT [ROLES] STATUS; synced users have no roles.
            Some((cols.first()?.to_string(), cols.get(2).map(|s| s.to_string()).unwrap_or_default(), status))
        })
        .collect()
}

fn find(rows: &[(String, String, String)], username: &str) -> Option<(String, String)> {
    rows.iter().find(|r| r.0 == username).map(|r| (r.1.clone(), r.2.clone()))
}

async fn directory_sync_from_dingtalk(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // An account that exists already, linked to its DingTalk userid: kept, updated.
    app.add_user("zhang", &["--name", "张三"]);
    app.cli_ok(&["user", "link", "zhang", "--dingtalk", "zhangsan"], None);

    let before = DingTalkSimulator::start(org(false)).await.unwrap();
    // A dry run says what would change and writes nothing.
    let (ok, out, err) = sync(&app, &before, &["--dry-run"]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("+ 部门 执法大队 (3)"), "{out}");
    assert!(out.contains("+ 用户 lisi 李四 (lisi)"), "{out}");
    assert!(out.contains("dry run, nothing written"), "{out}");
    assert_eq!(find(&users(&app), "lisi"), None, "nothing written");

    // A busy DingTalk is asked again; then everything comes in.
    before.fail_next(2, 90018);
    let (ok, out, err) = sync(&app, &before, &[]);
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("again in"), "retried: {err}");
    assert!(out.contains("3 departments, 123 people read; departments +3 ~0 -0; users +122 ~1 disabled 0"), "{out}");
    let rows = users(&app);
    assert_eq!(find(&rows, "zhang"), Some(("执法大队".into(), "active".into())), "the linked account, its main department");
    assert_eq!(find(&rows, "lisi"), Some(("住建局".into(), "active".into())));
    assert_eq!(find(&rows, "staff120"), Some(("城管局".into(), "active".into())), "the second page of user/list");
    // Nothing changed: nothing to do.
    let (ok, out, _) = sync(&app, &before, &[]);
    assert!(ok && out.contains("departments +0 ~0 -0; users +0 ~0 disabled 0"), "{out}");
    drop(before);

    // The organisation changes: 执法大队 moves under 住建局, 王五 leaves.
    let after = DingTalkSimulator::start(org(true)).await.unwrap();
    // A page that keeps failing in the middle stops the sync before anything is written.
    after.fail_after(5, 100, -1);
    let (ok, out, err) = sync(&app, &after, &[]);
    assert!(!ok, "{out}");
    assert!(err.contains("系统繁忙"), "{err}");
    assert_eq!(find(&users(&app), "wangwu").map(|r| r.1), Some("active".into()), "nobody disabled for a failed page");

    after.fail_next(0, 0);
    let (ok, out, err) = sync(&app, &after, &[]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("~ 部门 执法大队 → 执法大队 (3)，上级 2 → 4"), "{out}");
    assert!(out.contains("- 用户 wangwu（已离职，停用）"), "{out}");
    assert_eq!(find(&users(&app), "wangwu").map(|r| r.1), Some("disabled".into()));
    assert_eq!(find(&users(&app), "zhang").map(|r| r.0), Some("执法大队".into()));

    // Every member who is here is linked: a DingTalk login finds them.
    let db = &mut app.db().await;
    use sqlx::Row;
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM user_links WHERE provider = 'dingtalk'").fetch_one(&mut *db).await.unwrap().get("n");
    assert_eq!(n, 123);
    let union: String = sqlx::query("SELECT l.subject FROM user_links l JOIN users u ON u.id = l.user_id WHERE l.provider = 'dingtalk-union' AND u.username = 'lisi'")
        .fetch_one(&mut *db)
        .await
        .unwrap()
        .get("subject");
    assert_eq!(union, "union-lisi", "the unionid is kept too");
    let parent: Option<String> =
        sqlx::query("SELECT parent_id FROM departments WHERE id = 'dingtalk:3'").fetch_one(&mut *db).await.unwrap().get("parent_id");
    assert_eq!(parent.as_deref(), Some("4"));
    drop(after);

    // 王五 comes back and is enabled again; someone an administrator disabled stays disabled.
    app.cli_ok(&["user", "disable", "lisi"], None);
    let back = DingTalkSimulator::start(org(false)).await.unwrap();
    let (ok, out, err) = sync(&app, &back, &[]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("+ 用户 wangwu（重新入职，启用）") && out.contains("enabled 1"), "{out}");
    assert_eq!(find(&users(&app), "wangwu").map(|r| r.1), Some("active".into()));
    assert_eq!(find(&users(&app), "lisi").map(|r| r.1), Some("disabled".into()), "the directory does not undo an administrator");
}

const CALLBACK_TOKEN: &str = "civichub-callback-token";
const CALLBACK_AES_KEY: &str = "QkPCXgGsnTRGXsl400XZ8hxdmODnk891tcoqIyuVKmB";

/// Posts `event` as DingTalk does: encrypted and signed with the app's key.
async fn post_event(app: &TestApp, crypto: &civichub_dingtalk::CallbackCrypto, event: serde_json::Value, tamper: bool) -> (u16, serde_json::Value) {
    let encrypt = crypto.encrypt(&event.to_string()).unwrap();
    let (timestamp, nonce) = ("1795915477000", "n0nce123");
    let mut signature = crypto.signature(timestamp, nonce, &encrypt);
    if tamper {
        signature = signature.chars().rev().collect();
    }
    // `timeStamp`, as DingTalk's documentation spells it (the hub takes `timestamp` too).
    let url = app.url(&format!("/api/integrations/dingtalk/events?msg_signature={signature}&timeStamp={timestamp}&nonce={nonce}"));
    let r = crate::helpers::http().post(url).json(&serde_json::json!({ "encrypt": encrypt })).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

async fn dingtalk_events_update_the_directory(backend: Backend) {
    let sim = DingTalkSimulator::start(org(false)).await.unwrap();
    let mut flags = dingtalk_flags(&sim);
    flags.extend(["--dingtalk-callback-token".into(), CALLBACK_TOKEN.into(), "--dingtalk-callback-aes-key".into(), CALLBACK_AES_KEY.into()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let app = TestApp::spawn_with(backend, &flags).await;
    let crypto = civichub_dingtalk::CallbackCrypto::new(CALLBACK_TOKEN, CALLBACK_AES_KEY, sim.client_config().app_key).unwrap();

    // The URL check when the callback is registered: an encrypted, signed "success".
    let (status, reply) = post_event(&app, &crypto, serde_json::json!({"EventType": "check_url"}), false).await;
    assert_eq!(status, 200, "{reply}");
    let (sig, ts, nonce, enc) = (reply["msg_signature"].as_str().unwrap(), reply["timeStamp"].as_str().unwrap(), reply["nonce"].as_str().unwrap(), reply["encrypt"].as_str().unwrap());
    crypto.verify(sig, ts, nonce, enc).expect("the reply is signed");
    assert_eq!(crypto.decrypt(enc).unwrap(), "success");

    // A member joins: read from DingTalk, with the department they belong to.
    let (status, _) = post_event(&app, &crypto, serde_json::json!({"EventType": "user_add_org", "UserId": ["lisi"], "CorpId": "dingsimcorp"}), false).await;
    assert_eq!(status, 200);
    assert_eq!(find(&users(&app), "lisi"), Some(("住建局".into(), "active".into())));
    // A department is created.
    let (status, _) = post_event(&app, &crypto, serde_json::json!({"EventType": "org_dept_create", "DeptId": [3]}), false).await;
    assert_eq!(status, 200);
    let db = &mut app.db().await;
    use sqlx::Row;
    let name: String = sqlx::query("SELECT name FROM departments WHERE id = 'dingtalk:3'").fetch_one(&mut *db).await.unwrap().get("name");
    assert_eq!(name, "执法大队");
    // A forged callback changes nothing.
    let (status, _) = post_event(&app, &crypto, serde_json::json!({"EventType": "user_leave_org", "UserId": ["lisi"]}), true).await;
    assert_eq!(status, 403);
    assert_eq!(find(&users(&app), "lisi").map(|r| r.1), Some("active".into()));
    // A leave event for someone DingTalk still has as a member changes nothing.
    let (status, _) = post_event(&app, &crypto, serde_json::json!({"EventType": "user_leave_org", "UserId": ["lisi"]}), false).await;
    assert_eq!(status, 200);
    assert_eq!(find(&users(&app), "lisi").map(|r| r.1), Some("active".into()));
    // The member leaves: disabled.
    sim.leave("lisi");
    let (status, _) = post_event(&app, &crypto, serde_json::json!({"EventType": "user_leave_org", "UserId": ["lisi"]}), false).await;
    assert_eq!(status, 200);
    assert_eq!(find(&users(&app), "lisi").map(|r| r.1), Some("disabled".into()));
    // And rejoins: enabled again; the old leave event, sent again, does not undo that.
    sim.rejoin("lisi");
    let (status, _) = post_event(&app, &crypto, serde_json::json!({"EventType": "user_add_org", "UserId": ["lisi"], "CorpId": "dingsimcorp"}), false).await;
    assert_eq!(status, 200);
    assert_eq!(find(&users(&app), "lisi").map(|r| r.1), Some("active".into()));
    let (status, _) = post_event(&app, &crypto, serde_json::json!({"EventType": "user_leave_org", "UserId": ["lisi"]}), false).await;
    assert_eq!(status, 200);
    assert_eq!(find(&users(&app), "lisi").map(|r| r.1), Some("active".into()));
    // DingTalk unreachable: the event is refused, so DingTalk sends it again.
    sim.set_down(true);
    let (status, _) = post_event(&app, &crypto, serde_json::json!({"EventType": "user_add_org", "UserId": ["zhangsan"]}), false).await;
    assert_eq!(status, 503);
    assert_eq!(find(&users(&app), "zhangsan"), None);
}
