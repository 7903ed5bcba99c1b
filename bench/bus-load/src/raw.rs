//! `bus-load raw`: async-nats JetStream publishing, the bus without the hub.
//!
//! Stream `BENCH_RAW` (file storage, subject `bench.raw`, the 120 s duplicate
//! window of CivicHub's streams), recreated empty. The payload is a real
//! `civichub.msg.sms.out` envelope taken from the hub's `CIVICHUB_MESSAGES`
//! stream (the `hub` run before left plenty), else a synthetic one of the
//! same shape; every publish carries a unique `Nats-Msg-Id`, as the hub's
//! relay does. Two ways, each with a warm-up:
//!
//! - `in flight`: `--concurrency` tasks, each publishing and awaiting its
//!   ack, then the next: at most `--concurrency` unacknowledged publishes,
//!   the same number as the API run's connections;
//! - `batch` (information): one task doing what the hub's outbox relay does
//!   with a batch: publish `--batch` messages, then await their acks;
//! - `through a consumer` (information): `--concurrency` messages at a time
//!   published and taken by a durable pull consumer set up as the hub's are
//!   (explicit ack, at most four times `--concurrency` unacknowledged,
//!   batches of `--concurrency`), which acknowledges each on arrival, and
//!   only then is the next one published: the least JetStream work a message
//!   carried by the bus costs (stored, delivered, acknowledged), measured
//!   from publish to the consumer's ack, as the hub's closed loop is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::stats::{Cpu, latency_summary};
use crate::{Opts, Res};

const STREAM: &str = "BENCH_RAW";
const SUBJECT: &str = "bench.raw";

pub fn run(o: Opts) -> Res<()> {
    let url = o.req("nats")?;
    let nats_pid = o.pid("nats-pid")?;
    let concurrency: usize = o.num("concurrency", 16)?;
    let batch: usize = o.num("batch", 256)?;
    let duration = o.secs("duration", 10.0)?;
    let warmup = o.secs("warmup", 2.0)?;
    let rt = crate::runtime(2)?;
    let result = rt.block_on(async {
        let client = crate::nats_connect(&url).await?;
        let js = jetstream::new(client.clone());
        let (payload, payload_source) = envelope(&js).await;
        let _ = js.delete_stream(STREAM).await;
        js.create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECT.into()],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating {STREAM}: {e}"))?;
        println!("payload: {} bytes ({payload_source})", payload.len());
        let ids = Arc::new(AtomicU64::new(0));

        let label = format!("raw JetStream, {concurrency} in flight");
        in_flight(&js, &payload, &ids, concurrency, warmup, nats_pid).await;
        let mut flight = in_flight(&js, &payload, &ids, concurrency, duration, nats_pid).await;
        flight["label"] = json!(label);
        flight["concurrency"] = json!(concurrency);
        print_line(&flight);

        let label = format!("raw JetStream, batches of {batch}");
        batches(&js, &payload, &ids, batch, warmup, nats_pid).await;
        let mut batched = batches(&js, &payload, &ids, batch, duration, nats_pid).await;
        batched["label"] = json!(label);
        batched["batch"] = json!(batch);
        print_line(&batched);

        let label = format!("raw JetStream through a consumer, {concurrency} in flight");
        through_consumer(&js, &payload, &ids, concurrency, warmup, nats_pid, "bench-warmup").await;
        let mut consumed = through_consumer(&js, &payload, &ids, concurrency, duration, nats_pid, "bench-pipeline").await;
        consumed["label"] = json!(label);
        consumed["concurrency"] = json!(concurrency);
        print_line(&consumed);

        let stored = match js.get_stream(STREAM).await {
            Ok(mut s) => s.info().await.map(|i| i.state.messages).ok(),
            Err(_) => None,
        };
        let _ = js.delete_stream(STREAM).await;
        client.flush().await.ok();
        Ok::<_, String>(json!({
            "payload_bytes": payload.len(),
            "payload_source": payload_source,
            "published": ids.load(Ordering::Relaxed),
            "stored": stored,
            "in_flight": flight,
            "batch": batched,
            "through_consumer": consumed,
        }))
    })?;
    o.write_json(&result)
}

/// The newest `civichub.msg.sms.out` envelope, or a synthetic one.
async fn envelope(js: &jetstream::Context) -> (Bytes, &'static str) {
    if let Ok(s) = js.get_stream("CIVICHUB_MESSAGES").await
        && let Ok(m) = s.get_last_raw_message_by_subject("civichub.msg.sms.out").await
    {
        return (m.payload, "the last civichub.msg.sms.out envelope of the hub run");
    }
    let synthetic = json!({
        "id": "0192f3a4b5c6d7e8f9a0b1c2d3e4", "type": "msg.sms.out", "time": "2026-11-28T20:00:00.000Z",
        "source": "civichub/messaging", "trace_id": "0192f3a4b5c6d7e8f9a0b1c2d3e4",
        "payload": {"message_id": "0192f3a4b5c6d7e8f9a0b1c2d3e4", "channel": "sms", "address": "13800000001",
                    "text": crate::hub::text('R', 1), "template": null, "params": null}
    });
    (Bytes::from(synthetic.to_string()), "synthetic, shaped like a civichub.msg.sms.out envelope")
}

fn msg_id(ids: &AtomicU64) -> String {
    let n = ids.fetch_add(1, Ordering::Relaxed);
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{ms:012x}{n:016x}")
}

async fn publish(js: &jetstream::Context, payload: &Bytes, ids: &AtomicU64) -> Result<jetstream::context::PublishAckFuture, String> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id(ids).as_str());
    js.publish_with_headers(SUBJECT, headers, payload.clone()).await.map_err(|e| e.to_string())
}

#[derive(Default)]
struct Tally {
    latencies: Vec<f64>,
    errors: u64,
    streak: u32,
    first_error: Option<String>,
}

impl Tally {
    fn record(&mut self, r: Result<Duration, String>) {
        match r {
            Ok(d) => {
                self.latencies.push(d.as_secs_f64() * 1000.0);
                self.streak = 0;
            }
            Err(e) => {
                self.errors += 1;
                self.streak += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }
    fn merge(&mut self, o: Tally) {
        self.latencies.extend(o.latencies);
        self.errors += o.errors;
        self.first_error = self.first_error.take().or(o.first_error);
    }
    fn summary(self, seconds: f64, cpu: Value) -> Value {
        let ok = self.latencies.len();
        json!({
            "ok": ok,
            "errors": self.errors,
            "first_error": self.first_error,
            "seconds": seconds,
            "msgs_per_sec": ok as f64 / seconds,
            "latency": latency_summary(self.latencies),
            "cpu": cpu,
        })
    }
}

/// `n` tasks, each: publish, await the ack, repeat.
async fn in_flight(js: &jetstream::Context, payload: &Bytes, ids: &Arc<AtomicU64>, n: usize, d: Duration, nats: Option<u32>) -> Value {
    let cpu = Cpu::start(None, nats);
    let start = Instant::now();
    let deadline = start + d;
    let tasks: Vec<_> = (0..n.max(1))
        .map(|_| {
            let (js, payload, ids) = (js.clone(), payload.clone(), ids.clone());
            tokio::spawn(async move {
                let mut t = Tally::default();
                while Instant::now() < deadline && t.streak < 50 {
                    let at = Instant::now();
                    let r = match publish(&js, &payload, &ids).await {
                        Ok(ack) => ack.await.map(|_| at.elapsed()).map_err(|e| e.to_string()),
                        Err(e) => Err(e),
                    };
                    t.record(r);
                }
                t
            })
        })
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        if let Ok(t) = task.await {
            all.merge(t);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    all.summary(seconds, cpu.finish())
}

/// One task: publish `batch` messages, then await their acks, repeat.
async fn batches(js: &jetstream::Context, payload: &Bytes, ids: &Arc<AtomicU64>, batch: usize, d: Duration, nats: Option<u32>) -> Value {
    let cpu = Cpu::start(None, nats);
    let start = Instant::now();
    let deadline = start + d;
    let mut t = Tally::default();
    while Instant::now() < deadline && t.streak < 50 {
        let mut acks = Vec::with_capacity(batch);
        for _ in 0..batch.max(1) {
            let at = Instant::now();
            acks.push((at, publish(js, payload, ids).await));
        }
        for (at, ack) in acks {
            t.record(match ack {
                Ok(ack) => ack.await.map(|_| at.elapsed()).map_err(|e| e.to_string()),
                Err(e) => Err(e),
            });
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    t.summary(seconds, cpu.finish())
}

/// `n` publishers and a durable pull consumer named `name` that acknowledges
/// every message on arrival; a publisher publishes its next message once one
/// was consumed, so at most `n` are on their way at once. Each message
/// carries its publish time; its latency is publish → ack. Counts the
/// messages acknowledged within `d`.
async fn through_consumer(
    js: &jetstream::Context,
    payload: &Bytes,
    ids: &Arc<AtomicU64>,
    n: usize,
    d: Duration,
    nats: Option<u32>,
    name: &str,
) -> Value {
    let n = n.max(1);
    let consumer = async {
        let stream = js.get_stream(STREAM).await.map_err(|e| e.to_string())?;
        let consumer: pull::Stream = stream
            .create_consumer(pull::Config {
                durable_name: Some(name.into()),
                filter_subject: SUBJECT.into(),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::New,
                max_ack_pending: (n * 4) as i64,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?
            .stream()
            .max_messages_per_batch(n)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(consumer)
    };
    let mut messages = match consumer.await {
        Ok(m) => m,
        Err(e) => {
            let mut t = Tally::default();
            t.record(Err(format!("creating consumer {name}: {e}")));
            return t.summary(d.as_secs_f64(), Value::Null);
        }
    };
    let cpu = Cpu::start(None, nats);
    let start = Instant::now();
    let deadline = start + d;
    // One permit per message on its way: the consumer gives it back.
    let on_the_way = Arc::new(tokio::sync::Semaphore::new(n));
    let publishers: Vec<_> = (0..n)
        .map(|_| {
            let (js, payload, ids, on_the_way) = (js.clone(), payload.clone(), ids.clone(), on_the_way.clone());
            tokio::spawn(async move {
                let mut t = Tally::default();
                while Instant::now() < deadline && t.streak < 50 {
                    match tokio::time::timeout_at(deadline.into(), on_the_way.acquire()).await {
                        Ok(Ok(permit)) => permit.forget(),
                        _ => break,
                    }
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Msg-Id", msg_id(&ids).as_str());
                    headers.insert("Bench-Sent-Ns", start.elapsed().as_nanos().to_string().as_str());
                    let r = match js.publish_with_headers(SUBJECT, headers, payload.clone()).await {
                        Ok(ack) => ack.await.map(|_| Duration::ZERO).map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    // Only failures count here: the consumer times the messages.
                    if r.is_err() {
                        on_the_way.add_permits(1);
                        t.record(r);
                    }
                }
                t
            })
        })
        .collect();
    let mut consumed = Tally::default();
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline.into(), messages.next()).await {
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                consumed.record(Err(e.to_string()));
                continue;
            }
        };
        let sent = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Bench-Sent-Ns"))
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .map(Duration::from_nanos);
        let acked = message.ack().await.map_err(|e| e.to_string());
        on_the_way.add_permits(1);
        consumed.record(match (acked, sent) {
            (Ok(()), Some(sent)) => Ok(start.elapsed().saturating_sub(sent)),
            (Ok(()), None) => Err("a message without its publish time".into()),
            (Err(e), _) => Err(e),
        });
    }
    for task in publishers {
        if let Ok(t) = task.await {
            consumed.merge(t);
        }
    }
    drop(messages);
    if let Ok(stream) = js.get_stream(STREAM).await {
        let _ = stream.delete_consumer(name).await;
    }
    let seconds = start.elapsed().as_secs_f64().min(d.as_secs_f64()).max(1e-9);
    consumed.summary(seconds, cpu.finish())
}

fn print_line(s: &Value) {
    let f = |v: &Value| v.as_f64().map_or("-".to_owned(), |v| format!("{v:.2}"));
    println!(
        "{:<32} {:>9.0} msgs/s  publish→ack p50 {:>6} ms  p99 {:>6} ms  ok {}  errors {}  CPU: nats-server {}%, generator {}%",
        s["label"].as_str().unwrap_or("?"),
        s["msgs_per_sec"].as_f64().unwrap_or(0.0),
        f(&s["latency"]["p50_ms"]),
        f(&s["latency"]["p99_ms"]),
        s["ok"],
        s["errors"],
        s["cpu"]["nats_cpu_pct"],
        s["cpu"]["generator_cpu_pct"],
    );
    if let Some(e) = s["first_error"].as_str() {
        println!("  first error: {e}");
    }
}
