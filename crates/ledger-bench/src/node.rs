//! Benchmarks of a node over gRPC (issue: the ledger node): Get of 10,000 entries,
//! append-to-watcher delivery latency with 1, 100 and 1,000 watchers on one context, and a Get
//! filtered by key from a context of a million entries (the key index).
//!
//! The node is the real `converge-ledger` binary, started on a temporary data dir and port 0,
//! exactly as a user runs it.

use crate::report::{header, histogram, ms, p50_p99, rate, row, us_from_ns};
use hdrhistogram::Histogram;
use ledger_client::LedgerClient;
use ledger_core::{Metadata, NewEntry};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_stream::StreamExt;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shorter runs.
    #[arg(long)]
    quick: bool,
    #[command(flatten)]
    bin: crate::node::NodeBin,
    /// Watcher counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    watchers: Vec<usize>,
    /// Target append rate while watchers listen.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Only this benchmark: `get`, `appends`, `batch`, `watch` or `keyed`.
    #[arg(long)]
    only: Option<String>,
    /// Entries of the keyed Get benchmark's context (10 keys, each a block of a tenth).
    #[arg(long, default_value_t = 1_000_000)]
    keyed_entries: u64,
    /// Leave the keyed benchmark's data dir in storage format 1 (no key index), as builds
    /// before the index wrote it: with `--bin` of such a build this measures the keyed Get
    /// before the index; with this build the node upgrades the dir when it starts (timed).
    #[arg(long)]
    keyed_format1: bool,
}

/// A node process on a temporary data dir (the shared launcher's), killed on drop.
pub struct NodeProcess {
    _node: ledger_launcher::NodeProcess,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl NodeProcess {
    pub fn start(bin: &std::path::Path, extra: &[&str]) -> NodeProcess {
        NodeProcess::start_in(bin, tempfile::tempdir().expect("temp dir"), extra)
    }

    /// A node on `dir`, which may already hold data.
    pub fn start_in(bin: &std::path::Path, dir: tempfile::TempDir, extra: &[&str]) -> NodeProcess {
        let launch = ledger_launcher::Launch::new(bin, dir.path())
            .args(&["--log-level", "warn"])
            .args(extra)
            .show_logs(true);
        let node = ledger_launcher::NodeProcess::start(launch).unwrap_or_else(|e| panic!("{e}"));
        NodeProcess {
            url: node.url.clone(),
            _node: node,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> i32 {
        self._node.pid()
    }
}

/// The node binary a benchmark starts: `--bin`, or the one next to this benchmark.
#[derive(clap::Args, Debug)]
pub struct NodeBin {
    /// The converge-ledger binary (default: next to this one).
    #[arg(long = "bin")]
    path: Option<PathBuf>,
}

impl NodeBin {
    pub fn path(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(ledger_launcher::binary_next_to_current_exe)
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub fn run(args: Args) {
    let rt = crate::report::runtime();
    let bin = args.bin.path();
    println!(
        "machine: {} cores; node: {}; mode: {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        bin.display(),
        if args.quick { "quick" } else { "full" }
    );
    header();
    let want = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    if want("keyed") {
        rt.block_on(keyed_get(&bin, args.keyed_entries, args.keyed_format1));
    }
    if args.only.as_deref() == Some("keyed") {
        return;
    }
    rt.block_on(async {
        let node = NodeProcess::start(&bin, &[]);
        let client = LedgerClient::connect(&node.url).await.expect("connect");
        let baseline = empty_round_trip(&node.url).await;
        let base_text = format!(
            "empty gRPC round trip (health check): {}",
            p50_p99(&baseline)
        );
        if want("get") {
            get_10k(&client, &base_text, &baseline).await;
        }
        if want("appends") {
            append_64_writers(&client, if args.quick { 2 } else { 5 }).await;
        }
        if want("batch") {
            append_batches(&client, if args.quick { 2 } else { 5 }).await;
        }
        for &w in args.watchers.iter().filter(|_| want("watch")) {
            watch_latency(
                &node.url,
                &client,
                w,
                args.rate,
                if args.quick { 3 } else { 10 },
                &base_text,
                &baseline,
            )
            .await;
        }
    });
}

/// Writes a context of `n` entries of 100 B straight into a RocksDB store in `dir` (commits
/// of 10,000 entries, buffered): keys `k0` … `k9`, each one block of `n / 10` consecutive
/// entries, so a key-filtered read of `k9` would have to pass 90 % of the context without an index.
fn fill_keyed(dir: &std::path::Path, ctx: &str, n: u64, format1: bool) {
    use ledger_storage::{ContextHead, LogStore, RocksConfig, RocksStore};
    let config = RocksConfig {
        durability: ledger_storage::Durability::Buffered,
        ..RocksConfig::default()
    };
    let store = RocksStore::open(dir, &config).expect("open store");
    let mut head = ContextHead::empty(ctx);
    let block = (n / 10).max(1);
    let t0 = now_ns();
    let mut seq = 0;
    while seq < n {
        let entries = (seq + 1..=(seq + 10_000).min(n))
            .map(|s| {
                Arc::new(ledger_core::Entry::new(
                    format!("bench-{s}"),
                    format!("k{}", ((s - 1) / block).min(9)),
                    vec![(s % 251) as u8; 100],
                    s,
                    t0 + s,
                    Metadata::new(),
                    s,
                ))
            })
            .collect::<Vec<_>>();
        seq += entries.len() as u64;
        let commit = head.extend(entries).expect("extend");
        store.commit(std::slice::from_ref(&commit)).expect("commit");
        head = commit.head;
    }
    store.flush().expect("flush");
    drop(store);
    if format1 {
        RocksStore::downgrade_to_format_1_for_tests(dir).expect("downgrade to format 1");
    }
}

/// p50/p99 of `Get(ctx, key, after 0, limit 100)`, each call checked to return 100 entries of
/// `key`: 200 calls after 20 of warm-up, or as many as fit in 20 s (at least 5).
async fn get_100(client: &LedgerClient, ctx: &str, key: &str) -> Histogram<u64> {
    let mut h = histogram();
    let started = Instant::now();
    for i in 0..220 {
        let t = Instant::now();
        let page = client.get(ctx, key, 0, 100).await.expect("get");
        let took = t.elapsed();
        assert_eq!(page.entries.len(), 100);
        assert!(key.is_empty() || page.entries.iter().all(|e| e.key == key));
        if i >= 20 || started.elapsed() > Duration::from_secs(10) {
            h.record(took.as_nanos() as u64).ok();
        }
        if h.len() >= 5 && started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    h
}

/// Get of 100 entries of one key from a context of `n` entries with 10 keys, against the
/// unfiltered Get of 100 entries on the same node.
async fn keyed_get(bin: &std::path::Path, n: u64, format1: bool) {
    let ctx = "bench-keyed";
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().to_path_buf();
    let t = Instant::now();
    tokio::task::spawn_blocking(move || fill_keyed(&path, ctx, n, format1))
        .await
        .expect("fill the keyed context");
    let filled = t.elapsed();
    let t = Instant::now();
    let node = NodeProcess::start_in(bin, dir, &[]);
    let started = t.elapsed();
    let client = LedgerClient::connect(&node.url).await.expect("connect");
    let keyed = get_100(&client, ctx, "k9").await;
    let unfiltered = get_100(&client, ctx, "").await;
    row(
        &format!(
            "Get(key) of 100 entries of one key from a {n}-entry context with 10 keys (the last key's block), end to end"
        ),
        &p50_p99(&keyed),
        "≤ 2 ms",
        &format!(
            "unfiltered Get of 100 entries, same node: {}",
            p50_p99(&unfiltered)
        ),
        &format!(
            "{:.2}× unfiltered (p50)",
            keyed.value_at_quantile(0.5) as f64 / unfiltered.value_at_quantile(0.5) as f64
        ),
    );
    row(
        &format!(
            "node start to serving on a {n}-entry data dir ({})",
            if format1 {
                "storage format 1: builds the key index"
            } else {
                "current format"
            }
        ),
        &ms(started),
        "—",
        &format!("writing the data dir: {}", ms(filled)),
        "—",
    );
}

async fn empty_round_trip(url: &str) -> Histogram<u64> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut h = histogram();
    for i in 0..2000 {
        let t = Instant::now();
        health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health check");
        if i >= 200 {
            h.record(t.elapsed().as_nanos() as u64).ok();
        }
    }
    h
}

async fn get_10k(client: &LedgerClient, base_text: &str, baseline: &Histogram<u64>) {
    let ctx = "bench-get-10k";
    let mut tasks = Vec::new();
    for w in 0..50 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                c.append(
                    ctx,
                    "facts",
                    vec![(w * 7 + i) as u8; 256],
                    Metadata::new(),
                    None,
                )
                .await
                .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("filler");
    }
    let mut h = histogram();
    for i in 0..25 {
        let t = Instant::now();
        let page = client.get(ctx, "", 0, 0).await.expect("get");
        assert_eq!(page.entries.len(), 10_000);
        assert!(!page.has_more);
        if i >= 5 {
            h.record(t.elapsed().as_nanos() as u64).ok();
        }
    }
    let p50 = h.value_at_quantile(0.5);
    row(
        "Get of 10,000 entries of 256 B from one context, end to end",
        &format!(
            "p50 {}, p99 {}",
            ms(Duration::from_nanos(p50)),
            ms(Duration::from_nanos(h.value_at_quantile(0.99)))
        ),
        "≤ 20 ms",
        base_text,
        &format!(
            "{:.0}× empty round trip (p50)",
            p50 as f64 / baseline.value_at_quantile(0.5) as f64
        ),
    );
}

/// Durable appends with 64 concurrent writers (one context each), unary calls against the
/// pipelined stream, on the same node and connection.
async fn append_64_writers(client: &LedgerClient, secs: u64) {
    let unary = append_rate(client, false, secs).await;
    let piped = append_rate(client, true, secs).await;
    row(
        "durable appends, 64 writers on 64 contexts, 256 B, one connection: AppendPipeline stream",
        &format!("{}, {}", rate(piped.0), p50_p99(&piped.1)),
        "—",
        &format!(
            "unary Append, same writers: {}, {}",
            rate(unary.0),
            p50_p99(&unary.1)
        ),
        &format!("{:.2}× unary (throughput)", piped.0 / unary.0),
    );
}

/// Durable AppendBatch calls of 100 entries over gRPC, against raw RocksDB synced batches of
/// 100 measured in the same run.
async fn append_batches(client: &LedgerClient, secs: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let raw = crate::embedded::raw_rocks_batches(dir.path(), true, secs as f64);
    drop(dir);
    let baseline = format!("raw RocksDB sync, batches of 100: {}", rate(raw));
    for writers in [1usize, 8] {
        let (r, h) = batch_rate(client, writers, 100, secs).await;
        row(
            &format!(
                "durable AppendBatch, {writers} writer(s) on their own contexts, batches of 100 × 256 B (entries/s; latency per batch)"
            ),
            &format!("{}, {}", rate(r), p50_p99(&h)),
            "≥ 200k/s",
            &baseline,
            &format!("{:.2}× raw", r / raw),
        );
    }
}

/// Entries per second and per-batch latency of `writers` unary AppendBatch callers.
async fn batch_rate(
    client: &LedgerClient,
    writers: usize,
    batch: usize,
    secs: u64,
) -> (f64, Histogram<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let c = client.clone();
        let (stop, measuring) = (stop.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            let ctx = format!("bench-batch-{writers}-{w}");
            let item = NewEntry::new("", "facts", vec![w as u8; 256], Metadata::new(), None);
            let mut h = histogram();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                c.append_batch(&ctx, vec![item.clone(); batch])
                    .await
                    .expect("append batch");
                if measuring.load(Ordering::Relaxed) {
                    h.record(t.elapsed().as_nanos() as u64).ok();
                }
            }
            h
        }));
    }
    let (calls, h, _) = crate::report::measure_writers(secs, &stop, &measuring, tasks, &[]).await;
    (calls * batch as f64, h)
}

/// Appends per second and latency of 64 writers for `secs` (after half a second of warm-up).
async fn append_rate(client: &LedgerClient, pipelined: bool, secs: u64) -> (f64, Histogram<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let pipeline = client.pipeline();
    let mut tasks = Vec::new();
    for w in 0..64 {
        let (c, p) = (client.clone(), pipeline.clone());
        let (stop, measuring) = (stop.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            let ctx = format!("bench-append-{}-{w}", if pipelined { "p" } else { "u" });
            let mut h = histogram();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let payload = vec![w as u8; 256];
                if pipelined {
                    p.append(&ctx, "facts", payload, Metadata::new(), None)
                        .await
                } else {
                    c.append(&ctx, "facts", payload, Metadata::new(), None)
                        .await
                }
                .expect("append");
                if measuring.load(Ordering::Relaxed) {
                    h.record(t.elapsed().as_nanos() as u64).ok();
                }
            }
            h
        }));
    }
    let (r, h, _) = crate::report::measure_writers(secs, &stop, &measuring, tasks, &[]).await;
    (r, h)
}

async fn watch_latency(
    url: &str,
    client: &LedgerClient,
    watchers: usize,
    target_rate: u64,
    secs: u64,
    base_text: &str,
    baseline: &Histogram<u64>,
) {
    let ctx = format!("bench-watch-{watchers}");
    let hist = Arc::new(parking_lot_free::Mutex::new(histogram()));
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Watchers spread over connections of at most 100 streams each, as separate observers.
    let mut watcher_tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(watchers.max(1));
    let mut conn: Option<LedgerClient> = None;
    for i in 0..watchers {
        if i % 100 == 0 {
            conn = Some(LedgerClient::connect(url).await.expect("connect watcher"));
        }
        let c = conn.clone().expect("connection");
        let (ctx, hist, delivered, stop, ready) = (
            ctx.clone(),
            hist.clone(),
            delivered.clone(),
            stop.clone(),
            ready_tx.clone(),
        );
        watcher_tasks.push(tokio::spawn(async move {
            let mut s = c.watch(&ctx, "", 0).await.expect("watch");
            ready.send(()).await.expect("ready");
            let mut local = histogram();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(200), s.next()).await {
                    Ok(Some(Ok(e))) => {
                        local
                            .record(now_ns().saturating_sub(e.appended_at_ns).max(1))
                            .ok();
                        n += 1;
                    }
                    Ok(_) => break,
                    Err(_) => {}
                }
            }
            delivered.fetch_add(n, Ordering::Relaxed);
            hist.lock().add(&local).ok();
        }));
    }
    for _ in 0..watchers {
        ready_rx.recv().await.expect("watcher ready");
    }
    // Writers pace appends to the target rate.
    let appended = Arc::new(AtomicU64::new(0));
    let writers = 32u64;
    let per_writer = Duration::from_secs_f64(writers as f64 / target_rate as f64);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut writer_tasks = Vec::new();
    for _ in 0..writers {
        let (c, ctx, appended) = (client.clone(), ctx.clone(), appended.clone());
        writer_tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(per_writer);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while Instant::now() < deadline {
                tick.tick().await;
                c.append(&ctx, "traces", vec![1u8; 256], Metadata::new(), None)
                    .await
                    .expect("append");
                appended.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    for t in writer_tasks {
        t.await.expect("writer");
    }
    let elapsed = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in watcher_tasks {
        t.await.expect("watcher");
    }
    let h = hist.lock();
    let n = appended.load(Ordering::Relaxed);
    let d = delivered.load(Ordering::Relaxed);
    let p99 = h.value_at_quantile(0.99);
    row(
        &format!(
            "append → watcher delivery, {watchers} watcher(s) on one context; writer {} (target {}), {} deliveries ({}); {} of {} expected",
            rate(n as f64 / elapsed),
            rate(target_rate as f64),
            d,
            rate(d as f64 / elapsed),
            d,
            n * watchers as u64
        ),
        &format!(
            "p50 {}, p99 {}",
            us_from_ns(h.value_at_quantile(0.5)),
            us_from_ns(p99)
        ),
        if watchers == 1000 {
            "p99 ≤ 5 ms"
        } else {
            "—"
        },
        base_text,
        &format!(
            "{:.0}× empty round trip (p99)",
            p99 as f64 / baseline.value_at_quantile(0.99) as f64
        ),
    );
}

/// A tiny mutex wrapper so this file needs no extra dependency.
mod parking_lot_free {
    pub struct Mutex<T>(std::sync::Mutex<T>);
    impl<T> Mutex<T> {
        pub fn new(v: T) -> Self {
            Mutex(std::sync::Mutex::new(v))
        }
        pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }
}
