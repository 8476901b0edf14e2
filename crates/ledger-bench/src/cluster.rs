//! Benchmarks of a 3-node cluster on loopback (issue: the cluster), every figure next to a
//! baseline measured in the same run:
//!
//! - durable appends, 64 writers on 64 contexts, at `ack=writer` and `ack=quorum`, against one
//!   single node (target: quorum ≥ 50% of the single node's throughput);
//! - one writer's append-to-ack latency at quorum, against the single node;
//! - replication lag writer → follower watcher at a paced 10,000 appends/s;
//! - failover: SIGKILL of a context's writer to the first acknowledged append, over N runs;
//! - catch-up of a large context to an empty follower, against reading it locally.
//!
//! Each node is the real binary on its own 127.0.200.x address (writers talk to each
//! context's writer directly, as the Rust client does).

use crate::report::{header, histogram, ms, p50_p99, rate, row, us_from_ns};
use hdrhistogram::Histogram;
use ledger_launcher::{Launch, NodeProcess, cluster_node};
use ledger_proto::cluster::v1 as cpb;
use ledger_proto::cluster::v1::cluster_service_client::ClusterServiceClient;
use ledger_proto::context::v1 as pb;
use ledger_proto::context::v1::context_service_client::ContextServiceClient;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;

const NET: u8 = 200;
/// Concurrent appenders per context in the replication-lag benchmark.
const APPENDERS_PER_CONTEXT: u64 = 8;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shorter runs (fewer failovers, a 100,000-entry catch-up instead of 1,000,000).
    #[arg(long)]
    quick: bool,
    /// Only the background CPU of idle contexts (`idle`).
    #[arg(long, value_parser = ["idle"])]
    only: Option<String>,
    #[command(flatten)]
    bin: crate::node::NodeBin,
}

struct Cluster {
    nodes: Vec<NodeProcess>,
    dirs: Vec<tempfile::TempDir>,
    /// Flags every node starts with, beyond the cluster's own.
    extra: Vec<String>,
}

impl Cluster {
    async fn start(bin: &PathBuf, n: usize) -> Cluster {
        Cluster::start_with(bin, n, &[]).await
    }

    async fn start_with(bin: &PathBuf, n: usize, extra: &[&str]) -> Cluster {
        let mut c = Cluster {
            nodes: Vec::new(),
            dirs: Vec::new(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        for i in 0..n {
            c.dirs.push(tempfile::tempdir().expect("temp dir"));
            let node = NodeProcess::start(c.launch(bin, i)).unwrap_or_else(|e| panic!("{e}"));
            c.nodes.push(node);
        }
        c.wait_alive(n).await;
        c
    }

    fn launch(&self, bin: &PathBuf, i: usize) -> Launch {
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        cluster_node(bin, self.dirs[i].path(), NET, i, 3)
            .args(&["--log-level", "warn"])
            .args(&extra)
            .show_logs(true)
    }

    async fn status(&self, i: usize, ctx: &str) -> serde_json::Value {
        let mut c = ClusterServiceClient::new(channel(&self.nodes[i].url).await);
        let r = c
            .status(cpb::StatusRequest {
                context_id: ctx.to_owned(),
                limit: 0,
                members_only: false,
            })
            .await
            .expect("status")
            .into_inner();
        serde_json::from_str(&r.json).expect("json")
    }

    async fn wait_alive(&self, n: usize) {
        for i in 0..self.nodes.len() {
            loop {
                let s = self.status(i, "probe").await;
                let alive = s["members"]
                    .as_array()
                    .map_or(0, |m| m.iter().filter(|m| m["state"] == "alive").count());
                if alive >= n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Index of the node placement names writer of `ctx`.
    async fn writer(&self, ctx: &str) -> usize {
        let s = self.status(0, ctx).await;
        let id = s["contexts"][0]["writer"]["id"]
            .as_str()
            .expect("writer")
            .to_owned();
        id[1..].parse::<usize>().expect("n<i>") - 1
    }

    async fn size_on(&self, i: usize, ctx: &str) -> u64 {
        let mut c = ClusterServiceClient::new(channel(&self.nodes[i].url).await);
        c.context_state(cpb::ContextStateRequest {
            context_id: ctx.to_owned(),
            settle: false,
        })
        .await
        .map(|r| r.into_inner().size)
        .unwrap_or(0)
    }
}

async fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect")
}

fn append_request(
    ctx: &str,
    payload: Vec<u8>,
    ack: Option<&'static str>,
) -> tonic::Request<pb::AppendRequest> {
    let mut r = tonic::Request::new(pb::AppendRequest {
        context_id: ctx.to_owned(),
        key: "facts".into(),
        payload,
        ..Default::default()
    });
    if let Some(a) = ack {
        r.metadata_mut().insert(
            "x-ledger-ack",
            tonic::metadata::MetadataValue::from_static(a),
        );
    }
    r
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
    rt.block_on(async {
        let secs = if args.quick { 3 } else { 8 };
        if args.only.is_some() {
            idle_contexts(&bin, 1_000, secs + 2).await;
            return;
        }
        // Baseline: one node, same writers.
        let single = crate::node::NodeProcess::start(&bin, &[]);
        let single_ch = channel(&single.url).await;
        let single_pids = [single.pid()];
        let base = throughput(|_| Writers::Unary(single_ch.clone()), None, secs, "single", &single_pids).await;
        let single_pipe = ledger_client::LedgerClient::connect(&single.url)
            .await
            .expect("connect")
            .pipeline();
        let base_piped = throughput(
            |_| Writers::Pipelined(single_pipe.clone()),
            None,
            secs,
            "single-p",
            &single_pids,
        )
        .await;
        let base_one = one_writer(single_ch.clone(), None, secs).await;
        drop(single);

        let mut cluster = Cluster::start(&bin, 3).await;
        let pids: Vec<i32> = cluster.nodes.iter().map(|n| n.pid()).collect();
        let mut chans = Vec::new();
        let mut pipes = Vec::new();
        for n in &cluster.nodes {
            chans.push(channel(&n.url).await);
            pipes.push(
                ledger_client::LedgerClient::connect(&n.url)
                    .await
                    .expect("connect")
                    .pipeline(),
            );
        }
        // Create the 64 contexts and learn their writers.
        let mut writer_of = Vec::new();
        for w in 0..64 {
            let ctx = format!("bench-c-{w}");
            ContextServiceClient::new(chans[0].clone())
                .append(append_request(&ctx, vec![0; 16], None))
                .await
                .expect("create context");
            writer_of.push(cluster.writer(&ctx).await);
        }
        let cpu = |c: f64, base: f64| format!("CPU {c:.0} µs per append ({:.1}× one node's {base:.0} µs)", c / base);
        for (level, name) in [(Some("writer"), "writer"), (Some("quorum"), "quorum")] {
            let r = throughput(|w| Writers::Unary(chans[writer_of[w]].clone()), level, secs, "c", &pids).await;
            row(
                &format!("3 nodes, durable appends, 64 writers on 64 contexts, 256 B, unary Append, ack={name}"),
                &format!("{}, {}; {}", rate(r.0), p50_p99(&r.1), cpu(r.2, base.2)),
                if name == "quorum" {
                    "≥ 50% of one node"
                } else {
                    "—"
                },
                &format!(
                    "one node, same writers: {}, {}",
                    rate(base.0),
                    p50_p99(&base.1)
                ),
                &format!("{:.0}% of one node", 100.0 * r.0 / base.0),
            );
        }
        let r = throughput(|w| Writers::Pipelined(pipes[writer_of[w]].clone()), None, secs, "c", &pids).await;
        row(
            "3 nodes, durable appends, 64 writers on 64 contexts, 256 B, AppendPipeline (ClusterPipeline), ack=quorum",
            &format!("{}, {}; {}", rate(r.0), p50_p99(&r.1), cpu(r.2, base_piped.2)),
            "≥ 50% of one node",
            &format!(
                "one node, same writers, AppendPipeline: {}, {}",
                rate(base_piped.0),
                p50_p99(&base_piped.1)
            ),
            &format!("{:.0}% of one node", 100.0 * r.0 / base_piped.0),
        );
        let w0 = writer_of[0];
        let one = one_writer(chans[w0].clone(), Some("quorum"), secs).await;
        row(
            "3 nodes, 1 writer, append-to-ack at ack=quorum",
            &p50_p99(&one.1),
            "≤ JetStream R3's p50",
            &format!("one node, 1 writer: {}", p50_p99(&base_one.1)),
            &format!(
                "{:.2}× one node (p50)",
                one.1.value_at_quantile(0.5) as f64 / base_one.1.value_at_quantile(0.5) as f64
            ),
        );
        replication_lag(&cluster, &chans, if args.quick { 3 } else { 10 }).await;
        catch_up(
            &mut cluster,
            &bin,
            &chans,
            if args.quick { 100_000 } else { 1_000_000 },
        )
        .await;
        failover(&mut cluster, &bin, if args.quick { 3 } else { 10 }).await;
        drop(cluster);
        idle_contexts(&bin, 1_000, secs + 2).await;
    });
}

/// Background CPU of a 3-node cluster after one append to each of `contexts` contexts, once
/// nobody appends: with idle context tasks stopping after 1 s, against the same cluster keeping
/// them (`context_idle_ms = 0`, as before they stopped) and against the cluster before any
/// context existed (gossip and anti-entropy alone), measured in the same run.
async fn idle_contexts(bin: &PathBuf, contexts: usize, secs: u64) {
    let busy = |pids: Vec<i32>| async move {
        let (before, t) = (crate::report::cpu_ns(&pids), Instant::now());
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let used = crate::report::cpu_ns(&pids).saturating_sub(before);
        used as f64 / t.elapsed().as_nanos() as f64
    };
    let mut floor = 0.0;
    let mut cores = Vec::new();
    for idle_ms in ["0", "1000"] {
        let cluster = Cluster::start_with(bin, 3, &["--context-idle-ms", idle_ms]).await;
        let pids: Vec<i32> = cluster.nodes.iter().map(|n| n.pid()).collect();
        if idle_ms != "0" {
            floor = busy(pids.clone()).await;
        }
        let ch = channel(&cluster.nodes[0].url).await;
        let mut appenders = tokio::task::JoinSet::new();
        for w in 0..16 {
            let ch = ch.clone();
            appenders.spawn(async move {
                for k in (w..contexts).step_by(16) {
                    ContextServiceClient::new(ch.clone())
                        .append(append_request(&format!("idle-{k}"), vec![1; 64], None))
                        .await
                        .expect("append");
                }
            });
        }
        appenders.join_all().await;
        // Past the idle time and several poll intervals.
        tokio::time::sleep(Duration::from_secs(5)).await;
        cores.push(busy(pids).await);
    }
    row(
        &format!(
            "3 nodes idle after one append to each of {contexts} contexts, context tasks stopping after 1 s idle: CPU of the three nodes"
        ),
        &format!(
            "{:.3} cores ({:.3} before any context existed)",
            cores[1], floor
        ),
        "—",
        &format!(
            "same cluster keeping idle tasks (context_idle_ms = 0): {:.3} cores",
            cores[0]
        ),
        &format!("{:.3}×", cores[1] / cores[0].max(1e-9)),
    );
}

/// How the writers of a throughput run append.
enum Writers {
    /// Unary `Append` calls on this channel.
    Unary(Channel),
    /// Appends on this shared `AppendPipeline` stream (the node's default ack level).
    Pipelined(ledger_client::AppendPipeline),
}

/// 64 writers on 64 contexts (`bench-c-{w}` on a cluster) appending through `route(w)`;
/// returns the rate, the latencies and the CPU the processes `pids` used per append.
async fn throughput(
    route: impl Fn(usize) -> Writers,
    ack: Option<&'static str>,
    secs: u64,
    prefix: &str,
    pids: &[i32],
) -> (f64, Histogram<u64>, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..64 {
        let writers = route(w);
        let (stop, measuring) = (stop.clone(), measuring.clone());
        let ctx = if prefix == "c" {
            format!("bench-c-{w}")
        } else {
            format!("bench-{prefix}-{w}")
        };
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match &writers {
                    Writers::Unary(ch) => {
                        ContextServiceClient::new(ch.clone())
                            .append(append_request(&ctx, vec![w as u8; 256], ack))
                            .await
                            .expect("append");
                    }
                    Writers::Pipelined(p) => {
                        p.append(&ctx, "facts", vec![w as u8; 256], Default::default(), None)
                            .await
                            .expect("append");
                    }
                }
                if measuring.load(Ordering::Relaxed) {
                    h.record(t.elapsed().as_nanos() as u64).ok();
                }
            }
            h
        }));
    }
    crate::report::measure_writers(secs, &stop, &measuring, tasks, pids).await
}

/// One writer appending and waiting for each acknowledgement.
async fn one_writer(ch: Channel, ack: Option<&'static str>, secs: u64) -> (f64, Histogram<u64>) {
    let mut client = ContextServiceClient::new(ch);
    let mut h = histogram();
    let ctx = "bench-c-0";
    let end = Instant::now() + Duration::from_secs(secs);
    let mut i = 0u64;
    while Instant::now() < end {
        let t = Instant::now();
        client
            .append(append_request(ctx, vec![1; 256], ack))
            .await
            .expect("append");
        if i >= 200 {
            h.record(t.elapsed().as_nanos() as u64).ok();
        }
        i += 1;
    }
    (h.len() as f64 / secs as f64, h)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Appends paced at 10,000/s over 10 contexts (ack=writer, 8 appenders per context, each
/// paced at 125/s); a watcher of each context on a follower records when each entry arrives
/// against its append time.
async fn replication_lag(cluster: &Cluster, chans: &[Channel], secs: u64) {
    let per_ctx = 1_000u64;
    let mut watchers = Vec::new();
    let mut writers = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    for w in 0..10 {
        let ctx = format!("bench-c-{w}");
        let wi = cluster.writer(&ctx).await;
        let follower = (wi + 1) % cluster.nodes.len();
        let mut wc = ContextServiceClient::new(chans[follower].clone());
        let from = cluster.size_on(follower, &ctx).await;
        let mut stream = wc
            .watch(pb::WatchRequest {
                context_id: ctx.clone(),
                from_sequence: from,
                ..Default::default()
            })
            .await
            .expect("watch")
            .into_inner();
        let stop_w = stop.clone();
        watchers.push(tokio::spawn(async move {
            let mut h = histogram();
            while !stop_w.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
                    Ok(Ok(Some(ev))) => {
                        if let Some(e) = ev.entry {
                            h.record(now_ns().saturating_sub(e.appended_at_ns).max(1))
                                .ok();
                        }
                    }
                    Ok(_) => break,
                    Err(_) => {}
                }
            }
            h
        }));
        for _ in 0..APPENDERS_PER_CONTEXT {
            let mut client = ContextServiceClient::new(chans[wi].clone());
            let stop_a = stop.clone();
            let ctx = ctx.clone();
            writers.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_micros(
                    1_000_000 * APPENDERS_PER_CONTEXT / per_ctx,
                ));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut sent = 0u64;
                while !stop_a.load(Ordering::Relaxed) {
                    tick.tick().await;
                    if client
                        .append(append_request(&ctx, vec![2; 256], Some("writer")))
                        .await
                        .is_ok()
                    {
                        sent += 1;
                    }
                }
                sent
            }));
        }
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for w in writers {
        sent += w.await.expect("writer");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut all = histogram();
    for w in watchers {
        all.add(w.await.expect("watcher")).ok();
    }
    row(
        "replication lag, writer append → follower watcher, paced appends on 10 contexts (8 appenders each)",
        &format!(
            "{} appended; lag p50 {}, p99 {}",
            rate(sent as f64 / elapsed),
            us_from_ns(all.value_at_quantile(0.5)),
            us_from_ns(all.value_at_quantile(0.99))
        ),
        "p99 ≤ 20 ms at 10k/s",
        &format!("{} entries observed", all.len()),
        "—",
    );
}

/// Fills one context with `n` entries, wipes a follower and measures how long it takes to hold
/// them all again; baseline: reading them locally on the writer.
async fn catch_up(cluster: &mut Cluster, bin: &PathBuf, chans: &[Channel], n: u64) {
    let ctx = "bench-catch-up";
    let mut c0 = ContextServiceClient::new(chans[0].clone());
    c0.append(append_request(ctx, vec![0; 100], None))
        .await
        .expect("create");
    let wi = cluster.writer(ctx).await;
    // Fill with 16 concurrent writers on the writer at ack=writer.
    let next = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut c = ContextServiceClient::new(chans[wi].clone());
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                c.append(append_request(ctx, vec![3; 100], Some("writer")))
                    .await
                    .expect("fill");
            }
        }));
    }
    for t in tasks {
        t.await.expect("filler");
    }
    let size = cluster.size_on(wi, ctx).await;
    // Baseline: read everything on the writer.
    let t = Instant::now();
    let mut after = 0;
    let mut rc = ContextServiceClient::new(chans[wi].clone()).max_decoding_message_size(usize::MAX);
    while after < size {
        let p = rc
            .get(pb::GetRequest {
                context_id: ctx.into(),
                after_sequence: after,
                ..Default::default()
            })
            .await
            .expect("get")
            .into_inner();
        after = p.next_after_sequence;
    }
    let local = t.elapsed();
    // Wipe a follower and restart it.
    let f = (wi + 1) % cluster.nodes.len();
    cluster.nodes[f].kill();
    let dir = cluster.dirs[f].path().to_path_buf();
    std::fs::remove_dir_all(&dir).expect("wipe");
    std::fs::create_dir_all(&dir).expect("recreate");
    let t = Instant::now();
    cluster.nodes[f] = NodeProcess::start(cluster.launch(bin, f)).unwrap_or_else(|e| panic!("{e}"));
    cluster.wait_alive(cluster.nodes.len()).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    while cluster.size_on(f, ctx).await < size && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = t.elapsed();
    let got = cluster.size_on(f, ctx).await;
    row(
        &format!(
            "catch-up of a {size}-entry context (100 B) to a wiped follower, restart to last entry"
        ),
        &format!("{} ({} of {size} entries)", ms(took), got),
        "1M entries ≤ 15 s",
        &format!("reading it locally on the writer: {}", ms(local)),
        &format!(
            "{:.1}× the local read",
            took.as_secs_f64() / local.as_secs_f64()
        ),
    );
}

/// SIGKILL of a context's writer to the first acknowledged append (through a surviving node),
/// `runs` times; the killed node is restarted between runs.
async fn failover(cluster: &mut Cluster, bin: &PathBuf, runs: usize) {
    let mut times = Vec::new();
    for r in 0..runs {
        let ctx = format!("bench-failover-{r}");
        let mut c = ContextServiceClient::new(channel(&cluster.nodes[0].url).await);
        c.append(append_request(&ctx, vec![0; 64], None))
            .await
            .expect("create");
        let wi = cluster.writer(&ctx).await;
        let via = (wi + 1) % cluster.nodes.len();
        let mut c = ContextServiceClient::new(channel(&cluster.nodes[via].url).await);
        cluster.nodes[wi].kill();
        let t = Instant::now();
        loop {
            if c.append(append_request(&ctx, vec![1; 64], Some("quorum")))
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "no failover within 60 s"
            );
        }
        times.push(t.elapsed());
        cluster.nodes[wi] =
            NodeProcess::start(cluster.launch(bin, wi)).unwrap_or_else(|e| panic!("{e}"));
        cluster.wait_alive(cluster.nodes.len()).await;
    }
    times.sort();
    row(
        &format!("failover: writer SIGKILL → first acknowledged append (ack=quorum), {runs} runs"),
        &format!(
            "p50 {}, max {}",
            ms(times[times.len() / 2]),
            ms(*times.last().expect("runs"))
        ),
        "new writer within 3 s",
        "gossip: probe 100 ms, suspicion 600 ms; lease 1 s",
        "—",
    );
}
