//! Benchmarks of the embedded ledger (issue: core and durable store).

use crate::report::{header, histogram, median_of, ms, p50_p99, rate, row};
use ledger_core::merkle::root_from_leaves;
use ledger_core::{Entry, Hash, Metadata, NewEntry, hash::sha256, snapshot};
use ledger_embedded::{Durability, Ledger, LedgerConfig, RocksConfig};
use ledger_storage::{ContextHead, LogStore, RocksStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shorter runs and smaller data sets (about a minute in all).
    #[arg(long)]
    quick: bool,
    /// Run only the benchmarks whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Directory for temporary databases (default: the system temp dir).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

struct Ctx {
    quick: bool,
    only: Option<String>,
    dir: Option<std::path::PathBuf>,
}

impl Ctx {
    fn wants(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|o| name.contains(o))
    }
    fn tempdir(&self) -> tempfile::TempDir {
        match &self.dir {
            Some(d) => tempfile::tempdir_in(d).expect("temp dir"),
            None => tempfile::tempdir().expect("temp dir"),
        }
    }
    fn secs(&self) -> f64 {
        if self.quick { 2.0 } else { 5.0 }
    }
}

pub fn run(args: Args) {
    let ctx = Ctx {
        quick: args.quick,
        only: args.only,
        dir: args.dir,
    };
    let rt = crate::report::runtime();
    println!(
        "machine: {} cores; mode: {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if ctx.quick { "quick" } else { "full" }
    );
    header();
    rt.block_on(appends(&ctx));
    rt.block_on(batch_appends(&ctx));
    if ctx.wants("root") {
        root_recomputation();
    }
    if ctx.wants("proof") {
        rt.block_on(proofs(&ctx));
    }
    if ctx.wants("snapshot") {
        rt.block_on(snapshots(&ctx));
    }
    if ctx.wants("reopen") {
        rt.block_on(reopen(&ctx));
    }
}

fn entry(seq: u64, payload: &[u8]) -> Entry {
    Entry::new(
        format!("0190c2a0-0000-7000-8000-{seq:012}"),
        "facts".into(),
        payload.to_vec(),
        seq,
        1_700_000_000_000_000_000 + seq,
        Metadata::new(),
        seq,
    )
}

/// Raw RocksDB: batches of 100 puts of 256-byte values, one thread, for `secs`.
fn raw_rocks_puts_per_sec(ctx: &Ctx, sync: bool) -> f64 {
    let dir = ctx.tempdir();
    raw_rocks_batches(dir.path(), sync, ctx.secs())
}

/// Raw RocksDB in `dir`: batches of 100 puts of 256-byte values, one thread, for `secs`;
/// puts per second.
pub(crate) fn raw_rocks_batches(dir: &std::path::Path, sync: bool, secs: f64) -> f64 {
    let db = rocksdb::DB::open_default(dir).expect("open raw RocksDB");
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(sync);
    let value = [7u8; 256];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        let mut b = rocksdb::WriteBatch::default();
        for _ in 0..100 {
            b.put(n.to_be_bytes(), value);
            n += 1;
        }
        db.write_opt(b, &wo).expect("raw write");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Appends per second, and the mean number of appends per store commit and per fsync.
async fn append_rate(
    ctx: &Ctx,
    durability: Durability,
    contexts: usize,
    per_context: usize,
) -> (f64, f64, f64) {
    let dir = ctx.tempdir();
    let config = LedgerConfig {
        rocks: RocksConfig {
            durability,
            ..RocksConfig::default()
        },
        ..LedgerConfig::default()
    };
    let ledger = Ledger::open(dir.path(), config).expect("open ledger");
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..contexts {
        for _ in 0..per_context {
            let (ledger, stop, count, measuring) = (
                ledger.clone(),
                stop.clone(),
                count.clone(),
                measuring.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let ctx_id = format!("bench-{c}");
                let payload = vec![42u8; 256];
                while !stop.load(Ordering::Relaxed) {
                    ledger
                        .append(&ctx_id, "facts", payload.clone(), Metadata::new(), None)
                        .await
                        .expect("append");
                    if measuring.load(Ordering::Relaxed) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    measuring.store(true, Ordering::Relaxed);
    let stats = ledger.stats();
    let (c0, e0, s0) = (
        stats.commits.load(Ordering::Relaxed),
        stats.entries.load(Ordering::Relaxed),
        stats.syncs.load(Ordering::Relaxed),
    );
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(ctx.secs())).await;
    let n = count.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let (c1, e1, s1) = (
        stats.commits.load(Ordering::Relaxed),
        stats.entries.load(Ordering::Relaxed),
        stats.syncs.load(Ordering::Relaxed),
    );
    let group = (e1 - e0) as f64 / (c1 - c0).max(1) as f64;
    let per_sync = (e1 - e0) as f64 / (s1 - s0).max(1) as f64;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("appender");
    }
    ledger.close().await;
    (n as f64 / elapsed, group, per_sync)
}

async fn appends(ctx: &Ctx) {
    for (durability, sync) in [(Durability::Sync, true), (Durability::Buffered, false)] {
        let rows = [(1usize, 1usize), (64, 1), (1, 64)];
        if !rows.iter().any(|(c, p)| {
            ctx.wants(&format!(
                "append 256 B, {durability}, {c} context(s) × {p} writer(s)"
            ))
        }) {
            continue;
        }
        let raw = raw_rocks_puts_per_sec(ctx, sync);
        let baseline = format!("raw RocksDB {durability}, batches of 100: {}", rate(raw));
        for (contexts, per, target) in [
            (1usize, 1usize, "—"),
            (64, 1, if sync { "≥ 100k/s" } else { "≥ 300k/s" }),
            (1, 64, "—"),
        ] {
            let name =
                format!("append 256 B, {durability}, {contexts} context(s) × {per} writer(s)");
            if !ctx.wants(&name) {
                continue;
            }
            let (r, group, per_sync) = append_rate(ctx, durability, contexts, per).await;
            let per_sync = if sync {
                format!(", {per_sync:.1} per fsync")
            } else {
                String::new()
            };
            row(
                &format!("{name} (mean {group:.1} appends per commit{per_sync})"),
                &rate(r),
                target,
                &baseline,
                &format!("{:.2}× raw", r / raw),
            );
        }
    }
}

/// Entries per second appended with `append_batch` in batches of `batch` by `writers` tasks,
/// each to its own context.
async fn batch_rate(ctx: &Ctx, durability: Durability, writers: usize, batch: usize) -> f64 {
    let dir = ctx.tempdir();
    let config = LedgerConfig {
        rocks: RocksConfig {
            durability,
            ..RocksConfig::default()
        },
        ..LedgerConfig::default()
    };
    let ledger = Ledger::open(dir.path(), config).expect("open ledger");
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (ledger, stop, count, measuring) = (
            ledger.clone(),
            stop.clone(),
            count.clone(),
            measuring.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let ctx_id = format!("bench-batch-{w}");
            let item = NewEntry::new("", "facts", vec![42u8; 256], Metadata::new(), None);
            while !stop.load(Ordering::Relaxed) {
                let items = vec![item.clone(); batch];
                ledger
                    .append_batch(&ctx_id, items)
                    .await
                    .expect("append batch");
                if measuring.load(Ordering::Relaxed) {
                    count.fetch_add(batch as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(ctx.secs())).await;
    let n = count.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("batch appender");
    }
    ledger.close().await;
    n as f64 / elapsed
}

/// Batch appends (`Ledger::append_batch`), against raw RocksDB batches of 100 in the same run.
async fn batch_appends(ctx: &Ctx) {
    for (durability, sync, target) in [
        (Durability::Buffered, false, "≥ 300k/s"),
        (Durability::Sync, true, "—"),
    ] {
        let rows = [(1usize, 100usize), (4, 100), (1, 1000)];
        let name = |w: usize, b: usize| {
            format!("append_batch 256 B, {durability}, {w} writer(s) × batches of {b}")
        };
        if !rows.iter().any(|(w, b)| ctx.wants(&name(*w, *b))) {
            continue;
        }
        let raw = raw_rocks_puts_per_sec(ctx, sync);
        let baseline = format!("raw RocksDB {durability}, batches of 100: {}", rate(raw));
        for (w, b) in rows {
            if !ctx.wants(&name(w, b)) {
                continue;
            }
            let r = batch_rate(ctx, durability, w, b).await;
            row(
                &format!("{} (entries/s)", name(w, b)),
                &rate(r),
                target,
                &baseline,
                &format!("{:.2}× raw", r / raw),
            );
        }
    }
}

fn root_recomputation() {
    let payload = [9u8; 256];
    let entries: Vec<Entry> = (1..=10_000).map(|s| entry(s, &payload)).collect();
    let inputs: Vec<Vec<u8>> = entries
        .iter()
        .map(ledger_core::encoding::encode_leaf_input)
        .collect();
    let all: Vec<u8> = inputs.concat();
    let base = median_of(21, || sha256(&all));
    let full = median_of(21, || {
        let leaves: Vec<Hash> = entries.iter().map(Entry::compute_content_hash).collect();
        root_from_leaves(&leaves)
    });
    let leaves: Vec<Hash> = entries.iter().map(|e| e.content_hash).collect();
    let tree_only = median_of(21, || root_from_leaves(&leaves));
    let baseline = format!(
        "SHA-256 over the same {:.1} MB: {}",
        all.len() as f64 / 1e6,
        ms(base)
    );
    row(
        "root recomputation, 10,000 entries (re-encode + leaf hashes + tree)",
        &ms(full),
        "≤ 5 ms",
        &baseline,
        &format!(
            "{:.2}× SHA-256 pass",
            full.as_secs_f64() / base.as_secs_f64()
        ),
    );
    row(
        "root from 10,000 stored leaf hashes (tree only)",
        &ms(tree_only),
        "—",
        &baseline,
        &format!("{:.2}×", tree_only.as_secs_f64() / base.as_secs_f64()),
    );
}

/// Fills `context_id` in `store` with `n` entries of `payload_len` bytes, in commits of 10k.
fn fill(store: &dyn LogStore, context_id: &str, n: u64, payload_len: usize) -> ContextHead {
    let payload = vec![5u8; payload_len];
    let mut head = store
        .head(context_id)
        .expect("head")
        .unwrap_or_else(|| ContextHead::empty(context_id));
    while head.size() < n {
        let from = head.size() + 1;
        let to = (from + 9_999).min(n);
        let entries: Vec<Arc<Entry>> = (from..=to).map(|s| Arc::new(entry(s, &payload))).collect();
        let commit = head.extend(entries).expect("extend");
        store.commit(std::slice::from_ref(&commit)).expect("commit");
        head = commit.head;
    }
    head
}

fn buffered() -> RocksConfig {
    RocksConfig {
        durability: Durability::Buffered,
        ..RocksConfig::default()
    }
}

async fn proofs(ctx: &Ctx) {
    let n: u64 = if ctx.quick { 200_000 } else { 1_000_000 };
    let dir = ctx.tempdir();
    let store = Arc::new(RocksStore::open(dir.path(), &buffered()).expect("open"));
    let t = Instant::now();
    fill(&*store, "big", n, 64);
    let fill_time = t.elapsed();
    let ledger = Ledger::with_store(store.clone(), LedgerConfig::default());
    let samples = if ctx.quick { 2_000 } else { 10_000 };
    let mut rng = crate::report::XorShift::new(0x2545_f491_4f6c_dd1d);
    let mut next = move |m: u64| rng.next_in(m);
    // Baseline: one point read of a random leaf hash from the same store.
    let mut base = histogram();
    for _ in 0..samples {
        let seq = next(n);
        let t = Instant::now();
        std::hint::black_box(
            store
                .nodes("big", &[ledger_core::TreeNodeId::leaf(seq - 1)])
                .expect("node"),
        );
        base.record(t.elapsed().as_nanos() as u64).ok();
    }
    let mut direct = histogram();
    let mut direct_cons = histogram();
    let mut api = histogram();
    let mut cons = histogram();
    for _ in 0..samples {
        let seq = next(n);
        let plan = ledger_core::merkle::inclusion_plan(seq - 1, n).expect("plan");
        let t = Instant::now();
        let hashes = store.nodes("big", plan.nodes()).expect("nodes");
        std::hint::black_box(plan.assemble(&hashes));
        direct.record(t.elapsed().as_nanos() as u64).ok();
        let t = Instant::now();
        std::hint::black_box(ledger.inclusion_proof("big", seq, 0).await.expect("proof"));
        api.record(t.elapsed().as_nanos() as u64).ok();
        let first = next(n);
        let plan = ledger_core::merkle::consistency_plan(first, n).expect("plan");
        let t = Instant::now();
        let hashes = store.nodes("big", plan.nodes()).expect("nodes");
        std::hint::black_box(plan.assemble(&hashes));
        direct_cons.record(t.elapsed().as_nanos() as u64).ok();
        let t = Instant::now();
        std::hint::black_box(
            ledger
                .consistency_proof("big", first, 0)
                .await
                .expect("proof"),
        );
        cons.record(t.elapsed().as_nanos() as u64).ok();
    }
    let baseline = format!("one RocksDB point read: {}", p50_p99(&base));
    let ratio = |h: &hdrhistogram::Histogram<u64>| {
        format!(
            "{:.1}× point read (p50)",
            h.value_at_quantile(0.5) as f64 / base.value_at_quantile(0.5) as f64
        )
    };
    let label = format!("{n}-entry context (filled in {})", ms(fill_time));
    for (name, h) in [
        (
            format!("inclusion proof from stored subtrees, {label}"),
            &direct,
        ),
        (
            format!("consistency proof from stored subtrees, {label}"),
            &direct_cons,
        ),
        (
            format!("inclusion proof via embedded API (+ size read), {label}"),
            &api,
        ),
        (
            format!("consistency proof + both roots via embedded API, {label}"),
            &cons,
        ),
    ] {
        row(
            &name,
            &crate::report::p50_p99(h),
            "≤ 50 µs",
            &baseline,
            &ratio(h),
        );
    }
    ledger.close().await;
}

async fn snapshots(ctx: &Ctx) {
    let n = 100_000u64;
    let dir = ctx.tempdir();
    let store = Arc::new(RocksStore::open(dir.path(), &buffered()).expect("open"));
    fill(&*store, "snap", n, 256);
    let ledger = Ledger::with_store(store, LedgerConfig::default());
    let t = Instant::now();
    let blob = ledger.snapshot("snap").await.expect("snapshot");
    let encode = t.elapsed();
    let mut encode_best = encode;
    for _ in 0..2 {
        let t = Instant::now();
        std::hint::black_box(ledger.snapshot("snap").await.expect("snapshot"));
        encode_best = encode_best.min(t.elapsed());
    }
    let decode = median_of(3, || snapshot::decode(&blob.bytes).expect("decode"));
    let base = median_of(5, || sha256(&blob.bytes));
    let baseline = format!(
        "SHA-256 over the {:.1} MB blob: {}",
        blob.bytes.len() as f64 / 1e6,
        ms(base)
    );
    row(
        "snapshot encode, 100,000 entries of 256 B (read from RocksDB + encode)",
        &ms(encode_best),
        "≤ 300 ms",
        &baseline,
        &format!("{:.1}×", encode_best.as_secs_f64() / base.as_secs_f64()),
    );
    row(
        "snapshot decode + full verification, 100,000 entries",
        &ms(decode),
        "≤ 300 ms",
        &baseline,
        &format!("{:.1}×", decode.as_secs_f64() / base.as_secs_f64()),
    );
    ledger.close().await;
}

async fn reopen(ctx: &Ctx) {
    let total: u64 = if ctx.quick { 1_000_000 } else { 10_000_000 };
    let contexts = 100u64;
    let dir = ctx.tempdir();
    let t = Instant::now();
    {
        let store = RocksStore::open(dir.path(), &buffered()).expect("open");
        for c in 0..contexts {
            fill(&store, &format!("ctx-{c}"), total / contexts, 256);
        }
        // A clean shutdown, as `Ledger::close` does it.
        store.flush().expect("flush");
    }
    let fill_time = t.elapsed();
    let first_append = |path: std::path::PathBuf, ctx_id: &'static str| async move {
        let t = Instant::now();
        let ledger = Ledger::open(&path, LedgerConfig::default()).expect("reopen");
        let e = ledger
            .append(ctx_id, "facts", vec![1; 256], Metadata::new(), None)
            .await
            .expect("first append");
        let d = t.elapsed();
        ledger.close().await;
        (d, e.sequence)
    };
    let empty = ctx.tempdir();
    let (base, _) = first_append(empty.path().to_path_buf(), "ctx-0").await;
    let (d, seq) = first_append(dir.path().to_path_buf(), "ctx-7").await;
    assert_eq!(seq, total / contexts + 1);
    row(
        &format!(
            "reopen a store of {total} entries ({contexts} contexts, filled in {}) until the first append is accepted",
            ms(fill_time)
        ),
        &ms(d),
        "≤ 1 s",
        &format!("open an empty store + first append: {}", ms(base)),
        &format!("{:.1}×", d.as_secs_f64() / base.as_secs_f64()),
    );
}
