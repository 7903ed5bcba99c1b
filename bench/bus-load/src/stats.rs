//! Percentiles, CPU readings and the peak-RSS sampler shared by both modes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// p50/p90/p99/max/mean of latencies in milliseconds (nearest rank).
pub fn latency_summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let pct = |p: f64| -> Option<f64> {
        let i = ((n as f64 * p).ceil() as usize).checked_sub(1)?;
        ms.get(i).copied()
    };
    json!({
        "n": n,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": ms.last(),
        "mean_ms": if n > 0 { Some(ms.iter().sum::<f64>() / n as f64) } else { None },
    })
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
    let path = pid.map_or_else(|| "/proc/self/stat".to_owned(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); index 0 here is field 3. USER_HZ is 100.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Busy and total jiffies of the whole machine (idle and iowait are not busy).
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// CPU seconds of the hub, the NATS server and this process, and the
/// machine's busy/total jiffies.
type Readings = (Option<f64>, Option<f64>, Option<f64>, Option<(u64, u64)>);

/// CPU readings at the start of a measured period: the hub's, the NATS
/// server's, this process's and the whole machine's.
pub struct Cpu {
    hub: Option<u32>,
    nats: Option<u32>,
    start: Readings,
    at: Instant,
    peak_rss: Arc<AtomicU64>,
    on: Arc<AtomicBool>,
}

impl Cpu {
    pub fn start(hub: Option<u32>, nats: Option<u32>) -> Cpu {
        let (peak_rss, on) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(true)));
        if let Some(pid) = hub {
            let (peak, on) = (peak_rss.clone(), on.clone());
            std::thread::spawn(move || {
                while on.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid).unwrap_or(0), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        Cpu {
            hub,
            nats,
            start: (hub.and_then(|p| cpu_seconds(Some(p))), nats.and_then(|p| cpu_seconds(Some(p))), cpu_seconds(None), machine_jiffies()),
            at: Instant::now(),
            peak_rss,
            on,
        }
    }

    /// CPU shares since `start` (100 = one core) and the hub's peak RSS.
    pub fn finish(self) -> Value {
        let secs = self.at.elapsed().as_secs_f64();
        let share = |a: Option<f64>, b: Option<f64>| Some(((b? - a?) / secs * 100.0).round());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let machine = self.start.3.zip(machine_jiffies()).and_then(|((b0, t0), (b1, t1))| {
            (t1 > t0).then(|| ((b1 - b0) as f64 / (t1 - t0) as f64 * cores * 100.0).round())
        });
        self.on.store(false, Ordering::Relaxed);
        let peak = self.peak_rss.load(Ordering::Relaxed);
        json!({
            "hub_cpu_pct": share(self.start.0, self.hub.and_then(|p| cpu_seconds(Some(p)))),
            "nats_cpu_pct": share(self.start.1, self.nats.and_then(|p| cpu_seconds(Some(p)))),
            "generator_cpu_pct": share(self.start.2, cpu_seconds(None)),
            "machine_cpu_pct": machine,
            "hub_peak_rss_kib": if self.hub.is_some() && peak > 0 { Some(peak) } else { None },
        })
    }
}
