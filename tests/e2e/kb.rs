//! The knowledge base over HTTP: import, search contract, scopes, NRT, lifecycle.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{TestApp, http};

const FIXTURE: &str = r#"{"id":"kb-t-1","title":"住房公积金提取需要哪些材料？","body":"问：离职后想提取住房公积金，需要准备什么？\n答：携带身份证和离职证明，通过浙里办或公积金中心窗口办理。","category_name":"住房保障/住房公积金","department":"台州市住房公积金管理中心","tags":["公积金","提取"]}
{"id":"kb-t-2","title":"灵活就业人员如何参加职工养老保险？","body":"灵活就业人员可通过浙里办APP办理社会保险参保登记，按月或按季缴费。","category_name":"社会保障/养老保险","department":"台州市人力资源和社会保障局","tags":["社保","灵活就业"]}
{"id":"kb-t-3","title":"欠薪类诉求派单口径","body":"坐席受理拖欠工资诉求时，按用工单位所在地派至劳动保障监察机构。","category_name":"劳动就业/劳动争议","department":"台州市人力资源和社会保障局","audience":"internal","tags":["欠薪"]}
{"id":"kb-t-4","title":"旧版公积金提取规定","body":"本条已废止：原住房公积金提取需单位盖章。","category_name":"住房保障/住房公积金","department":"台州市住房公积金管理中心","status":"expired","effective_until":"2020-01-01"}
{"id":"kb-t-5","title":"2099年新的公积金提取政策","body":"尚未生效的公积金提取办法。","category_name":"住房保障/住房公积金","department":"台州市住房公积金管理中心","effective_from":"2099-01-01"}
this line is not JSON
{"id":"kb-t-6","body":"没有标题的条目"}
{"id":"kb-t-7","title":"新生儿如何办理医保参保？","body":"新生儿出生后可在浙里办办理城乡居民医疗保险参保登记，父母代办。","category_name":"医疗卫生/医疗保险","department":"台州市医疗保障局","tags":["医保","新生儿"]}
"#;

fn import_fixture(app: &TestApp) -> String {
    let file = app.data_dir.path().join("fixture.jsonl");
    std::fs::write(&file, FIXTURE).unwrap();
    let out = app.cli(&["kb", "import", file.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("8 records: 6 loaded, 2 refused"), "{stdout}");
    stderr
}

async fn search(app: &TestApp, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = http().get(app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls until `path` finds `id` (or not), within `limit`.
async fn wait_for(app: &TestApp, path: &str, token: Option<&str>, id: &str, present: bool, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (_, body) = search(app, path, token).await;
        let found = body["hits"].as_array().is_some_and(|h| h.iter().any(|x| x["id"] == id));
        if found == present {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{id} {} after {limit:?}: {body}", if present { "not found" } else { "still found" });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn token(app: &TestApp, scopes: &[&str]) -> impl std::future::Future<Output = String> {
    crate::helpers::service_token(app, scopes)
}

async fn public_search_contract(app: &TestApp) {
    let errors = import_fixture(app);
    assert!(errors.contains("fixture.jsonl:6: invalid JSON"), "bad lines are named: {errors}");
    assert!(errors.contains("fixture.jsonl:7: title is required"), "{errors}");
    let q = "/api/public/kb/search?q=%E5%85%AC%E7%A7%AF%E9%87%91%E6%8F%90%E5%8F%96"; // 公积金提取
    wait_for(app, q, None, "kb-t-1", true, Duration::from_secs(5)).await;
    let (status, body) = search(app, q, None).await;
    assert_eq!(status, 200);
    for field in ["total", "took_ms", "hits", "facets"] {
        assert!(body.get(field).is_some(), "{field}: {body}");
    }
    let hits = body["hits"].as_array().unwrap();
    assert_eq!(hits[0]["id"], "kb-t-1", "{body}");
    for field in ["id", "title", "snippet", "category", "department", "score"] {
        assert!(hits[0].get(field).is_some(), "{field}: {body}");
    }
    assert!(hits[0]["snippet"].as_str().unwrap().contains("<em>"), "{body}");
    assert_eq!(hits[0]["category"], "住房保障/住房公积金");
    // Expired and not-yet-effective entries never show publicly.
    let ids: Vec<&str> = hits.iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert!(!ids.contains(&"kb-t-4") && !ids.contains(&"kb-t-5"), "{ids:?}");
    assert_eq!(body["facets"]["category"]["住房保障/住房公积金"], 1, "{body}");
    assert_eq!(body["facets"]["department"]["台州市住房公积金管理中心"], 1);

    // Synonyms: 社保 finds 社会保险; pinyin: a homophone typo still finds 公积金.
    let (_, body) = search(app, "/api/public/kb/search?q=%E7%A4%BE%E4%BF%9D", None).await; // 社保
    assert_eq!(body["hits"][0]["id"], "kb-t-2", "{body}");
    let (_, body) = search(app, "/api/public/kb/search?q=%E5%85%AC%E9%B8%A1%E9%87%91", None).await; // 公鸡金
    assert_eq!(body["hits"][0]["id"], "kb-t-1", "{body}");

    // Internal entries are for agents only.
    let (_, body) = search(app, "/api/public/kb/search?q=%E6%AC%A0%E8%96%AA", None).await; // 欠薪
    assert_eq!(body["total"], 0, "{body}");

    // Filters.
    let (_, body) = search(app, "/api/public/kb/search?q=%E5%8A%9E%E7%90%86&category=%E5%8C%BB%E7%96%97%E5%8D%AB%E7%94%9F%2F%E5%8C%BB%E7%96%97%E4%BF%9D%E9%99%A9", None).await; // 办理, 医疗卫生/医疗保险
    let ids: Vec<&str> = body["hits"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["kb-t-7"], "{body}");

    // Bad input: clear 400s.
    for (path, needle) in [
        ("/api/public/kb/search", "q is required"),
        ("/api/public/kb/search?q=%20", "q is required"),
        ("/api/public/kb/search?q=a&size=101", "size"),
        ("/api/public/kb/search?q=a&page=0", "page"),
        ("/api/public/kb/search?q=%E5%85%AC%E7%A7%AF%E9%87%91&page=99", "past the last page"),
        ("/api/public/kb/search?q=%E5%85%AC%E7%A7%AF%E9%87%91&page=10000&size=100", "first 1000 results"),
    ] {
        let (status, body) = search(app, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["message"].as_str().unwrap_or_default().contains(needle), "{path}: {body}");
    }
    let (status, _) = search(app, &format!("/api/public/kb/suggest?q={}", "%E4%BD%8F".repeat(51)), None).await;
    assert_eq!(status, 400, "suggestions complete what is typed, not pages of text");
    // Suggestions complete titles.
    let (status, body) = search(app, "/api/public/kb/suggest?q=%E4%BD%8F%E6%88%BF", None).await; // 住房
    assert_eq!(status, 200);
    assert_eq!(body["suggestions"][0], "住房公积金提取需要哪些材料？", "{body}");
}

async fn agents_and_editors_need_scopes(app: &TestApp) {
    import_fixture(app);
    let reader = token(app, &["kb:read"]).await;
    let writer = token(app, &["kb:read", "kb:write"]).await;
    let q = "/api/kb/search?q=%E6%AC%A0%E8%96%AA"; // 欠薪
    let (status, _) = search(app, q, None).await;
    assert_eq!(status, 401);
    let (status, _) = search(app, q, Some("not-a-token")).await;
    assert_eq!(status, 401);
    let nothing = token(app, &["messages:send"]).await;
    let (status, body) = search(app, q, Some(&nothing)).await;
    assert_eq!(status, 403, "{body}");
    wait_for(app, q, Some(&reader), "kb-t-3", true, Duration::from_secs(5)).await;

    // Writing needs kb:write.
    let entry = json!({ "title": "电动自行车上牌在哪里办理？", "body": "电动自行车上牌可在浙里办预约，到就近登记点办理。", "category_name": "交通运输/车辆管理", "department": "台州市公安局交通警察支队", "tags": ["电瓶车", "上牌"] });
    let r = http().post(app.url("/api/kb/entries")).bearer_auth(&reader).json(&entry).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = http().post(app.url("/api/kb/entries")).bearer_auth(&writer).json(&entry).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "draft", "API entries start as drafts");
    let q = "/api/kb/search?q=%E7%94%B5%E5%8A%A8%E8%87%AA%E8%A1%8C%E8%BD%A6%E4%B8%8A%E7%89%8C"; // 电动自行车上牌
    let (_, body) = search(app, q, Some(&reader)).await;
    assert_eq!(body["total"], 0, "drafts are not searchable: {body}");

    // Publish: searchable within a second.
    let r = http().post(app.url(&format!("/api/kb/entries/{id}/publish"))).bearer_auth(&writer).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let took = wait_for(app, q, Some(&reader), &id, true, Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "visible after {took:?}");

    // Update: the new words are found, and a version is kept for each change.
    let mut changed = entry.clone();
    changed["title"] = json!("电动自行车挂牌登记在哪里办理？");
    let r = http().put(app.url(&format!("/api/kb/entries/{id}"))).bearer_auth(&writer).json(&changed).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["status"], "published", "an update keeps the status");
    wait_for(app, "/api/kb/search?q=%E6%8C%82%E7%89%8C%E7%99%BB%E8%AE%B0", Some(&reader), &id, true, Duration::from_secs(3)).await; // 挂牌登记
    let (status, versions) = search(app, &format!("/api/kb/entries/{id}/versions"), Some(&reader)).await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = versions["versions"].as_array().unwrap().iter().map(|v| v["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["create", "publish", "update"]);

    // Expire: gone from search, still readable by id.
    let r = http().post(app.url(&format!("/api/kb/entries/{id}/expire"))).bearer_auth(&writer).send().await.unwrap();
    assert_eq!(r.status(), 200);
    wait_for(app, q, Some(&reader), &id, false, Duration::from_secs(3)).await;
    let (status, body) = search(app, &format!("/api/kb/entries/{id}"), Some(&reader)).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("expired")));

    // Bad input.
    let r = http().post(app.url("/api/kb/entries")).bearer_auth(&writer).header("content-type", "application/json").body("{not json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("malformed entry JSON"), "{body}");
    let r = http().post(app.url("/api/kb/entries")).bearer_auth(&writer).json(&json!({ "title": "只有标题" })).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let (status, _) = search(app, "/api/kb/entries/kb-none", Some(&reader)).await;
    assert_eq!(status, 404);
    let r = http().post(app.url("/api/kb/entries")).bearer_auth(&writer).json(&json!({ "id": "kb-t-1", "title": "t", "body": "b" })).send().await.unwrap();
    assert_eq!(r.status(), 409);

    // Importing the same file again does not bring back what an editor withdrew
    // (its line gives no status); what it gives is taken.
    let r = http().post(app.url("/api/kb/entries/kb-t-7/expire")).bearer_auth(&writer).send().await.unwrap();
    assert_eq!(r.status(), 200);
    import_fixture(app);
    let (_, body) = search(app, "/api/kb/entries/kb-t-7", Some(&reader)).await;
    assert_eq!(body["status"], "expired", "{body}");
    let (_, body) = search(app, "/api/kb/entries/kb-t-4", Some(&reader)).await;
    assert_eq!(body["status"], "expired", "{body}");
}

async fn reindex_rebuilds_every_node(app: &TestApp) {
    import_fixture(app);
    let q = "/api/public/kb/search?q=%E6%96%B0%E7%94%9F%E5%84%BF"; // 新生儿
    wait_for(app, q, None, "kb-t-7", true, Duration::from_secs(5)).await;
    let out = app.cli_ok(&["kb", "reindex"], None);
    assert!(out.contains("rebuilds"), "{out}");
    // The running node rebuilds and keeps answering.
    tokio::time::sleep(Duration::from_millis(600)).await;
    wait_for(app, q, None, "kb-t-7", true, Duration::from_secs(5)).await;
    assert!(app.log().contains("rebuilt on request"), "{}", app.log());
}

crate::both!(public_search_contract, agents_and_editors_need_scopes, reindex_rebuilds_every_node);

/// Two hub nodes on one PostgreSQL database: a change made through either is
/// searchable on both within a second, each from its own index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_keeps_its_own_index_current() {
    crate::helpers::limited(async {
        let a = TestApp::spawn(crate::helpers::Backend::Postgres).await;
        let b = a.another_node().await;
        let writer = token(&a, &["kb:read", "kb:write"]).await;
        let entry = json!({ "title": "路灯不亮向哪里反映？", "body": "道路路灯损坏可拨打12345反映，由综合行政执法部门维修。", "status": "published" });
        let r = http().post(a.url("/api/kb/entries")).bearer_auth(&writer).json(&entry).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let q = "/api/public/kb/search?q=%E8%B7%AF%E7%81%AF"; // 路灯
        let on_a = wait_for(&a, q, None, &id, true, Duration::from_secs(3)).await;
        let on_b = wait_for(&b, q, None, &id, true, Duration::from_secs(3)).await;
        assert!(on_a < Duration::from_secs(1) && on_b < Duration::from_secs(1), "{on_a:?} {on_b:?}");
        // And the other way round: expire through node B, gone on node A.
        let r = http().post(b.url(&format!("/api/kb/entries/{id}/expire"))).bearer_auth(&writer).send().await.unwrap();
        assert_eq!(r.status(), 200, "a token issued by one node is good on the other");
        let gone = wait_for(&a, q, None, &id, false, Duration::from_secs(3)).await;
        assert!(gone < Duration::from_secs(1), "{gone:?}");
    }, String::new).await;
}

#[tokio::test]
async fn public_api_has_cors_for_configured_sites_and_a_rate_limit() {
    crate::helpers::limited(async {
        let app = TestApp::spawn_with(
            crate::helpers::Backend::Sqlite,
            &["--kb-cors-origin", "https://www.zjtz.gov.cn", "--kb-rate-limit", "5"],
        )
        .await;
        let r = http()
            .request(reqwest::Method::OPTIONS, app.url("/api/public/kb/search"))
            .header("origin", "https://www.zjtz.gov.cn")
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["access-control-allow-origin"], "https://www.zjtz.gov.cn");
        let r = http().get(app.url("/api/public/kb/search?q=x")).header("origin", "https://evil.example").send().await.unwrap();
        assert!(r.status().is_client_error(), "an unlisted origin gets no CORS grant");
        let mut statuses = Vec::new();
        for _ in 0..7 {
            statuses.push(http().get(app.url("/api/public/kb/search?q=%E7%A4%BE%E4%BF%9D")).send().await.unwrap().status().as_u16());
        }
        assert!(statuses.contains(&429), "{statuses:?}");
    }, String::new).await;
}
