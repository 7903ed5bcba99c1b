//! The closed loops (async tasks for HTTP, threads for in-process and
//! PostgreSQL searches), latency percentiles, CPU and RSS readings.
//!
//! Every worker walks the same query list from its own starting point
//! (worker i of n starts at i·len/n) and wraps around, so each system sees
//! the same queries in the same proportions.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Settings {
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub max_ops: u64,
    /// The server's processes: their CPU share is summed; the RSS is
    /// sampled when there is exactly one.
    pub pids: Vec<u32>,
}

/// What one search returned.
pub struct Outcome {
    /// Matches in all, when the system counts them.
    pub total: Option<u64>,
    /// The first page.
    pub top: crate::Top,
}

/// One worker's tally.
#[derive(Default)]
pub struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    streak: u32,
    first_error: Option<String>,
    hits: u64,
    totals: u64,
    counted_totals: u64,
    zero: u64,
}

impl Tally {
    fn record(&mut self, result: Result<Outcome, String>, elapsed: Duration) {
        match result {
            Ok(o) => {
                self.latencies_us
                    .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
                self.hits += o.top.ids.len() as u64;
                if o.top.ids.is_empty() {
                    self.zero += 1;
                }
                if let Some(t) = o.total {
                    self.totals += t;
                    self.counted_totals += 1;
                }
                self.streak = 0;
            }
            Err(e) => {
                self.errors += 1;
                self.streak += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    /// A worker stops after 50 errors in a row.
    fn give_up(&self) -> bool {
        self.streak >= 50
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.hits += other.hits;
        self.totals += other.totals;
        self.counted_totals += other.counted_totals;
        self.zero += other.zero;
    }
}

/// The measured period's result.
pub struct Measured {
    tally: Tally,
    warmup_errors: u64,
    seconds: f64,
    server_cpu_pct: Option<f64>,
    generator_cpu_pct: Option<f64>,
    machine_cpu_pct: Option<f64>,
    peak_rss_kib: Option<u64>,
}

/// Samples the server's RSS every 100 ms until dropped.
struct RssSampler {
    peak: Arc<AtomicU64>,
    on: Arc<AtomicBool>,
}

impl RssSampler {
    fn start(pid: Option<u32>) -> RssSampler {
        let (peak, on) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(true)));
        if let Some(pid) = pid {
            let (peak, on) = (peak.clone(), on.clone());
            std::thread::spawn(move || {
                while on.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid).unwrap_or(0), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        RssSampler { peak, on }
    }

    fn stop(self) -> u64 {
        self.on.store(false, Ordering::Relaxed);
        self.peak.load(Ordering::Relaxed)
    }
}

/// CPU readings at the start of the measured period.
struct CpuStart {
    server: Option<f64>,
    own: Option<f64>,
    machine: Option<(u64, u64)>,
    at: Instant,
}

/// Busy and total jiffies of the whole machine, from the first line of
/// /proc/stat (idle and iowait count as not busy).
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// Summed CPU seconds of `pids` (`None` when there are none or one is gone).
fn server_cpu(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu_seconds(Some(*p))).sum()
}

fn single(pids: &[u32]) -> Option<u32> {
    if let [pid] = pids { Some(*pid) } else { None }
}

impl CpuStart {
    fn now(s: &Settings) -> CpuStart {
        CpuStart {
            server: server_cpu(&s.pids),
            own: cpu_seconds(None),
            machine: machine_jiffies(),
            at: Instant::now(),
        }
    }

    fn finish(self, s: &Settings, tally: Tally, warmup_errors: u64, rss: RssSampler) -> Measured {
        let seconds = self.at.elapsed().as_secs_f64();
        let share = |before: Option<f64>, after: Option<f64>| {
            Some(((after? - before?) / seconds * 100.0).round())
        };
        // The whole machine's busy share, in the same unit (100 % = one core).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let machine = self
            .machine
            .zip(machine_jiffies())
            .and_then(|((b0, t0), (b1, t1))| {
                (t1 > t0).then(|| ((b1 - b0) as f64 / (t1 - t0) as f64 * cores * 100.0).round())
            });
        Measured {
            machine_cpu_pct: machine,
            tally,
            warmup_errors,
            seconds,
            server_cpu_pct: share(self.server, server_cpu(&s.pids)),
            generator_cpu_pct: share(self.own, cpu_seconds(None)),
            peak_rss_kib: single(&s.pids).map(|_| rss.stop()),
        }
    }
}

fn start_of(worker: usize, workers: usize, len: usize) -> usize {
    worker * len / workers.max(1)
}

/// The closed loop on threads: `make(i)` gives worker i its state (a
/// database connection, say), then every worker repeats `op` over the
/// queries for the warm-up and then for the measured period (or until
/// `max_ops` measured operations have started).
pub fn drive_threads<S: Send, M, F>(s: &Settings, queries: &[String], make: M, op: F) -> Measured
where
    M: Fn(usize) -> Result<S, String> + Sync,
    F: Fn(&mut S, &str) -> Result<Outcome, String> + Sync,
{
    let n = s.concurrency.max(1);
    let phase = Barrier::new(n + 1);
    let measured_start: OnceLock<Instant> = OnceLock::new();
    let started = AtomicU64::new(0);
    let warmup_errors = AtomicU64::new(0);
    let (tally, cpu, rss, states) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (phase, measured_start, started, warmup_errors, make, op) = (
                    &phase,
                    &measured_start,
                    &started,
                    &warmup_errors,
                    &make,
                    &op,
                );
                scope.spawn(move || {
                    let mut tally = Tally::default();
                    let mut state = match make(i) {
                        Ok(st) => Some(st),
                        Err(e) => {
                            tally.errors += 1;
                            tally.first_error = Some(format!("setup: {e}"));
                            None
                        }
                    };
                    let mut next = start_of(i, n, queries.len());
                    phase.wait(); // everyone ready: warm-up
                    let warm_until = Instant::now() + s.warmup;
                    let mut warm = Tally::default();
                    while let Some(st) = state.as_mut() {
                        if Instant::now() >= warm_until || warm.give_up() {
                            break;
                        }
                        let q = &queries[next % queries.len()];
                        next += 1;
                        let t = Instant::now();
                        let r = op(st, q);
                        warm.record(r, t.elapsed());
                    }
                    warmup_errors.fetch_add(warm.errors, Ordering::Relaxed);
                    phase.wait(); // warm-up over
                    phase.wait(); // measured period begins
                    let until = *measured_start.get().expect("set before the barrier") + s.duration;
                    while let Some(st) = state.as_mut() {
                        if Instant::now() >= until
                            || tally.give_up()
                            || started.fetch_add(1, Ordering::Relaxed) >= s.max_ops
                        {
                            break;
                        }
                        let q = &queries[next % queries.len()];
                        next += 1;
                        let t = Instant::now();
                        let r = op(st, q);
                        tally.record(r, t.elapsed());
                    }
                    (tally, state)
                })
            })
            .collect();
        phase.wait();
        phase.wait();
        let rss = RssSampler::start(single(&s.pids));
        let cpu = CpuStart::now(s);
        measured_start.set(cpu.at).expect("set once");
        phase.wait();
        let (mut all, mut states) = (Tally::default(), Vec::new());
        for h in handles {
            let (tally, state) = h.join().expect("worker thread panicked");
            all.merge(tally);
            states.push(state);
        }
        (all, cpu, rss, states)
    });
    // The states (database connections) live until the server's CPU time
    // has been read: a closed connection's backend process is gone.
    let measured = cpu.finish(s, tally, warmup_errors.into_inner(), rss);
    drop(states);
    measured
}

/// The closed loop on async tasks (one per connection) of the current
/// runtime: `once(item)` is one operation.
pub async fn drive_async<T, F, Fut>(s: &Settings, items: &[T], once: F) -> Measured
where
    T: Clone + Send + Sync + 'static,
    F: Fn(T) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Outcome, String>> + Send + 'static,
{
    let n = s.concurrency.max(1);
    let items: Arc<Vec<T>> = Arc::new(items.to_vec());
    let positions: Vec<usize> = (0..n).map(|i| start_of(i, n, items.len())).collect();
    let (positions, warm) = phase(&items, positions, s.warmup, u64::MAX, once.clone()).await;
    let rss = RssSampler::start(single(&s.pids));
    let cpu = CpuStart::now(s);
    let (_, tally) = phase(&items, positions, s.duration, s.max_ops, once).await;
    cpu.finish(s, tally, warm.errors, rss)
}

async fn phase<T, F, Fut>(
    items: &Arc<Vec<T>>,
    positions: Vec<usize>,
    duration: Duration,
    max_ops: u64,
    once: F,
) -> (Vec<usize>, Tally)
where
    T: Clone + Send + Sync + 'static,
    F: Fn(T) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Outcome, String>> + Send + 'static,
{
    let deadline = Instant::now() + duration;
    let started = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = positions
        .into_iter()
        .map(|mut next| {
            let (items, started, once) = (items.clone(), started.clone(), once.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline
                    && !tally.give_up()
                    && started.fetch_add(1, Ordering::Relaxed) < max_ops
                {
                    let item = items[next % items.len()].clone();
                    next += 1;
                    let t = Instant::now();
                    let r = once(item).await;
                    tally.record(r, t.elapsed());
                }
                (next, tally)
            })
        })
        .collect();
    let (mut positions, mut all) = (Vec::new(), Tally::default());
    for task in tasks {
        let (next, tally) = task.await.expect("worker task panicked");
        positions.push(next);
        all.merge(tally);
    }
    (positions, all)
}

/// The JSON summary of a measured period.
pub fn summary(label: &str, s: &Settings, queries: usize, m: Measured) -> Value {
    let Measured {
        mut tally,
        warmup_errors,
        seconds,
        server_cpu_pct,
        generator_cpu_pct,
        machine_cpu_pct,
        peak_rss_kib,
    } = m;
    tally.latencies_us.sort_unstable();
    let lat = &tally.latencies_us;
    let ok = lat.len();
    let pct = |p: f64| -> Option<f64> {
        let i = ((ok as f64 * p).ceil() as usize).checked_sub(1)?;
        Some(f64::from(lat[i]) / 1000.0)
    };
    let mean = |sum: u64, n: u64| {
        if n > 0 {
            Some(sum as f64 / n as f64)
        } else {
            None
        }
    };
    json!({
        "label": label,
        "concurrency": s.concurrency,
        "queries": queries,
        "ok": ok,
        "errors": tally.errors,
        "warmup_errors": warmup_errors,
        "first_error": tally.first_error,
        "seconds": seconds,
        "ops_per_sec": ok as f64 / seconds,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": lat.last().map(|v| f64::from(*v) / 1000.0),
        "mean_ms": mean(lat.iter().map(|v| u64::from(*v)).sum(), ok as u64).map(|v| v / 1000.0),
        "mean_hits": mean(tally.hits, ok as u64),
        "mean_total": mean(tally.totals, tally.counted_totals),
        "zero_hit_share": mean(tally.zero, ok as u64),
        "server_cpu_pct": server_cpu_pct,
        "generator_cpu_pct": generator_cpu_pct,
        "machine_cpu_pct": machine_cpu_pct,
        "peak_rss_kib": peak_rss_kib,
    })
}

pub fn print_line(s: &Value) {
    let f = |k: &str, d: usize| s[k].as_f64().map_or("-".to_owned(), |v| format!("{v:.d$}"));
    println!(
        "{:<22} {:>9} ops/s  p50 {:>7} ms  p99 {:>7} ms  ok {:>7}  errors {} (warm-up {})  hits/query {}  CPU: server {}%, generator {}%, machine {}%",
        s["label"].as_str().unwrap_or("?"),
        f("ops_per_sec", 1),
        f("p50_ms", 2),
        f("p99_ms", 2),
        s["ok"],
        s["errors"],
        s["warmup_errors"],
        f("mean_hits", 1),
        f("server_cpu_pct", 0),
        f("generator_cpu_pct", 0),
        f("machine_cpu_pct", 0),
    );
    if let Some(e) = s["first_error"].as_str() {
        println!("  first error: {e}");
    }
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of a process (all threads), in seconds; this
/// process when `pid` is `None`.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); index 0 here is field 3. USER_HZ is 100.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}
