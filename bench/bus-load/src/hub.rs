//! `bus-load hub`: `POST /api/messages` → the hub → NATS JetStream → the
//! hub's SMS sender → CMPP → the simulator in this process.
//!
//! Every message goes to its own phone number (`138` + the sequence number
//! in 8 digits) with its own text, which carries the sequence number, so
//! each one the simulator receives is matched with the request that sent
//! it: its latency is the simulator's receipt time minus the send time
//! (both `SystemTime`, same process). Phases, in order:
//!
//! 1. warm-up: closed loop, `--concurrency` connections, `--warmup` seconds;
//! 2. max: the same for `--duration` seconds;
//! 3. rate: open loop, one request every 1/`--rate` s for `--duration`
//!    seconds, each sent on its own schedule whether or not earlier ones
//!    have been answered (at most 512 outstanding); its latency counts from
//!    the scheduled time.
//!
//! After each phase the run waits until the simulator has every accepted
//! message (or nothing arrived for 15 s, or `--drain-timeout`), then until
//! the hub is idle (its JetStream consumers have nothing pending and the
//! stream stopped growing), so that phases do not overlap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use civichub_sms::{CmppSimConfig, CmppSimulator};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::stats::{Cpu, latency_summary};
use crate::{Opts, Res};

/// The text of message `seq` in phase `tag`: a typical hotline notice
/// (34 characters, one UCS-2 segment).
pub fn text(tag: char, seq: u64) -> String {
    format!("【12345】您反映的问题已受理，工单号 {tag}{seq:07}，请留意回访。")
}

fn seq_of(text: &str) -> Option<u64> {
    let rest = text.split_once("工单号 ")?.1;
    let mut chars = rest.chars();
    chars.next()?;
    let digits: String = chars.take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn phone(seq: u64) -> String {
    format!("138{:08}", seq % 100_000_000)
}

fn ms_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -(e.duration().as_secs_f64() * 1000.0),
    }
}

fn unix_s(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The simulator, on a thread and runtime of its own so that its receipt
/// times do not wait behind the generator's tasks.
struct Sim {
    sim: Arc<CmppSimulator>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sim {
    fn start() -> Res<Sim> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("cmpp-sim".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let config = CmppSimConfig { listen: ([127, 0, 0, 1], 0).into(), ..Default::default() };
                    match CmppSimulator::start(config).await {
                        Ok(sim) => {
                            let sim = Arc::new(sim);
                            let _ = tx.send(Ok(sim.clone()));
                            let _ = stopped.await;
                            sim.shutdown();
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                        }
                    }
                });
            })
            .map_err(|e| e.to_string())?;
        let sim = rx.recv().map_err(|e| e.to_string())??;
        Ok(Sim { sim, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What run.sh writes to `--go-file` once the hub listens.
#[derive(Deserialize)]
struct Go {
    url: String,
    pid: Option<u32>,
    client_id: String,
    client_secret: String,
}

/// One request.
#[derive(Clone)]
struct Sent {
    seq: u64,
    scheduled: SystemTime,
    sent: SystemTime,
    api_ms: f64,
    accepted: bool,
}

struct Ctx {
    http: reqwest::Client,
    endpoint: String,
    auth: String,
    next_seq: AtomicU64,
}

/// Posts message `seq`; `Ok` only for 202 with `"status":"queued"`.
async fn post(ctx: &Ctx, tag: char, seq: u64) -> Result<(), String> {
    let body = json!({"to": {"phone": phone(seq)}, "text": text(tag, seq)}).to_string();
    let resp = ctx
        .http
        .post(&ctx.endpoint)
        .header("authorization", &ctx.auth)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| format!("response: {e}"))?;
    if status.as_u16() != 202 {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes).chars().take(200).collect::<String>()));
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("response: {e}"))?;
    if v["status"] != "queued" || !v["id"].is_string() {
        return Err(format!("unexpected answer {v}"));
    }
    Ok(())
}

/// One phase's requests.
struct Phase {
    name: &'static str,
    tag: char,
    start: SystemTime,
    window: Duration,
    sends: Vec<Sent>,
    errors: u64,
    first_error: Option<String>,
    cpu: Value,
    /// Messages the simulator had received when the window closed.
    received_at_end: usize,
    /// [`probe`] when the window closed.
    at_end: Value,
}

#[derive(Default)]
struct Errors {
    count: u64,
    first: Option<String>,
}

fn record(sends: &Mutex<Vec<Sent>>, errors: &Mutex<Errors>, s: Sent, r: Result<(), String>) {
    if let Err(e) = r
        && let Ok(mut er) = errors.lock()
    {
        er.count += 1;
        er.first.get_or_insert(e);
    }
    if let Ok(mut v) = sends.lock() {
        v.push(s);
    }
}

/// Closed loop: `n` connections, each sends its next message as soon as the
/// previous one was answered.
#[allow(clippy::too_many_arguments)]
async fn closed_loop(ctx: &Arc<Ctx>, sim: &CmppSimulator, js: &jetstream::Context, name: &'static str, tag: char, n: usize, d: Duration, pids: (Option<u32>, Option<u32>)) -> Phase {
    let cpu = Cpu::start(pids.0, pids.1);
    let start = SystemTime::now();
    let deadline = Instant::now() + d;
    let sends = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Errors::default()));
    let tasks: Vec<_> = (0..n.max(1))
        .map(|_| {
            let (ctx, sends, errors) = (ctx.clone(), sends.clone(), errors.clone());
            tokio::spawn(async move {
                let mut streak = 0;
                while Instant::now() < deadline && streak < 50 {
                    let seq = ctx.next_seq.fetch_add(1, Ordering::Relaxed);
                    let sent = SystemTime::now();
                    let t = Instant::now();
                    let r = post(&ctx, tag, seq).await;
                    streak = if r.is_ok() { 0 } else { streak + 1 };
                    let s = Sent { seq, scheduled: sent, sent, api_ms: t.elapsed().as_secs_f64() * 1000.0, accepted: r.is_ok() };
                    record(&sends, &errors, s, r);
                }
            })
        })
        .collect();
    // The window closes at the deadline; requests still in flight then are
    // answered and counted as sent, but their receipts fall after it.
    tokio::time::sleep_until(deadline.into()).await;
    let received_at_end = sim.submits_received();
    let cpu = cpu.finish();
    let at_end = probe(js).await;
    for t in tasks {
        let _ = t.await;
    }
    finish(name, tag, start, d, sends, errors, cpu, received_at_end, at_end)
}

/// Open loop: message i is due at start + i/rate, sent then whatever
/// happened to the earlier ones (at most `max_out` outstanding).
#[allow(clippy::too_many_arguments)]
async fn open_loop(ctx: &Arc<Ctx>, sim: &CmppSimulator, js: &jetstream::Context, name: &'static str, tag: char, rate: f64, d: Duration, pids: (Option<u32>, Option<u32>)) -> Phase {
    let total = (rate * d.as_secs_f64()).round() as u64;
    let max_out = Arc::new(tokio::sync::Semaphore::new(512));
    let sends = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Errors::default()));
    let cpu = Cpu::start(pids.0, pids.1);
    let start = SystemTime::now();
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let offset = Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until((t0 + offset).into()).await;
        let Ok(permit) = max_out.clone().acquire_owned().await else { break };
        let (ctx, sends, errors) = (ctx.clone(), sends.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let seq = ctx.next_seq.fetch_add(1, Ordering::Relaxed);
            let sent = SystemTime::now();
            let t = Instant::now();
            let r = post(&ctx, tag, seq).await;
            drop(permit);
            let s = Sent { seq, scheduled: start + offset, sent, api_ms: t.elapsed().as_secs_f64() * 1000.0, accepted: r.is_ok() };
            record(&sends, &errors, s, r);
        }));
    }
    tokio::time::sleep_until((t0 + d).into()).await;
    let received_at_end = sim.submits_received();
    let cpu = cpu.finish();
    let at_end = probe(js).await;
    for t in tasks {
        let _ = t.await;
    }
    finish(name, tag, start, d, sends, errors, cpu, received_at_end, at_end)
}

#[allow(clippy::too_many_arguments)]
fn finish(name: &'static str, tag: char, start: SystemTime, window: Duration, sends: Arc<Mutex<Vec<Sent>>>, errors: Arc<Mutex<Errors>>, cpu: Value, received_at_end: usize, at_end: Value) -> Phase {
    let mut sends = std::mem::take(&mut *sends.lock().unwrap_or_else(|p| p.into_inner()));
    sends.sort_by_key(|s| s.seq);
    let er = std::mem::take(&mut *errors.lock().unwrap_or_else(|p| p.into_inner()));
    Phase { name, tag, start, window, sends, errors: er.count, first_error: er.first, cpu, received_at_end, at_end }
}

/// Waits until the simulator has received `expected` messages; gives up when
/// nothing arrived for `idle` or after `limit`. Returns the seconds waited.
async fn drain(sim: &CmppSimulator, expected: usize, idle: Duration, limit: Duration) -> (bool, f64) {
    let t0 = Instant::now();
    let (mut last, mut last_change) = (sim.submits_received(), Instant::now());
    loop {
        let n = sim.submits_received();
        if n >= expected {
            return (true, t0.elapsed().as_secs_f64());
        }
        if n != last {
            (last, last_change) = (n, Instant::now());
        }
        if last_change.elapsed() >= idle || t0.elapsed() >= limit {
            return (false, t0.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the hub's consumers on CIVICHUB_MESSAGES have nothing
/// pending and the stream has not grown for a second (status reports and
/// status changes are handled after the SMS went out). Returns the seconds
/// waited, or `None` if it was still busy after `limit`.
async fn settle(js: &jetstream::Context, limit: Duration) -> Option<f64> {
    let t0 = Instant::now();
    let mut last: Option<u64> = None;
    let mut quiet_since: Option<Instant> = None;
    while t0.elapsed() < limit {
        let idle = match js.get_stream("CIVICHUB_MESSAGES").await {
            Ok(mut s) => {
                let seq = s.info().await.ok().map(|i| i.state.last_sequence);
                let mut consumers = s.consumers();
                let mut busy = false;
                while let Some(c) = consumers.next().await {
                    match c {
                        Ok(c) => busy |= c.num_pending > 0 || c.num_ack_pending > 0,
                        Err(_) => busy = true,
                    }
                }
                let grew = seq != last;
                last = seq;
                !busy && !grew && seq.is_some()
            }
            Err(_) => false,
        };
        if idle {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(1) {
                return Some(t0.elapsed().as_secs_f64());
            }
        } else {
            quiet_since = None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// Where undelivered messages wait when a window closes: SMS send orders
/// already in JetStream (the rest of the accepted ones are still in the
/// hub's outbox), and those not yet handled by the hub's `sms-sender`.
async fn probe(js: &jetstream::Context) -> Value {
    let Ok(s) = js.get_stream("CIVICHUB_MESSAGES").await else { return Value::Null };
    let mut in_stream = None;
    if let Ok(mut info) = s.info_with_subjects("civichub.msg.sms.out").await {
        while let Some(Ok((subject, n))) = info.next().await {
            if subject == "civichub.msg.sms.out" {
                in_stream = Some(n);
            }
        }
    }
    let sender = s.consumer_info("sms-sender").await.ok();
    json!({
        "sms_out_in_stream": in_stream,
        "sender_pending": sender.as_ref().map(|c| c.num_pending),
        "sender_ack_pending": sender.as_ref().map(|c| c.num_ack_pending),
    })
}

/// Messages per subject in CivicHub's streams, and the dead letters.
async fn bus_counts(js: &jetstream::Context) -> Value {
    let mut out = serde_json::Map::new();
    if let Ok(s) = js.get_stream("CIVICHUB_MESSAGES").await
        && let Ok(mut info) = s.info_with_subjects("civichub.msg.>").await
    {
        let mut subjects = serde_json::Map::new();
        while let Some(Ok((subject, n))) = info.next().await {
            subjects.insert(subject, json!(n));
        }
        out.insert("messages".into(), Value::Object(subjects));
    }
    if let Ok(mut s) = js.get_stream("CIVICHUB_DEAD_LETTERS").await
        && let Ok(i) = s.info().await
    {
        out.insert("dead_letters".into(), json!(i.state.messages));
    }
    Value::Object(out)
}

/// Receipt times of each sequence number, and how many texts were not ours.
struct Receipts {
    by_seq: HashMap<u64, Vec<(SystemTime, bool)>>,
    unknown: usize,
}

fn receipts(sim: &CmppSimulator) -> Receipts {
    let mut by_seq: HashMap<u64, Vec<(SystemTime, bool)>> = HashMap::new();
    let mut unknown = 0;
    for r in sim.received() {
        match seq_of(&r.text) {
            Some(seq) => {
                let right = r.to == [phone(seq)];
                by_seq.entry(seq).or_default().push((r.received_at, right));
            }
            None => unknown += 1,
        }
    }
    Receipts { by_seq, unknown }
}

fn analyse(p: &Phase, r: &Receipts, drained: (bool, f64), settled: Option<f64>, accepted_before: usize) -> Value {
    let end = p.start + p.window;
    let secs = p.window.as_secs_f64();
    let accepted: Vec<&Sent> = p.sends.iter().filter(|s| s.accepted).collect();
    let (mut latencies, mut missing, mut duplicates, mut wrong_to, mut in_window, mut not_accepted_but_received) = (Vec::new(), 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut sent_by_end_not_received = 0u64;
    let mut last_receipt: Option<SystemTime> = None;
    for s in &p.sends {
        let got = r.by_seq.get(&s.seq);
        if !s.accepted {
            not_accepted_but_received += got.map_or(0, |g| g.len() as u64);
            continue;
        }
        let Some(got) = got.filter(|g| !g.is_empty()) else {
            missing += 1;
            if s.sent <= end {
                sent_by_end_not_received += 1;
            }
            continue;
        };
        duplicates += got.len() as u64 - 1;
        wrong_to += got.iter().filter(|(_, right)| !right).count() as u64;
        let first = got.iter().map(|(t, _)| *t).min().unwrap_or(s.sent);
        latencies.push(ms_between(s.scheduled, first));
        if first <= end {
            in_window += 1;
        } else if s.sent <= end {
            sent_by_end_not_received += 1;
        }
        last_receipt = Some(last_receipt.map_or(first, |l| l.max(first)));
    }
    let api: Vec<f64> = p.sends.iter().filter(|s| s.accepted).map(|s| s.api_ms).collect();
    let lag: Vec<f64> = p.sends.iter().map(|s| ms_between(s.scheduled, s.sent)).collect();
    let last_sent = p.sends.iter().map(|s| s.sent).max();
    json!({
        "phase": p.name,
        "tag": p.tag.to_string(),
        "start_unix": unix_s(p.start),
        "seconds": secs,
        "requests": p.sends.len(),
        "accepted": accepted.len(),
        "api_errors": p.errors,
        "first_error": p.first_error,
        "accepted_per_sec": accepted.len() as f64 / secs,
        "sent_per_sec": last_sent.map(|l| p.sends.len() as f64 / (ms_between(p.start, l) / 1000.0).max(secs)),
        "delivered_in_window": in_window,
        "delivered_per_sec": in_window as f64 / secs,
        "received": accepted.len() as u64 - missing,
        "missing": missing,
        "duplicates": duplicates,
        "wrong_recipient": wrong_to,
        "received_though_refused": not_accepted_but_received,
        "backlog_at_window_end": sent_by_end_not_received,
        "last_receipt_after_window_s": last_receipt.map(|l| (ms_between(end, l) / 1000.0).max(0.0)),
        // Every accepted message of the phase ÷ (window start → its last receipt).
        "completed_per_sec": last_receipt.map(|l| (accepted.len() as u64 - missing) as f64 / (ms_between(p.start, l) / 1000.0).max(secs)),
        "drained": drained.0,
        "drain_wait_s": drained.1,
        "settle_wait_s": settled,
        "latency": latency_summary(latencies),
        "api_latency": latency_summary(api),
        "send_lag": latency_summary(lag),
        "cpu": p.cpu,
        "sim_total_at_window_end": p.received_at_end,
        // Accepted (this phase and before) but not yet relayed to JetStream when the window closed.
        "in_outbox_at_window_end": p.at_end["sms_out_in_stream"].as_u64().map(|n| (accepted_before + accepted.len()) as i64 - n as i64),
        "sender_pending_at_window_end": p.at_end["sender_pending"],
        "sender_ack_pending_at_window_end": p.at_end["sender_ack_pending"],
    })
}

fn print_phase(v: &Value) {
    let f = |x: &Value| x.as_f64().map_or("-".to_owned(), |v| format!("{v:.1}"));
    println!(
        "{:<8} sent {:>6} accepted {:>6} ({:>7.1}/s)  delivered in window {:>7.1}/s  API→SMS p50 {:>7} ms p99 {:>7} ms  missing {} duplicates {}  API errors {}  backlog at end {}  CPU: hub {}%, nats-server {}%, generator+sim {}%",
        v["phase"].as_str().unwrap_or("?"),
        v["requests"],
        v["accepted"],
        v["accepted_per_sec"].as_f64().unwrap_or(0.0),
        v["delivered_per_sec"].as_f64().unwrap_or(0.0),
        f(&v["latency"]["p50_ms"]),
        f(&v["latency"]["p99_ms"]),
        v["missing"],
        v["duplicates"],
        v["api_errors"],
        v["backlog_at_window_end"],
        v["cpu"]["hub_cpu_pct"],
        v["cpu"]["nats_cpu_pct"],
        v["cpu"]["generator_cpu_pct"],
    );
    if let Some(e) = v["first_error"].as_str() {
        println!("  first error: {e}");
    }
}

fn wait_for_file(path: &str, limit: Duration) -> Res<String> {
    let t0 = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.trim().is_empty()
        {
            return Ok(text);
        }
        if t0.elapsed() > limit {
            return Err(format!("{path} did not appear within {} s", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run(o: Opts) -> Res<()> {
    let nats_url = o.req("nats")?;
    let ready = o.req("ready-file")?;
    let go_file = o.req("go-file")?;
    let nats_pid = o.pid("nats-pid")?;
    let concurrency: usize = o.num("concurrency", 16)?;
    let duration = o.secs("duration", 10.0)?;
    let warmup = o.secs("warmup", 2.0)?;
    let rate: f64 = o.num("rate", 1000.0)?;
    let drain_limit = o.secs("drain-timeout", 1800.0)?;
    if !(rate > 0.0 && rate.is_finite()) {
        return Err("--rate must be positive".into());
    }

    let sim = Sim::start()?;
    let addr = sim.sim.addr();
    std::fs::write(format!("{ready}.tmp"), addr.to_string()).map_err(|e| e.to_string())?;
    std::fs::rename(format!("{ready}.tmp"), &ready).map_err(|e| e.to_string())?;
    println!("CMPP simulator listening on {addr}");

    let go: Go = serde_json::from_str(&wait_for_file(&go_file, Duration::from_secs(1800))?).map_err(|e| format!("{go_file}: {e}"))?;
    let base = go.url.trim_end_matches('/').to_owned();
    if !(base.starts_with("http://127.0.0.1:") || base.starts_with("http://localhost:")) {
        return Err(format!("refusing non-loopback URL {base}"));
    }
    let pids = (go.pid, nats_pid);
    let sim_ref: &CmppSimulator = &sim.sim;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let result = rt.block_on(async {
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let token: Value = {
            let resp = http
                .post(format!("{base}/token"))
                .basic_auth(&go.client_id, Some(&go.client_secret))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("grant_type=client_credentials")
                .send()
                .await
                .map_err(|e| format!("token request: {e}"))?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("token request: HTTP {status}: {}", String::from_utf8_lossy(&bytes)));
            }
            serde_json::from_slice(&bytes).map_err(|e| format!("token response: {e}"))?
        };
        let access = token["access_token"].as_str().ok_or("no access_token in the token response")?;
        let ctx = Arc::new(Ctx {
            http,
            endpoint: format!("{base}/api/messages"),
            auth: format!("Bearer {access}"),
            next_seq: AtomicU64::new(1),
        });

        // The hub's CMPP client logs in on its own schedule (it retries with backoff).
        let t0 = Instant::now();
        while sim_ref.connections() == 0 {
            if t0.elapsed() > Duration::from_secs(60) {
                return Err("the hub did not log in to the CMPP simulator within 60 s".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let client = crate::nats_connect(&nats_url).await?;
        let js = jetstream::new(client.clone());

        let mut accepted_total = 0usize;
        let mut phases = Vec::new();
        let runs: [(&str, char, Option<f64>, Duration); 3] =
            [("warm-up", 'W', None, warmup), ("max", 'M', None, duration), ("rate", 'R', Some(rate), duration)];
        for (name, tag, open, d) in runs {
            if d.is_zero() {
                continue;
            }
            match open {
                None => println!("== {name}: closed loop, {concurrency} connections, {:.0} s", d.as_secs_f64()),
                Some(r) => println!("== {name}: open loop, {r} messages/s, {:.0} s", d.as_secs_f64()),
            }
            let phase = match open {
                None => closed_loop(&ctx, sim_ref, &js, name, tag, concurrency, d, pids).await,
                Some(r) => open_loop(&ctx, sim_ref, &js, name, tag, r, d, pids).await,
            };
            let accepted_before = accepted_total;
            accepted_total += phase.sends.iter().filter(|s| s.accepted).count();
            let drained = drain(sim_ref, accepted_total, Duration::from_secs(15), drain_limit).await;
            let settled = settle(&js, Duration::from_secs(60)).await;
            println!(
                "   drained: {} after {:.1} s; hub idle after {} more",
                if drained.0 { "every accepted message arrived" } else { "NOT every accepted message arrived" },
                drained.1,
                settled.map_or("(still busy after 60 s)".to_owned(), |s| format!("{s:.1} s"))
            );
            phases.push((phase, drained, settled, accepted_before));
        }
        let r = receipts(sim_ref);
        let mut out = serde_json::Map::new();
        for (phase, drained, settled, before) in &phases {
            let v = analyse(phase, &r, *drained, *settled, *before);
            print_phase(&v);
            out.insert(phase.name.to_owned(), v);
        }
        let ours: usize = phases.iter().map(|(p, _, _, _)| p.sends.len()).sum();
        let bus = bus_counts(&js).await;
        client.flush().await.ok();
        Ok::<_, String>(json!({
            "concurrency": concurrency,
            "rate": rate,
            "duration": duration.as_secs_f64(),
            "warmup": warmup.as_secs_f64(),
            "phases": Value::Object(out),
            "requests": ours,
            "accepted": accepted_total,
            "unknown_receipts": r.unknown,
            "sim": {
                "addr": addr.to_string(),
                "submits": sim_ref.submits_received(),
                "received": sim_ref.received().len(),
                "logins": sim_ref.logins(),
                "deliver_resps": sim_ref.deliver_resps_received(),
            },
            "bus": bus,
        }))
    });
    // Close the HTTP connections before the hub is stopped.
    drop(rt);
    o.write_json(&result?)?;
    // Keep the simulator up until run.sh has stopped the hub, so that the
    // hub's log does not fill with a lost CMPP link.
    if let Some(pid) = go.pid {
        let t0 = Instant::now();
        while std::path::Path::new(&format!("/proc/{pid}")).exists() && t0.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop(sim);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_carry_their_sequence_number() {
        let t = text('M', 1234);
        assert_eq!(seq_of(&t), Some(1234));
        assert!(t.chars().count() <= 70, "one UCS-2 segment");
        assert_eq!(phone(7), "13800000007");
    }
}
