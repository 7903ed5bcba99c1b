//! oidc-load: the load generator of bench/oidc (`just bench-oidc`).
//!
//!   oidc-load run --issuer URL --client-id ID --client-secret S --redirect-uri URI
//!                 --username U --password P [--ops client_credentials,refresh,code_flow,password_login]
//!                 [--login-users yes: password_login as U-0, U-1, … one account per worker]
//!                 [--concurrency 16] [--duration 10] [--warmup 1] [--max-ops 500000]
//!                 [--pid PID] [--label NAME] [--json FILE] [--threads 1]
//!   oidc-load argon2 [--threads N] [--duration 5] [--json FILE]
//!   oidc-load rs256 [--threads N] [--duration 5] [--json FILE]
//!
//! Loopback only: `run` refuses an issuer whose host is not a loopback address.
//! See bench/oidc/README.md for what each operation is.

mod browser;
mod load;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use reqwest::Url;
use serde_json::{Value, json};

use load::{Op, Settings, Target, Worker, measure, rss_kib};

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

struct Opts(HashMap<String, String>);

impl Opts {
    fn req(&self, k: &str) -> Res<String> {
        self.0
            .get(k)
            .cloned()
            .ok_or_else(|| format!("--{k} is required"))
    }
    fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Res<T> {
        self.0.get(k).map_or(Ok(default), |v| {
            v.parse().map_err(|_| format!("--{k}: bad number {v}"))
        })
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => parse_args(&args[1..]).and_then(|o| run(Opts(o))),
        Some("argon2") => parse_args(&args[1..]).and_then(|o| argon2_rate(Opts(o))),
        Some("rs256") => parse_args(&args[1..]).and_then(|o| rs256_rate(Opts(o))),
        _ => Err("usage: oidc-load run ... | oidc-load argon2 ... | oidc-load rs256 ... (see src/main.rs)".into()),
    };
    if let Err(e) = result {
        eprintln!("oidc-load: {e}");
        std::process::exit(2);
    }
}

fn write_json(o: &Opts, value: &Value) -> Res<()> {
    if let Some(path) = o.0.get("json") {
        std::fs::write(
            path,
            serde_json::to_string_pretty(value).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

fn run(o: Opts) -> Res<()> {
    let issuer = Url::parse(&o.req("issuer")?).map_err(|e| e.to_string())?;
    let loopback = match issuer.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    if !loopback {
        return Err(format!("refusing non-loopback issuer {issuer}"));
    }
    let ops =
        o.0.get("ops")
            .map_or("client_credentials,refresh,code_flow", String::as_str)
            .split(',')
            .map(|s| Op::parse(s.trim()).ok_or_else(|| format!("unknown op {s}")))
            .collect::<Res<Vec<Op>>>()?;
    let settings = Settings {
        concurrency: o.num("concurrency", 16)?,
        duration: Duration::from_secs_f64(o.num("duration", 10.0)?),
        warmup: Duration::from_secs_f64(o.num("warmup", 1.0)?),
        max_ops: o.num("max-ops", 500_000)?,
        pid: o
            .0
            .get("pid")
            .map(|p| p.parse().map_err(|_| "--pid: bad pid".to_owned()))
            .transpose()?,
    };
    let threads: usize = o.num("threads", 1)?;
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(|e| e.to_string())?;

    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(settings.concurrency * 2)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.as_str().trim_end_matches('/')
        );
        let body = async {
            client
                .get(&discovery_url)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await
        };
        let body = body.await.map_err(|e| format!("{discovery_url}: {e}"))?;
        let discovery: Value =
            serde_json::from_slice(&body).map_err(|e| format!("{discovery_url}: {e}"))?;
        let endpoint = |k: &str| -> Res<Url> {
            let s = discovery[k]
                .as_str()
                .ok_or_else(|| format!("discovery lacks {k}"))?;
            Url::parse(s).map_err(|e| e.to_string())
        };
        let target = Arc::new(Target {
            client,
            discovery: Url::parse(&discovery_url).map_err(|e| e.to_string())?,
            authorize: endpoint("authorization_endpoint")?,
            token: endpoint("token_endpoint")?,
            client_id: o.req("client-id")?,
            client_secret: o.req("client-secret")?,
            redirect_uri: o.req("redirect-uri")?,
            username: o.req("username")?,
            password: o.req("password")?,
        });
        for u in [&target.authorize, &target.token] {
            if u.host() != issuer.host() {
                return Err(format!("endpoint {u} is not on the issuer's loopback host"));
            }
        }

        let label =
            o.0.get("label")
                .cloned()
                .unwrap_or_else(|| issuer.to_string());
        let idle = settings.pid.and_then(rss_kib);
        println!(
            "== {label}: concurrency {}, {:?} per operation",
            settings.concurrency, settings.duration
        );
        if let Some(kib) = idle {
            println!("idle RSS: {:.1} MB", kib as f64 / 1024.0);
        }
        // With --login-users, worker i logs in (password_login) as
        // USERNAME-i: people log in, not one person N times at once.
        let per_worker = o.0.contains_key("login-users");
        let username = target.username.clone();
        let mut workers: Vec<Worker> = (0..settings.concurrency)
            .map(|i| Worker::logging_in_as(per_worker.then(|| format!("{username}-{i}"))))
            .collect();
        let mut results = Vec::new();
        for op in ops {
            let summary;
            (workers, summary) = measure(&target, op, workers, &settings).await;
            print_line(&summary);
            results.push(summary);
        }
        let report = json!({
            "label": label,
            "issuer": issuer.as_str(),
            "concurrency": settings.concurrency,
            "duration_s": settings.duration.as_secs_f64(),
            "idle_rss_kib": idle,
            "ops": results,
        });
        write_json(&o, &report)
    })
}

fn print_line(s: &Value) {
    let f = |k: &str| s[k].as_f64().map_or("-".to_owned(), |v| format!("{v:.2}"));
    println!(
        "{:<18} {:>9} ops/s  p50 {:>6} ms  p99 {:>7} ms  ok {:>6}  errors {} (warm-up {})  server CPU {}%  generator CPU {}%  peak RSS {} MB",
        s["op"].as_str().unwrap_or("?"),
        f("ops_per_sec"),
        f("p50_ms"),
        f("p99_ms"),
        s["ok"],
        s["errors"],
        s["warmup_errors"],
        s["server_cpu_pct"],
        s["generator_cpu_pct"],
        s["peak_rss_kib"]
            .as_f64()
            .map_or("-".to_owned(), |k| format!("{:.1}", k / 1024.0)),
    );
    if let Some(e) = s["first_error"].as_str() {
        println!("  first error: {e}");
    }
}

/// Runs `work` back to back on `threads` threads for `duration`; returns
/// runs per second and the seconds taken.
fn per_second(threads: usize, duration: Duration, work: impl Fn() + Sync) -> (f64, f64) {
    let count = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while started.elapsed() < duration {
                    work();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    (count.load(Ordering::Relaxed) as f64 / elapsed, elapsed)
}

/// Raw Argon2id verify rate in this process at civichub's parameters
/// (m=19456 KiB, t=2, p=1), one verifying thread per core by default.
fn argon2_rate(o: Opts) -> Res<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: usize = o.num("threads", cores)?;
    let duration = Duration::from_secs_f64(o.num("duration", 5.0)?);
    let params = Params::new(19456, 2, 1, None).map_err(|e| e.to_string())?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let password = b"bench-password-1";
    let phc = argon2
        .hash_password(password)
        .map_err(|e| e.to_string())?
        .to_string();

    let hash = PasswordHash::new(&phc).map_err(|e| e.to_string())?;
    let (rate, elapsed) = per_second(threads, duration, || {
        Argon2::default().verify_password(password, &hash).expect("verify");
    });
    println!(
        "raw argon2id verify (m=19456 KiB, t=2, p=1): {rate:.1} verifies/s on {threads} thread(s)"
    );
    write_json(
        &o,
        &json!({ "threads": threads, "seconds": elapsed, "verifies_per_sec": rate, "params": phc.split('$').take(4).collect::<Vec<_>>().join("$") }),
    )
}

/// Raw RS256 signing rate in this process: RSA-2048 PKCS#1 v1.5 with SHA-256
/// by AWS-LC (`aws-lc-rs`), the call civichub makes for each RS256 ID token, over a signing
/// input the size of a typical ID token, one signing thread per core by
/// default. Every authorization code flow and every refresh with `openid`
/// signs one ID token, so this bounds both on this machine: no provider
/// signing RS256 ID tokens with the same cores can exceed it.
fn rs256_rate(o: Opts) -> Res<()> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: usize = o.num("threads", cores)?;
    let duration = Duration::from_secs_f64(o.num("duration", 5.0)?);
    let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|e| e.to_string())?;
    let der = key.to_pkcs1_der().map_err(|e| e.to_string())?;
    let pair = aws_lc_rs::signature::RsaKeyPair::from_der(der.as_bytes()).map_err(|e| e.to_string())?;
    // header.payload of an ID token: about 600 bytes of base64url.
    let message = vec![b'e'; 600];

    let rng = aws_lc_rs::rand::SystemRandom::new();
    let (rate, elapsed) = per_second(threads, duration, || {
        let mut signature = vec![0u8; pair.public_modulus_len()];
        pair.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &rng, &message, &mut signature)
            .expect("sign");
    });
    println!("raw RS256 sign (aws-lc-rs, RSA-2048): {rate:.1} signatures/s on {threads} thread(s)");
    write_json(&o, &json!({ "threads": threads, "seconds": elapsed, "signs_per_sec": rate }))
}
