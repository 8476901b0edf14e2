//! `ledger-compare`: the same workloads against Converge Ledger, PostgreSQL, Redis Streams and
//! NATS JetStream, each through its ordinary Rust client, in one run on one machine. Run it with
//! `bench/compare.sh`, which installs and starts nothing by hand: this program starts every
//! server on loopback with a temporary data dir and stops it at the end.

mod plot;
mod procs;
mod replicated;
mod systems;

use anyhow::{Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use systems::{Ledger, Nats, Postgres, Redis, System};

#[derive(Parser, Debug)]
#[command(about = "Compare Converge Ledger with PostgreSQL, Redis Streams and NATS JetStream")]
pub(crate) struct Args {
    /// A run of under three minutes (shorter phases, 100,000-entry restart).
    #[arg(long)]
    pub(crate) quick: bool,
    /// The converge-ledger binary.
    #[arg(long)]
    pub(crate) ledger_bin: PathBuf,
    /// The nats-server binary (2.10 or later can fsync every message: `sync_interval: always`).
    #[arg(long)]
    pub(crate) nats_bin: Option<PathBuf>,
    /// Only the replicated comparison: a 3-node ledger cluster against a NATS JetStream R3
    /// cluster (writes replicated.md).
    #[arg(long)]
    pub(crate) replicated: bool,
    /// Where to write results.md and the SVG plots.
    #[arg(long, default_value = "docs/compare")]
    pub(crate) out: PathBuf,
}

struct Report {
    md: String,
}

impl Report {
    fn section(&mut self, title: &str, header: &str) {
        let _ = writeln!(self.md, "\n### {title}\n\n{header}");
        let cols = header.matches('|').count() - 1;
        let _ = writeln!(self.md, "|{}", "---|".repeat(cols));
    }
    fn row(&mut self, cells: &[String]) {
        let _ = writeln!(self.md, "| {} |", cells.join(" | "));
        println!("{}", cells.join(" | "));
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram")
}

pub(crate) fn us(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.0} µs", ns as f64 / 1e3)
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

async fn wait_ready(sys: &dyn System, probe_ctx: &str) -> Result<Duration> {
    let start = Instant::now();
    loop {
        match sys.read_first(probe_ctx).await {
            Ok(_) => return Ok(start.elapsed()),
            Err(e) if start.elapsed() > Duration::from_secs(120) => {
                return Err(e.context("not ready after 120 s"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// How long a server may take to start.
pub(crate) fn start_deadline() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// Retries `f` every 50 ms until it succeeds; fails with `what` once `deadline` has passed.
pub(crate) async fn until_ok<F, Fut>(what: &str, deadline: Instant, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    while f().await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Appends per second and latency with `writers` concurrent writers over 64 contexts.
pub(crate) async fn append_run(
    sys: &dyn System,
    tag: &str,
    writers: usize,
    secs: f64,
) -> Result<(f64, Histogram<u64>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut writer = sys.writer(false).await?;
        let (stop, measuring) = (stop.clone(), measuring.clone());
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            let payload = vec![7u8; 256];
            let mut h = histogram();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // 64 writers own a context each; one writer goes round all 64.
                let ctx = if writers == 1 {
                    format!("{tag}-{}", i % 64)
                } else {
                    format!("{tag}-{w}")
                };
                i += 1;
                let t = Instant::now();
                writer.append(&ctx, &payload).await?;
                if measuring.load(Ordering::Relaxed) {
                    h.record(t.elapsed().as_nanos() as u64).ok();
                }
            }
            anyhow::Ok(h)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut all = histogram();
    for t in tasks {
        all.add(t.await??).ok();
    }
    Ok((all.len() as f64 / elapsed, all))
}

/// Append-to-subscriber latency with `subs` subscribers while one writer appends at `rate`/s.
async fn tail_run(
    sys: &dyn System,
    ctx: &str,
    subs: usize,
    rate: u64,
    secs: f64,
) -> Result<(Histogram<u64>, u64, u64)> {
    let mut handles = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..subs {
        let mut s = sys.subscriber(ctx).await?;
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            let mut h = histogram();
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(300), s.next()).await {
                    Ok(Ok(p)) if p.len() >= 8 => {
                        let sent = u64::from_be_bytes(p[..8].try_into().expect("8 bytes"));
                        h.record(now_ns().saturating_sub(sent).max(1)).ok();
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {}
                }
            }
            anyhow::Ok(h)
        }));
    }
    // Let every subscription settle (blocking reads issued, consumers created).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut w = sys.writer(true).await?;
    let n = (rate as f64 * secs) as u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for _ in 0..n {
        tick.tick().await;
        let mut payload = now_ns().to_be_bytes().to_vec();
        payload.resize(256, 1);
        w.append(ctx, &payload).await?;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = histogram();
    for h in handles {
        all.add(h.await??).ok();
    }
    let delivered = all.len();
    Ok((all, n, delivered))
}

/// One live-tail table: `subs` subscribers of one context per system, one writer at `rate`/s.
#[allow(clippy::too_many_arguments)]
async fn tail_section(
    rep: &mut Report,
    tails: &[(&dyn System, &str)],
    subs: usize,
    rate: u64,
    secs: f64,
    title: &str,
    svg: &std::path::Path,
) -> Result<()> {
    rep.section(
        &format!("{title}: append-to-subscriber latency, {subs} subscribers (each on its own connection), one writer at {rate} appends/s"),
        "| system | how | delivered | deliveries/s | p50 | p99 | ledger / this (p99; < 1 is faster) |",
    );
    let ctx = format!("tail-{subs}");
    let mut lat = Vec::new();
    for (sys, how) in tails {
        let (h, sent, delivered) = tail_run(*sys, &ctx, subs, rate, secs)
            .await
            .with_context(|| format!("{} with {subs} subscribers", sys.label()))?;
        lat.push((sys.label(), how.to_string(), h, sent * subs as u64, delivered));
    }
    let ledger_p99 = lat[0].2.value_at_quantile(0.99) as f64;
    let mut rows = Vec::new();
    for (label, how, h, expected, delivered) in &lat {
        rep.row(&[
            label.clone(),
            how.to_string(),
            format!("{delivered} of {expected}"),
            format!("{:.0}", *delivered as f64 / secs),
            us(h.value_at_quantile(0.5)),
            us(h.value_at_quantile(0.99)),
            format!("{:.2}×", ledger_p99 / h.value_at_quantile(0.99) as f64),
        ]);
        rows.push((
            format!("{label} p99"),
            h.value_at_quantile(0.99) as f64 / 1e3,
        ));
    }
    plot::bars(
        svg,
        &format!("Live tail p99, {subs} subscribers (µs, lower is better)"),
        "µs",
        &rows,
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.replicated {
        return replicated::run(&args).await;
    }
    let secs = if args.quick { 2.0 } else { 5.0 };
    let restart_n: u64 = if args.quick { 100_000 } else { 1_000_000 };
    std::fs::create_dir_all(&args.out)?;
    let mut rep = Report { md: String::new() };
    let _ = writeln!(
        rep.md,
        "Run {} on {} cores ({} mode). Every server on 127.0.0.1 with a fresh data dir; clients in one tokio process.",
        std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d %H:%M UTC")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if args.quick { "quick" } else { "full" }
    );

    // ---- start everything
    let tmp = tempfile::tempdir()?;
    let dir = |name: &str| -> Result<PathBuf> {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    };
    let (ledger_proc, ledger_url) = procs::start_ledger(&args.ledger_bin, &dir("ledger")?, "sync")?;
    let (ledger_fast_proc, ledger_fast_url) =
        procs::start_ledger(&args.ledger_bin, &dir("ledger-fast")?, "buffered")?;
    let pg_dir = dir("pg")?;
    procs::init_postgres(&pg_dir)?;
    let pg_port = procs::free_port();
    let mut pg_proc = procs::start_postgres(&pg_dir, pg_port)?;
    let redis_dir = dir("redis")?;
    let redis_port = procs::free_port();
    let mut redis_proc = procs::start_redis(&redis_dir, redis_port)?;
    let nats_bin = args
        .nats_bin
        .clone()
        .unwrap_or_else(procs::default_nats_bin);
    let (major, minor) = procs::nats_version(&nats_bin)?;
    // `sync_interval: always` exists from NATS 2.10; older servers only sync every 2 minutes.
    let nats_can_sync = (major, minor) >= (2, 10);
    let nats_dir = dir("nats")?;
    let nats_port = procs::free_port();
    let mut nats_proc = procs::start_nats(&nats_bin, &nats_dir, nats_port, nats_can_sync)?;
    let nats_fast_port = procs::free_port();
    let _nats_fast_proc = if nats_can_sync {
        Some(procs::start_nats(
            &nats_bin,
            &dir("nats-fast")?,
            nats_fast_port,
            false,
        )?)
    } else {
        None
    };

    let ledger = Ledger::new(ledger_url.clone(), "sync", true);
    let ledger_unary = Ledger::new(ledger_url, "sync", false);
    let ledger_fast = Ledger::new(ledger_fast_url.clone(), "buffered", true);
    let ledger_fast_unary = Ledger::new(ledger_fast_url, "buffered", false);
    let pg_on = Postgres {
        port: pg_port,
        synchronous_commit: true,
    };
    let pg_off = Postgres {
        port: pg_port,
        synchronous_commit: false,
    };
    let redis_always = Redis {
        port: redis_port,
        appendfsync: "always".into(),
    };
    let redis_no = Redis {
        port: redis_port,
        appendfsync: "no".into(),
    };
    let nats = Nats {
        port: nats_port,
        version: format!("{major}.{minor}"),
        sync_always: nats_can_sync,
        replicas: 1,
    };
    let nats_fast = Nats {
        port: nats_fast_port,
        version: format!("{major}.{minor}"),
        sync_always: false,
        replicas: 1,
    };
    wait_ready(&ledger, "probe").await?;
    wait_ready(&ledger_fast, "probe").await?;
    // PostgreSQL needs its table before a probe can succeed.
    until_ok("PostgreSQL did not start", start_deadline(), || {
        pg_on.create_schema()
    })
    .await?;
    wait_ready(&redis_always, "probe").await?;
    let nats_servers: Vec<&Nats> = if nats_can_sync {
        vec![&nats, &nats_fast]
    } else {
        vec![&nats]
    };
    let deadline = start_deadline();
    for n in &nats_servers {
        until_ok("NATS did not start", deadline, || n.create_stream()).await?;
    }

    // ---- 1. durable and fast appends
    rep.section(
        "1. Append, 256-byte payloads, 64 contexts",
        "| system | setting | writers | appends/s | latency p50 | latency p99 | ledger / this (throughput) |",
    );
    // The first row of each group is the one every ratio is taken against.
    let durable: Vec<&dyn System> = vec![&ledger, &ledger_unary, &pg_on, &redis_always, &nats];
    let mut fast: Vec<&dyn System> = vec![&ledger_fast, &ledger_fast_unary, &pg_off, &redis_no];
    if nats_can_sync {
        fast.push(&nats_fast);
    }
    let mut plot_rows = Vec::new();
    for (setting, group) in [("durable", &durable), ("fast / not durable", &fast)] {
        for writers in [1usize, 64] {
            let mut results = Vec::new();
            if setting == "durable" {
                redis_always.configure().await?;
            } else {
                redis_no.configure().await?;
            }
            for (i, sys) in group.iter().enumerate() {
                let tag = format!(
                    "a{}{writers}{i}",
                    if setting == "durable" { "d" } else { "f" }
                );
                let (rate, h) = append_run(*sys, &tag, writers, secs)
                    .await
                    .with_context(|| sys.label())?;
                results.push((format!("{}{}", sys.label(), sys.append_how()), rate, h));
            }
            let ledger_rate = results[0].1;
            for (label, rate, h) in &results {
                rep.row(&[
                    label.clone(),
                    setting.to_owned(),
                    writers.to_string(),
                    format!("{rate:.0}"),
                    us(h.value_at_quantile(0.5)),
                    us(h.value_at_quantile(0.99)),
                    format!("{:.2}×", ledger_rate / rate),
                ]);
                if writers == 64 {
                    plot_rows.push((format!("{label} [{setting}]"), rate / 1000.0));
                }
            }
        }
    }
    plot::bars(
        &args.out.join("append.svg"),
        "Appends/s with 64 writers over 64 contexts (thousands)",
        "k appends/s",
        &plot_rows,
    )?;
    redis_always.configure().await?;

    // ---- 2. read a 10,000-entry context from the start
    rep.section(
        "2. Read a 10,000-entry context from the start (256-byte payloads)",
        "| system | how | time (median of 7) | ledger / this (time; < 1 is faster) |",
    );
    let readers: Vec<(&dyn System, &str)> = vec![
        (&ledger, "Get (pages of up to 16 MiB)"),
        (&pg_on, "SELECT … ORDER BY seq"),
        (&redis_always, "XRANGE - +"),
        (&nats, "ordered pull consumer replay"),
    ];
    let mut times = Vec::new();
    for (sys, how) in &readers {
        sys.fill("read10k", 10_000, &[5u8; 256])
            .await
            .with_context(|| sys.label())?;
        anyhow::ensure!(
            sys.read_all("read10k").await? == 10_000,
            "{} did not return 10,000 entries",
            sys.label()
        );
        let mut samples = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            sys.read_all("read10k").await?;
            samples.push(t.elapsed());
        }
        samples.sort();
        times.push((sys.label(), how.to_string(), samples[3]));
    }
    let ledger_time = times[0].2.as_secs_f64();
    for (label, how, t) in &times {
        rep.row(&[
            label.clone(),
            how.clone(),
            format!("{:.2} ms", t.as_secs_f64() * 1e3),
            format!("{:.2}×", ledger_time / t.as_secs_f64()),
        ]);
    }
    plot::bars(
        &args.out.join("read.svg"),
        "Read 10,000 entries from the start (ms, lower is better)",
        "ms",
        &times
            .iter()
            .map(|(l, _, t)| (l.clone(), t.as_secs_f64() * 1e3))
            .collect::<Vec<_>>(),
    )?;

    // ---- 3. live tail, with 100 and with 1,000 subscribers
    let tail_rate = 200u64;
    let tails: Vec<(&dyn System, &str)> = vec![
        (&ledger, "Watch"),
        (&pg_on, "LISTEN/NOTIFY + SELECT"),
        (&redis_always, "XREAD BLOCK"),
        (&nats, "ordered push consumer"),
    ];
    for (subs, title, svg) in [
        (100usize, "3. Live tail", "tail.svg"),
        (1000, "3b. Fan-out", "tail1000.svg"),
    ] {
        tail_section(&mut rep, &tails, subs, tail_rate, secs, title, &args.out.join(svg)).await?;
    }

    // ---- 4. resume after restart
    rep.section(
        &format!("4. Resume after restart: process start to the first served read of a {restart_n}-entry context"),
        "| system | time | ledger / this (time; < 1 is faster) |",
    );
    let mut restarts = Vec::new();
    // The ledger.
    {
        ledger.fill("restart", restart_n, &[3u8; 256]).await?;
        let mut p = ledger_proc;
        p.stop();
        let t = Instant::now();
        let (_p2, url) = procs::start_ledger(&args.ledger_bin, &tmp.path().join("ledger"), "sync")?;
        let l2 = Ledger::new(url, "sync", false);
        let n = loop {
            if let Ok(n) = l2.read_first("restart").await {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        anyhow::ensure!(n == 100, "ledger returned {n} entries after restart");
        restarts.push((l2.label(), t.elapsed()));
    }
    drop(ledger_fast_proc);
    // PostgreSQL.
    {
        pg_on.fill("restart", restart_n, &[3u8; 256]).await?;
        pg_proc.stop();
        let t = Instant::now();
        let _p = procs::start_postgres(&pg_dir, pg_port)?;
        while pg_on.read_first("restart").await.ok() != Some(100) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        restarts.push((pg_on.label(), t.elapsed()));
    }
    // Redis (reloads its append-only file).
    {
        redis_no.configure().await?;
        redis_always.fill("restart", restart_n, &[3u8; 256]).await?;
        redis_always.configure().await?;
        redis_proc.stop();
        let t = Instant::now();
        let _p = procs::start_redis(&redis_dir, redis_port)?;
        while redis_always.read_first("restart").await.ok() != Some(100) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        restarts.push((redis_always.label(), t.elapsed()));
    }
    // NATS JetStream (recovers its file store).
    {
        // Filled without per-message fsync (as Redis above), then restarted as configured.
        nats_proc.stop();
        let mut filler = procs::start_nats(&nats_bin, &nats_dir, nats_port, false)?;
        until_ok("NATS did not restart", start_deadline(), || {
            nats.create_stream()
        })
        .await?;
        nats.fill("restart", restart_n, &[3u8; 256]).await?;
        filler.stop();
        let t = Instant::now();
        let _p = procs::start_nats(&nats_bin, &nats_dir, nats_port, nats_can_sync)?;
        while nats.read_first("restart").await.ok() != Some(100) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        restarts.push((nats.label(), t.elapsed()));
    }
    let ledger_restart = restarts[0].1.as_secs_f64();
    for (label, t) in &restarts {
        rep.row(&[
            label.clone(),
            format!("{:.0} ms", t.as_secs_f64() * 1e3),
            format!("{:.2}×", ledger_restart / t.as_secs_f64()),
        ]);
    }
    plot::bars(
        &args.out.join("restart.svg"),
        &format!("Restart to first read, {restart_n} entries (ms, lower is better)"),
        "ms",
        &restarts
            .iter()
            .map(|(l, t)| (l.clone(), t.as_secs_f64() * 1e3))
            .collect::<Vec<_>>(),
    )?;

    std::fs::write(args.out.join("results.md"), &rep.md)?;
    println!("\nwrote {}", args.out.join("results.md").display());
    Ok(())
}
