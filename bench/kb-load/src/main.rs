//! kb-load: the load generator of bench/kb (`just bench-kb`).
//!
//!   kb-load http    --url URL --queries FILE [--record FILE] [common]
//!   kb-load raw     --index DIR --queries FILE [--record FILE] [--compare FILE] [common]
//!   kb-load pg-load --pg URL --corpus FILE [--json FILE]
//!   kb-load pg      --pg URL --queries FILE [--mode or|and] [--compare FILE] [common]
//!
//! common: [--concurrency 4] [--duration 10] [--warmup 1] [--max-ops 1000000]
//!         [--pid PID] [--label NAME] [--json FILE]
//!
//! `http` searches `GET /api/public/kb/search` of a running hub (loopback
//! only); `raw` calls `civichub_kb::KbIndex::search` in this process on the
//! hub's index directory (the hub must be stopped: the index has one
//! writer); `pg-load` puts a corpus into PostgreSQL with a GIN-indexed
//! tsvector; `pg` runs the same queries there. See bench/kb/README.md.

mod pg;
mod stats;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use civichub_kb::{KbIndex, SearchRequest, Visibility};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use stats::{Outcome, Settings};

type Res<T> = Result<T, String>;

/// `--key value` pairs; every option takes a value.
fn parse_args(args: &[String]) -> Res<HashMap<String, String>> {
    let mut map = HashMap::new();
    let mut it = args.iter();
    while let Some(key) = it.next() {
        let name = key
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {key}"))?;
        let value = it.next().ok_or_else(|| format!("{key} needs a value"))?;
        map.insert(name.to_owned(), value.clone());
    }
    Ok(map)
}

pub struct Opts(HashMap<String, String>);

impl Opts {
    pub fn req(&self, k: &str) -> Res<String> {
        self.0
            .get(k)
            .cloned()
            .ok_or_else(|| format!("--{k} is required"))
    }
    pub fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Res<T> {
        self.0.get(k).map_or(Ok(default), |v| {
            v.parse().map_err(|_| format!("--{k}: bad number {v}"))
        })
    }
    pub fn settings(&self) -> Res<Settings> {
        Ok(Settings {
            concurrency: self.num("concurrency", 4)?,
            duration: Duration::from_secs_f64(self.num("duration", 10.0)?),
            warmup: Duration::from_secs_f64(self.num("warmup", 1.0)?),
            max_ops: self.num("max-ops", 1_000_000)?,
            pids: self
                .0
                .get("pid")
                .map(|p| p.parse().map_err(|_| "--pid: bad pid".to_owned()))
                .transpose()?
                .into_iter()
                .collect(),
        })
    }
    pub fn write_json(&self, value: &Value) -> Res<()> {
        if let Some(path) = self.0.get("json") {
            std::fs::write(
                path,
                serde_json::to_string_pretty(value).map_err(|e| e.to_string())?,
            )
            .map_err(|e| format!("{path}: {e}"))?;
        }
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = parse_args(args.get(1..).unwrap_or_default()).map(Opts);
    let result = match args.first().map(String::as_str) {
        Some("http") => opts.and_then(http),
        Some("raw") => opts.and_then(raw),
        Some("pg-load") => opts.and_then(pg::load),
        Some("pg") => opts.and_then(pg::run),
        _ => Err("usage: kb-load http|raw|pg-load|pg ... (see src/main.rs)".into()),
    };
    if let Err(e) = result {
        eprintln!("kb-load: {e}");
        std::process::exit(2);
    }
}

/// The query list: one JSON object per line with a `q`.
pub fn read_queries(path: &str) -> Res<Vec<String>> {
    #[derive(Deserialize)]
    struct Line {
        q: String,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let queries = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Line>(l)
                .map(|x| x.q)
                .map_err(|e| format!("{path}: {e}"))
        })
        .collect::<Res<Vec<_>>>()?;
    if queries.is_empty() {
        return Err(format!("{path}: no queries"));
    }
    Ok(queries)
}

/// One query's first page: ids and, where comparable, the scores.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Top {
    pub ids: Vec<String>,
    pub scores: Vec<f64>,
}

/// First pages per query, as recorded by `--record`.
pub type Recorded = HashMap<String, Top>;

/// How the results of this system compare with the recorded (HTTP) ones:
/// queries whose first page has the same ids; queries whose first page has
/// the same scores rank by rank (within 1e-5 relative: entries with equal
/// scores may come in another order, see README); and the mean share of
/// the recorded ids also found here.
pub fn compare(o: &Opts, results: &[(String, Top)]) -> Res<Option<Value>> {
    let Some(path) = o.0.get("compare") else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let recorded: Recorded = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let (mut same, mut same_scores, mut overlap_sum, mut n) = (0usize, 0usize, 0f64, 0usize);
    for (q, top) in results {
        let Some(want) = recorded.get(q) else {
            continue;
        };
        n += 1;
        let mut a = top.ids.clone();
        let mut b = want.ids.clone();
        a.sort();
        b.sort();
        if a == b {
            same += 1;
        }
        if !top.scores.is_empty()
            && top.scores.len() == want.scores.len()
            && top
                .scores
                .iter()
                .zip(&want.scores)
                .all(|(x, y)| (x - y).abs() <= 1e-5 * x.abs().max(y.abs()))
        {
            same_scores += 1;
        }
        if !want.ids.is_empty() {
            overlap_sum += want.ids.iter().filter(|id| top.ids.contains(id)).count() as f64
                / want.ids.len() as f64;
        } else if top.ids.is_empty() {
            overlap_sum += 1.0;
        }
    }
    Ok(Some(json!({
        "queries": n,
        "same_top_ids": same,
        "same_scores": same_scores,
        "mean_overlap": if n > 0 { overlap_sum / n as f64 } else { 0.0 },
    })))
}

/// Writes the first pages to `--record`, if given.
fn record(o: &Opts, results: &[(String, Top)]) -> Res<()> {
    if let Some(path) = o.0.get("record") {
        let recorded: Recorded = results.iter().cloned().collect();
        let text = serde_json::to_string(&recorded).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[derive(Deserialize)]
struct HttpHit {
    id: String,
    score: f64,
}

#[derive(Deserialize)]
struct HttpResponse {
    total: u64,
    hits: Vec<HttpHit>,
}

/// Closed-loop HTTP searches against `--url` (the hub's base URL).
fn http(o: Opts) -> Res<()> {
    let base = url::Url::parse(&o.req("url")?).map_err(|e| e.to_string())?;
    let loopback = match base.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    if !loopback {
        return Err(format!("refusing non-loopback URL {base}"));
    }
    let queries = read_queries(&o.req("queries")?)?;
    let settings = o.settings()?;
    let endpoint = base
        .join("/api/public/kb/search")
        .map_err(|e| e.to_string())?;
    let urls: Vec<url::Url> = queries
        .iter()
        .map(|q| {
            let mut u = endpoint.clone();
            u.query_pairs_mut()
                .append_pair("q", q)
                .append_pair("page", "1")
                .append_pair("size", "10");
            u
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(settings.concurrency * 2)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let client = Arc::new(client);
        let once = {
            let client = client.clone();
            move |url: url::Url| {
                let client = client.clone();
                async move {
                    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
                    let status = resp.status();
                    let body = resp.bytes().await.map_err(|e| e.to_string())?;
                    if !status.is_success() {
                        return Err(format!(
                            "{status}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(200)])
                        ));
                    }
                    let r: HttpResponse =
                        serde_json::from_slice(&body).map_err(|e| format!("bad JSON: {e}"))?;
                    Ok(Outcome {
                        total: Some(r.total),
                        top: Top {
                            scores: r.hits.iter().map(|h| h.score).collect(),
                            ids: r.hits.into_iter().map(|h| h.id).collect(),
                        },
                    })
                }
            }
        };
        // One unmeasured pass over the queries: checks every one answers,
        // and records the top ids for the other systems to compare with.
        let mut results = Vec::new();
        for (q, url) in queries.iter().zip(&urls) {
            let outcome = once(url.clone())
                .await
                .map_err(|e| format!("query {q:?}: {e}"))?;
            results.push((q.clone(), outcome.top));
        }
        record(&o, &results)?;
        let label =
            o.0.get("label")
                .cloned()
                .unwrap_or_else(|| "HTTP search".into());
        let summary = stats::drive_async(&settings, &urls, once).await;
        let mut summary = stats::summary(&label, &settings, queries.len(), summary);
        summary["system"] = json!("http");
        stats::print_line(&summary);
        o.write_json(&summary)
    })
}

/// Closed-loop in-process searches on the hub's index directory, one thread
/// per `--concurrency`.
fn raw(o: Opts) -> Res<()> {
    let dir = PathBuf::from(o.req("index")?);
    if !dir.join("meta.json").exists() {
        return Err(format!("{}: no Tantivy index here", dir.display()));
    }
    let queries = read_queries(&o.req("queries")?)?;
    let settings = o.settings()?;
    let opened = Instant::now();
    let index =
        KbIndex::open(Some(&dir), civichub_kb::analysis::Synonyms::builtin()).map_err(|e| {
            format!(
                "opening {}: {e} (is a hub still running on it?)",
                dir.display()
            )
        })?;
    let open_ms = opened.elapsed().as_secs_f64() * 1000.0;
    let docs = index.len();
    let search = |q: &str| -> Res<Outcome> {
        let req = SearchRequest {
            q: q.to_owned(),
            category: None,
            department: None,
            page: 1,
            size: 10,
        };
        let r = index
            .search(&req, Visibility::Public, now_unix())
            .map_err(|e| e.to_string())?;
        Ok(Outcome {
            total: Some(r.total as u64),
            top: Top {
                scores: r.hits.iter().map(|h| f64::from(h.score)).collect(),
                ids: r.hits.into_iter().map(|h| h.id).collect(),
            },
        })
    };
    let mut results = Vec::new();
    for q in &queries {
        let outcome = search(q).map_err(|e| format!("query {q:?}: {e}"))?;
        results.push((q.clone(), outcome.top));
    }
    let agreement = compare(&o, &results)?;
    record(&o, &results)?;
    let label =
        o.0.get("label")
            .cloned()
            .unwrap_or_else(|| "raw Tantivy".into());
    let measured = stats::drive_threads(
        &settings,
        &queries,
        |_| Ok(()),
        |_: &mut (), q: &str| search(q),
    );
    let mut summary = stats::summary(&label, &settings, queries.len(), measured);
    summary["system"] = json!("raw");
    summary["index_docs"] = json!(docs);
    summary["index_open_ms"] = json!(open_ms);
    summary["agreement_with_http"] = agreement.unwrap_or(Value::Null);
    stats::print_line(&summary);
    println!(
        "  index: {docs} documents, opened in {open_ms:.0} ms; the process's CPU is the searchers' CPU"
    );
    if let Some(a) = summary.get("agreement_with_http").filter(|a| !a.is_null()) {
        println!(
            "  same top-10 ids as the HTTP endpoint for {} of {} queries, same scores rank by rank for {}",
            a["same_top_ids"], a["queries"], a["same_scores"]
        );
    }
    o.write_json(&summary)
}
