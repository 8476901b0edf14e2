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
//! The seed comes from `LEDGER_CHECKER_SEED` (default 1); the run prints one summary row. The
//! workload and the checks are `support::checker`'s, shared with the container suite.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::checker::{Rng, Row, Workload, check, final_logs};
use support::cluster::TestCluster;

const NODES: usize = 3;
const CONTEXTS: usize = 4;
const APPENDERS: usize = 8;
const NEMESIS_FOR: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_survive_kills_and_freezes_with_quorum_acks() {
    let seed: u64 = std::env::var("LEDGER_CHECKER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut cluster = TestCluster::start(30, NODES, &["--ack", "quorum"]).await;
    let workload = Workload {
        urls: cluster.nodes.iter().map(|n| n.url.clone()).collect(),
        contexts: (0..CONTEXTS).map(|c| format!("jepsen-{c}")).collect(),
        appenders: APPENDERS,
        seed,
        timeout: Duration::from_secs(8),
    };
    // Contexts are created while every node is up.
    workload.create_contexts().await.expect("create contexts");
    let running = workload.start();
    // The nemesis: one fault at a time.
    let mut rng = Rng(seed.wrapping_add(0xfeed));
    let mut faults: HashMap<&'static str, u64> = HashMap::new();
    let end = Instant::now() + NEMESIS_FOR;
    while Instant::now() < end {
        tokio::time::sleep(rng.millis(500, 1000)).await;
        let victim = rng.below(NODES as u64) as usize;
        let hold = rng.millis(800, 1500);
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
    // Heal, stop the workload, let everything converge, check.
    let history = running.stop().await;
    cluster.wait_alive(NODES).await;
    let logs = final_logs(
        &workload.urls[0],
        &workload.contexts,
        &history,
        |r| format!("http://{}", r["addr"].as_str().unwrap_or_default()),
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let mut row = check("processes", seed, &history, &logs);
    let quarantined = quarantine_count(&cluster).await;
    row.notes = format!("quarantines {quarantined}, faults {faults:?}");
    println!("{}\n{}", Row::HEADER, row.line());
    assert!(
        row.acknowledged > 50,
        "the workload made progress: {}",
        row.acknowledged
    );
    assert!(row.passed(), "{}\n{}", row.line(), row.problems.join("\n"));
}

async fn quarantine_count(cluster: &TestCluster) -> usize {
    let mut n = 0;
    for i in 0..cluster.nodes.len() {
        let s = cluster.status_of(i, Some("jepsen-0")).await;
        n += s["quarantines"].as_array().map_or(0, Vec::len);
    }
    n
}
