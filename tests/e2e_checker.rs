//! A checker in the style of Jepsen's append-only log workload, on real processes.
//!
//! Random appenders write unique payloads to random contexts through random nodes of a
//! 3-node cluster (`ack=quorum`), watchers follow every context (reconnecting to random nodes
//! from their last sequence), while a seeded nemesis kills and restarts nodes and freezes them
//! with SIGSTOP / SIGCONT, one fault at a time, for a bounded time. Then every fault heals and
//! the checker verifies:
//! - every acknowledged append is present exactly once, at its acknowledged sequence, on every
//!   replica;
//! - no two different entries at one (context, sequence) anywhere (all replicas hold the same
//!   log, equal roots), no payload twice in a log;
//! - every watcher saw a gapless, in-order run of sequences, and the entries it saw that were
//!   acknowledged are the acknowledged ones.
//!
//! The seed comes from `LEDGER_CHECKER_SEED` (default 1); the run prints one summary row.

mod support;

use ledger_proto::context::v1 as pb;
use ledger_proto::context::v1::context_service_client::ContextServiceClient;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::cluster::{TestCluster, wait_converged};
use tonic::transport::Channel;

const NODES: usize = 3;
const CONTEXTS: usize = 4;
const APPENDERS: usize = 8;
const NEMESIS_FOR: Duration = Duration::from_secs(20);

/// xorshift64: deterministic choices from the seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn lazy_channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("url")
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(8))
        .connect_lazy()
}

#[derive(Default)]
struct History {
    /// (context, sequence) → payload of an acknowledged append.
    acked: BTreeMap<(usize, u64), String>,
    attempts: u64,
    failed: u64,
    /// Per watcher: (context, sequences and payloads seen, in order).
    watched: Vec<(usize, Vec<(u64, String)>)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_survive_kills_and_freezes_with_quorum_acks() {
    let seed: u64 = std::env::var("LEDGER_CHECKER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut cluster = TestCluster::start(30, NODES, &["--ack", "quorum"]).await;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url.clone()).collect();
    let ctx = |c: usize| format!("jepsen-{c}");
    // Contexts are created while every node is up.
    let mut c0 = ContextServiceClient::new(lazy_channel(&urls[0]));
    for c in 0..CONTEXTS {
        c0.append(pb::AppendRequest {
            context_id: ctx(c),
            key: "facts".into(),
            payload: b"genesis".to_vec(),
            ..Default::default()
        })
        .await
        .expect("create context");
    }
    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for a in 0..APPENDERS {
        let (history, stop, urls) = (history.clone(), stop.clone(), urls.clone());
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (a as u64 + 1));
        tasks.push(tokio::spawn(async move {
            let clients: Vec<_> = urls
                .iter()
                .map(|u| ContextServiceClient::new(lazy_channel(u)))
                .collect();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let c = rng.below(CONTEXTS as u64) as usize;
                let via = rng.below(NODES as u64) as usize;
                let payload = format!("a{a}-{n}");
                n += 1;
                let r = clients[via]
                    .clone()
                    .append(pb::AppendRequest {
                        context_id: format!("jepsen-{c}"),
                        key: "facts".into(),
                        payload: payload.clone().into_bytes(),
                        ..Default::default()
                    })
                    .await;
                let failed = {
                    let mut h = history.lock();
                    h.attempts += 1;
                    match r {
                        Ok(r) => {
                            let seq = r.into_inner().entry.expect("entry").sequence;
                            let prev = h.acked.insert((c, seq), payload.clone());
                            assert!(
                                prev.is_none(),
                                "sequence {seq} of context {c} acknowledged twice: {prev:?} and {payload}"
                            );
                            false
                        }
                        Err(_) => {
                            h.failed += 1;
                            true
                        }
                    }
                };
                if failed {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    // One watcher per context, reconnecting to a random node from its last sequence.
    let mut watchers = Vec::new();
    for c in 0..CONTEXTS {
        let (stop, urls) = (stop.clone(), urls.clone());
        let mut rng = Rng(seed ^ (0x5151 + c as u64));
        watchers.push(tokio::spawn(async move {
            let mut seen: Vec<(u64, String)> = Vec::new();
            let mut gaps = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let via = rng.below(NODES as u64) as usize;
                let from = seen.last().map_or(0, |(s, _)| *s);
                let mut client = ContextServiceClient::new(lazy_channel(&urls[via]));
                let Ok(resp) = client
                    .watch(pb::WatchRequest {
                        context_id: format!("jepsen-{c}"),
                        from_sequence: from,
                        ..Default::default()
                    })
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let mut stream = resp.into_inner();
                let until = Instant::now() + Duration::from_millis(1500);
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
                        Ok(Ok(Some(ev))) => {
                            if let Some(e) = ev.entry {
                                let last = seen.last().map_or(0, |(s, _)| *s);
                                if e.sequence != last + 1 {
                                    gaps.push((last, e.sequence));
                                }
                                seen.push((
                                    e.sequence,
                                    String::from_utf8_lossy(&e.payload).into_owned(),
                                ));
                            }
                        }
                        Ok(_) => break,
                        Err(_) => {}
                    }
                }
            }
            (c, seen, gaps)
        }));
    }
    // The nemesis: one fault at a time.
    let mut rng = Rng(seed.wrapping_add(0xfeed));
    let mut faults: HashMap<&'static str, u64> = HashMap::new();
    let end = Instant::now() + NEMESIS_FOR;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500 + rng.below(1000))).await;
        let victim = rng.below(NODES as u64) as usize;
        let hold = Duration::from_millis(800 + rng.below(1500));
        match rng.below(3) {
            0 => {
                *faults.entry("kill+restart").or_default() += 1;
                cluster.nodes[victim].kill();
                tokio::time::sleep(hold).await;
                cluster.nodes[victim].restart().expect("restart");
            }
            1 => {
                *faults.entry("sigstop+sigcont").or_default() += 1;
                cluster.nodes[victim].signal(libc::SIGSTOP);
                tokio::time::sleep(hold).await;
                cluster.nodes[victim].signal(libc::SIGCONT);
            }
            _ => {
                *faults.entry("none").or_default() += 1;
                tokio::time::sleep(hold).await;
            }
        }
        cluster.wait_alive(NODES).await;
    }
    // Heal, stop the workload, let everything converge.
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("appender");
    }
    let mut all_gaps = Vec::new();
    for w in watchers {
        let (c, seen, gaps) = w.await.expect("watcher");
        all_gaps.extend(gaps.into_iter().map(|g| (c, g)));
        history.lock().watched.push((c, seen));
    }
    cluster.wait_alive(NODES).await;
    let h = std::mem::take(&mut *history.lock());
    let mut final_logs: Vec<Vec<Vec<(u64, String)>>> = vec![Vec::new(); CONTEXTS];
    for (c, logs) in final_logs.iter_mut().enumerate() {
        let max_acked = h
            .acked
            .keys()
            .filter(|(cc, _)| *cc == c)
            .map(|(_, s)| *s)
            .max()
            .unwrap_or(1);
        // Converged: every replica the same size and root, at least every acknowledged entry.
        let size = converged_size(&cluster, &ctx(c), max_acked).await;
        wait_converged(&cluster.nodes[0], &ctx(c), size).await;
        for n in &cluster.nodes {
            logs.push(read_local(n, &ctx(c)).await);
        }
    }
    // 1. Every acknowledged append: present exactly once at its sequence on every replica.
    let mut lost = 0;
    for ((c, seq), payload) in &h.acked {
        for log in &final_logs[*c] {
            match log.get(*seq as usize - 1) {
                Some((s, p)) if s == seq && p == payload => {}
                other => {
                    lost += 1;
                    eprintln!("acknowledged {payload} at {c}/{seq}: found {other:?}");
                }
            }
        }
    }
    // 2. All replicas hold one log; no payload twice.
    let mut duplicated = 0;
    for logs in &final_logs {
        for log in logs {
            assert_eq!(log, &logs[0], "replicas hold different logs");
            let mut payloads = HashSet::new();
            for (i, (s, p)) in log.iter().enumerate() {
                assert_eq!(*s, i as u64 + 1, "gapless log");
                if !payloads.insert(p) {
                    duplicated += 1;
                }
            }
        }
    }
    // 3. Watchers: gapless; what they saw is the final log (no divergent entry served).
    let mut divergent_served = 0;
    let mut watched_entries = 0;
    for (c, seen) in &h.watched {
        for (s, p) in seen {
            watched_entries += 1;
            if final_logs[*c][0].get(*s as usize - 1).map(|(_, fp)| fp) != Some(p) {
                divergent_served += 1;
            }
        }
    }
    let quarantined = quarantine_count(&cluster).await;
    println!(
        "| seed | operations | acknowledged | failed/unknown | lost | duplicated | divergent served to watchers | watcher gaps | watched entries | quarantines | faults |"
    );
    println!(
        "| {seed} | {} | {} | {} | {lost} | {duplicated} | {divergent_served} | {} | {watched_entries} | {quarantined} | {faults:?} |",
        h.attempts,
        h.acked.len(),
        h.failed,
        all_gaps.len()
    );
    assert!(
        h.acked.len() > 50,
        "the workload made progress: {}",
        h.acked.len()
    );
    assert_eq!(lost, 0, "acknowledged appends lost");
    assert_eq!(duplicated, 0, "payloads stored twice");
    assert!(all_gaps.is_empty(), "watchers saw gaps: {all_gaps:?}");
    assert_eq!(
        divergent_served, 0,
        "watchers were served entries that are not in the final log"
    );
}

/// The size every replica of `ctx` ends at (waits until all agree, at least `min`).
async fn converged_size(cluster: &TestCluster, ctx: &str, min: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = cluster.status_of(0, Some(ctx)).await;
        let sizes: Vec<Option<u64>> = s["contexts"][0]["replicas"]
            .as_array()
            .map(|r| r.iter().map(|r| r["size"].as_u64()).collect())
            .unwrap_or_default();
        if let Some(Some(first)) = sizes.first()
            && *first >= min
            && sizes.iter().all(|x| *x == Some(*first))
        {
            return *first;
        }
        assert!(Instant::now() < deadline, "{ctx} does not converge: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn read_local(node: &support::Node, ctx: &str) -> Vec<(u64, String)> {
    let mut client = ContextServiceClient::new(node.channel().await);
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let mut req = tonic::Request::new(pb::GetRequest {
            context_id: ctx.into(),
            after_sequence: after,
            ..Default::default()
        });
        req.metadata_mut()
            .insert("x-ledger-forwarded", "1".parse().unwrap());
        let page = client.get(req).await.expect("get").into_inner();
        for e in page.entries {
            out.push((e.sequence, String::from_utf8_lossy(&e.payload).into_owned()));
        }
        if !page.has_more {
            return out;
        }
        after = page.next_after_sequence;
    }
}

async fn quarantine_count(cluster: &TestCluster) -> usize {
    let mut n = 0;
    for i in 0..cluster.nodes.len() {
        let s = cluster.status_of(i, Some("jepsen-0")).await;
        n += s["quarantines"].as_array().map_or(0, Vec::len);
    }
    n
}
