//! bus-load: the load generator of bench/bus (`just bench-bus`).
//!
//!   bus-load hub --nats URL --ready-file FILE --go-file FILE [--nats-pid PID]
//!                [--concurrency 16] [--duration 10] [--warmup 2] [--rate 1000]
//!                [--drain-timeout 1800] [--json FILE]
//!   bus-load raw --nats URL [--nats-pid PID] [--concurrency 16] [--duration 10]
//!                [--warmup 2] [--batch 256] [--json FILE]
//!
//!   bus-load hotline --ready-file FILE --go-file FILE [--concurrency 8]
//!                [--duration 10] [--warmup 2] [--json FILE]
//!
//! `hotline` (`just bench-hotline`) starts the DingTalk simulator, writes its
//! settings to `--ready-file`, waits for `--go-file` (the hub's `url`, an
//! agent's `username`/`password`, a client with scope `hotline`), then
//! registers and dispatches tickets and times each handler's work notice.
//!
//! `hub` starts the CMPP gateway simulator in this process, writes its
//! address to `--ready-file`, waits for `--go-file` (JSON: the hub's `url`,
//! `pid`, and a `client_id`/`client_secret` with `messages:send`), then posts
//! messages to `POST /api/messages` and matches what the simulator received
//! against what was sent. `raw` publishes envelope-sized messages to a
//! JetStream stream of its own with async-nats. See bench/bus/README.md.

mod hotline;
mod hub;
mod raw;
mod stats;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

type Res<T> = Result<T, String>;

/// `--key value` pairs; every option takes a value.
fn parse_args(args: &[String]) -> Res<HashMap<String, String>> {
    let mut map = HashMap::new();
    let mut it = args.iter();
    while let Some(key) = it.next() {
        let name = key.strip_prefix("--").ok_or_else(|| format!("unexpected argument {key}"))?;
        let value = it.next().ok_or_else(|| format!("{key} needs a value"))?;
        map.insert(name.to_owned(), value.clone());
    }
    Ok(map)
}

pub struct Opts(HashMap<String, String>);

impl Opts {
    pub fn req(&self, k: &str) -> Res<String> {
        self.0.get(k).cloned().ok_or_else(|| format!("--{k} is required"))
    }
    pub fn get(&self, k: &str) -> Option<String> {
        self.0.get(k).cloned()
    }
    pub fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Res<T> {
        self.0.get(k).map_or(Ok(default), |v| v.parse().map_err(|_| format!("--{k}: bad number {v}")))
    }
    pub fn secs(&self, k: &str, default: f64) -> Res<Duration> {
        let v: f64 = self.num(k, default)?;
        if !(v.is_finite() && v >= 0.0) {
            return Err(format!("--{k}: bad duration {v}"));
        }
        Ok(Duration::from_secs_f64(v))
    }
    pub fn pid(&self, k: &str) -> Res<Option<u32>> {
        self.0.get(k).map(|p| p.parse().map_err(|_| format!("--{k}: bad pid {p}"))).transpose()
    }
    pub fn write_json(&self, value: &Value) -> Res<()> {
        if let Some(path) = self.0.get("json") {
            let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
            std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))?;
        }
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = parse_args(args.get(1..).unwrap_or_default()).map(Opts);
    let result = match args.first().map(String::as_str) {
        Some("hub") => opts.and_then(hub::run),
        Some("raw") => opts.and_then(raw::run),
        Some("hotline") => opts.and_then(hotline::run),
        _ => Err("usage: bus-load hub|raw|hotline ... (see src/main.rs)".into()),
    };
    if let Err(e) = result {
        eprintln!("bus-load: {e}");
        std::process::exit(2);
    }
}

/// A fresh multi-threaded runtime (2 workers: the machine's cores).
pub fn runtime(workers: usize) -> Res<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Connects to NATS (loopback only: this is a benchmark).
pub async fn nats_connect(url: &str) -> Res<async_nats::Client> {
    let host = url.trim_start_matches("nats://").split(':').next().unwrap_or_default();
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return Err(format!("refusing non-loopback NATS URL {url}"));
    }
    async_nats::ConnectOptions::new()
        .name("bus-load")
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| format!("NATS at {url}: {e}"))
}
