//! `bus-load hotline`: ticket registrations per second, and the latency from
//! registering a ticket to its handler's DingTalk work notice arriving at
//! the DingTalk simulator (which runs in this process and timestamps each
//! notice). Each iteration registers a ticket and dispatches it, as an
//! agent signed in through the hub's own login (authorization code flow).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use civichub_dingtalk::simulator::{DingTalkSimulator, SimConfig, SimUser};
use serde_json::{Value, json};

use crate::stats::latency_summary;
use crate::{Opts, Res};

/// The DingTalk userid the hub's handler is linked to.
pub const HANDLER_USERID: &str = "bench-handler";

pub fn run(opts: Opts) -> Res<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(main(opts))
}

/// The hub's answer to a redirect: where to.
fn location(r: &reqwest::Response, base: &str) -> Res<String> {
    let loc = r.headers().get("location").and_then(|v| v.to_str().ok()).ok_or_else(|| format!("no redirect from {} ({})", r.url(), r.status()))?;
    Ok(if loc.starts_with("http") { loc.to_owned() } else { format!("{base}{loc}") })
}

fn hidden(body: &str, name: &str) -> Option<String> {
    let key = format!("name=\"{name}\" value=\"");
    let start = body.find(&key)? + key.len();
    let end = body[start..].find('"')? + start;
    // askama escapes & " ' < > as numeric or named references.
    let mut v = body[start..end].to_owned();
    for (from, to) in [("&#38;", "&"), ("&amp;", "&"), ("&#34;", "\""), ("&quot;", "\""), ("&#39;", "'"), ("&#60;", "<"), ("&#62;", ">")] {
        v = v.replace(from, to);
    }
    Some(v)
}

/// An access token with scope `hotline` for `username`, through the code flow.
async fn sign_in(go: &Value) -> Res<String> {
    let base = go["url"].as_str().ok_or("go file: url")?.trim_end_matches('/').to_owned();
    let (client_id, secret) = (go["client_id"].as_str().ok_or("client_id")?, go["client_secret"].as_str().ok_or("client_secret")?);
    let redirect = go["redirect_uri"].as_str().ok_or("redirect_uri")?;
    let browser = reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().map_err(|e| e.to_string())?;
    let authorize = format!(
        "{base}/authorize?response_type=code&client_id={client_id}&redirect_uri={}&scope=openid%20hotline&state=bench",
        redirect.replace(':', "%3A").replace('/', "%2F")
    );
    let r = browser.get(&authorize).send().await.map_err(|e| e.to_string())?;
    if !r.status().is_redirection() {
        return Err(format!("{authorize}: {} {}", r.status(), r.text().await.unwrap_or_default()));
    }
    let login = location(&r, &base)?;
    let page = browser.get(&login).send().await.map_err(|e| e.to_string())?.text().await.map_err(|e| e.to_string())?;
    let form = [
        ("csrf", hidden(&page, "csrf").ok_or("login page: no csrf")?),
        ("return_to", hidden(&page, "return_to").unwrap_or_default()),
        ("username", go["username"].as_str().ok_or("username")?.to_owned()),
        ("password", go["password"].as_str().ok_or("password")?.to_owned()),
    ];
    let mut r = browser.post(format!("{base}/login")).form(&form).send().await.map_err(|e| e.to_string())?;
    let mut code = None;
    for _ in 0..5 {
        let next = location(&r, &base)?;
        if next.starts_with(redirect) {
            code = next.split(['?', '&']).find_map(|kv| kv.strip_prefix("code=")).map(str::to_owned);
            break;
        }
        r = browser.get(&next).send().await.map_err(|e| e.to_string())?;
    }
    let code = code.ok_or("the code flow did not reach the redirect URI")?;
    let token: Value = browser
        .post(format!("{base}/token"))
        .basic_auth(client_id, Some(secret))
        .form(&[("grant_type", "authorization_code"), ("code", code.as_str()), ("redirect_uri", redirect)])
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    token["access_token"].as_str().map(str::to_owned).ok_or_else(|| format!("no access token: {token}"))
}

async fn main(opts: Opts) -> Res<()> {
    let concurrency: usize = opts.num("concurrency", 8)?;
    let duration = opts.secs("duration", 10.0)?;
    let warmup = opts.secs("warmup", 2.0)?;
    let sim = DingTalkSimulator::start(SimConfig {
        users: vec![SimUser { userid: HANDLER_USERID.into(), name: "承办人".into(), mobile: "13800000009".into(), dept_ids: vec![1], ..Default::default() }],
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let c = sim.client_config();
    let ready = json!({ "base_url": sim.base_url().to_string(), "app_key": c.app_key, "app_secret": c.app_secret.expose(), "agent_id": c.agent_id });
    std::fs::write(opts.req("ready-file")?, ready.to_string()).map_err(|e| e.to_string())?;
    println!("DingTalk simulator at {}", sim.base_url());

    let go_file = opts.req("go-file")?;
    let go: Value = loop {
        if let Ok(text) = std::fs::read_to_string(&go_file)
            && let Ok(v) = serde_json::from_str(&text)
        {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let base = go["url"].as_str().ok_or("go file: url")?.trim_end_matches('/').to_owned();
    let token = sign_in(&go).await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().map_err(|e| e.to_string())?;

    let mut report = json!({});
    for (phase, length) in [("warm-up", warmup), ("max", duration)] {
        let sent: Arc<Mutex<HashMap<String, SystemTime>>> = Arc::default();
        let errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let started = Instant::now();
        let notices_before = sim.notices().len();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (http, token, base, sent, errors) = (http.clone(), token.clone(), base.clone(), sent.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while started.elapsed() < length {
                    i += 1;
                    let t0 = SystemTime::now();
                    let body = json!({"channel": "phone", "caller_phone": "13912345678", "content": format!("小区路灯不亮，第{i}次反映"), "category": "070101"});
                    let registered = http.post(format!("{base}/api/hotline/tickets")).bearer_auth(&token).json(&body).send().await;
                    let number = match registered {
                        Ok(r) if r.status() == 201 => r.json::<Value>().await.ok().and_then(|v| v["number"].as_str().map(str::to_owned)),
                        Ok(r) => {
                            errors.lock().unwrap().push(format!("register: {}", r.status()));
                            None
                        }
                        Err(e) => {
                            errors.lock().unwrap().push(format!("register: {e}"));
                            None
                        }
                    };
                    let Some(number) = number else { continue };
                    let dispatched = http
                        .post(format!("{base}/api/hotline/tickets/{number}/dispatch"))
                        .bearer_auth(&token)
                        .json(&json!({"department": "城管局"}))
                        .send()
                        .await;
                    match dispatched {
                        Ok(r) if r.status() == 200 => {
                            sent.lock().unwrap().insert(number, t0);
                        }
                        Ok(r) => errors.lock().unwrap().push(format!("dispatch: {}", r.status())),
                        Err(e) => errors.lock().unwrap().push(format!("dispatch: {e}")),
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let window = started.elapsed().as_secs_f64();
        let expected = sent.lock().unwrap().len();
        // Wait for every notice (at most 60 s after the last one came).
        let mut last_progress = Instant::now();
        let mut seen = 0;
        while sim.notices().len() - notices_before < expected && last_progress.elapsed() < Duration::from_secs(60) {
            let now = sim.notices().len();
            if now != seen {
                seen = now;
                last_progress = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let sent = sent.lock().unwrap().clone();
        let mut latencies = Vec::new();
        let mut matched = 0;
        for n in sim.notices().iter().skip(notices_before) {
            let text = format!("{:?}", n.msg);
            if let Some(start) = text.find("12345-")
                && let Some(t0) = sent.get(&text[start..(start + 21).min(text.len())])
                && let Ok(d) = n.received_at.duration_since(*t0)
            {
                matched += 1;
                latencies.push(d.as_secs_f64() * 1e3);
            }
        }
        let errors = errors.lock().unwrap().clone();
        let summary = json!({
            "phase": phase,
            "window_s": window,
            "registered_per_s": expected as f64 / window,
            "dispatched": expected,
            "notified": matched,
            "missing": expected.saturating_sub(matched),
            "errors": errors.len(),
            "first_error": errors.first(),
            "latency": latency_summary(latencies),
        });
        println!(
            "{phase:8} registered+dispatched {expected} ({:.1}/s), notices {matched}, missing {}, errors {}, registration → DingTalk notice p50 {} ms p99 {} ms",
            expected as f64 / window,
            expected.saturating_sub(matched),
            errors.len(),
            summary["latency"]["p50_ms"].as_f64().map_or("-".into(), |v| format!("{v:.1}")),
            summary["latency"]["p99_ms"].as_f64().map_or("-".into(), |v| format!("{v:.1}")),
        );
        report[phase] = summary;
    }
    opts.write_json(&report)
}
