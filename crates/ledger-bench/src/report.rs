//! Small helpers to time things and print Markdown rows.

use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// Runs `f` `n` times and returns the median wall time of one run.
pub fn median_of<T>(n: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut times: Vec<Duration> = (0..n.max(1))
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// A latency histogram in nanoseconds, 1 ns – 60 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

pub fn us_from_ns(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1e3)
}

pub fn rate(n: f64) -> String {
    if n >= 1e6 {
        format!("{:.2} M/s", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} k/s", n / 1e3)
    } else {
        format!("{n:.0} /s")
    }
}

pub fn header() {
    println!("| benchmark | result | target | baseline (same run) | ratio |");
    println!("|---|---|---|---|---|");
}

pub fn row(name: &str, result: &str, target: &str, baseline: &str, ratio: &str) {
    println!("| {name} | {result} | {target} | {baseline} | {ratio} |");
}

/// `p50 …, p99 …` of a latency histogram in nanoseconds.
pub fn p50_p99(h: &Histogram<u64>) -> String {
    format!(
        "p50 {}, p99 {}",
        us_from_ns(h.value_at_quantile(0.5)),
        us_from_ns(h.value_at_quantile(0.99))
    )
}

/// A xorshift generator of numbers in `1..=m`: cheap, deterministic sampling for benchmarks.
#[derive(Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.max(1))
    }

    /// A number in `1..=m`.
    pub fn next_in(&mut self, m: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        1 + self.0 % m
    }
}

/// The measurement window shared by the throughput benchmarks: lets the writer `tasks` (which
/// record into their histograms while `measuring` is set, and stop when `stop` is) warm up for
/// half a second, measures for `secs`, stops them and returns operations per second and the
/// merged latency histogram.
/// Runs writer tasks for `secs` after a 500 ms warm-up and returns their rate, their merged
/// latency histogram, and the CPU time the processes `pids` used per measured operation
/// (µs; 0 without pids): a figure that does not depend on what else the machine runs.
pub async fn measure_writers(
    secs: u64,
    stop: &std::sync::atomic::AtomicBool,
    measuring: &std::sync::atomic::AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<Histogram<u64>>>,
    pids: &[i32],
) -> (f64, Histogram<u64>, f64) {
    use std::sync::atomic::Ordering;
    tokio::time::sleep(Duration::from_millis(500)).await;
    measuring.store(true, Ordering::Relaxed);
    let cpu_before = cpu_ns(pids);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let cpu = cpu_ns(pids).saturating_sub(cpu_before);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = histogram();
    for t in tasks {
        all.add(t.await.expect("writer")).ok();
    }
    let per_op = if all.is_empty() {
        0.0
    } else {
        cpu as f64 / 1_000.0 / all.len() as f64
    };
    (all.len() as f64 / elapsed, all, per_op)
}

/// CPU time (user + system) the processes `pids` have used so far, in ns, from
/// `/proc/<pid>/stat` (clock ticks of 10 ms: measure over seconds).
pub fn cpu_ns(pids: &[i32]) -> u64 {
    let tick_ns = 1_000_000_000 / 100; // USER_HZ is 100 on Linux
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name (which may contain spaces) in parentheses.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) * tick_ns)
        })
        .sum()
}

/// The multi-threaded tokio runtime every benchmark drives its clients and nodes from.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
