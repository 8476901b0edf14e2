//! Figures for docs/BENCHMARKS.md: the demo engine persisting every fact to a 3-node cluster
//! (streaming bridge + save) against the same run in memory, and the resume of a large context
//! against a cold run, as ratios from one run.
//!
//! ```text
//! LEDGER_BIN=…/converge-ledger converge_bench [--steps 2000] [--resume-facts 100000]
//! ```
//! Starts its own cluster on 127.0.96.10–12 (stopped at exit) and prints one JSON object.

use converge_core::ContextState;
use ledger_converge::{BridgeOptions, LedgerContextStore, StoreOptions, demo, mapping};
use ledger_launcher::{NodeProcess, cluster_node};
use std::time::{Duration, Instant};

const NET: u8 = 96;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn wait_alive(urls: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for url in urls {
        loop {
            if let Ok(c) = ledger_client::cluster::ClusterClient::connect(&[url.as_str()]).await
                && c.member_count() >= 3
            {
                break;
            }
            assert!(Instant::now() < deadline, "cluster did not form");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Let gossip settle the members alive everywhere (placement needs them).
    tokio::time::sleep(Duration::from_secs(2)).await;
}

async fn run_in_memory(steps: u64) -> (Duration, ContextState, u32) {
    let t = Instant::now();
    let r = demo::engine(steps, 0, false)
        .run(ContextState::new())
        .await
        .expect("converges");
    (t.elapsed(), r.context, r.cycles)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let steps = arg("--steps", 2000);
    let resume_facts = arg("--resume-facts", 100_000);
    let bin = std::env::var("LEDGER_BIN").unwrap_or_else(|_| {
        ledger_launcher::binary_next_to_current_exe()
            .display()
            .to_string()
    });
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<NodeProcess> = (0..3)
        .map(|i| NodeProcess::start(cluster_node(&bin, dirs[i].path(), NET, i, 3)).unwrap())
        .collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    wait_alive(&urls).await;
    let seeds: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = LedgerContextStore::connect(&seeds, StoreOptions::default())
        .await
        .unwrap();

    // 1. Persisting every fact while the engine runs, against memory only.
    let (mem, mem_ctx, cycles) = run_in_memory(steps).await;
    let t = Instant::now();
    let mut engine = demo::engine(steps, 0, false);
    let bridge = store.streaming("bench-run", None, BridgeOptions::default());
    engine.set_streaming(bridge.clone());
    let r = engine.run(ContextState::new()).await.unwrap();
    let engine_done = t.elapsed();
    store.save("bench-run", &r.context).await.unwrap();
    let persisted = t.elapsed();
    let report = bridge.shutdown().await;
    let facts = mapping::fact_count(&r.context);
    assert_eq!(
        r.context.snapshot().merkle_root(),
        mem_ctx.snapshot().merkle_root()
    );

    // 2. Resume of a large context against a cold run.
    let (cold, big, _) = run_in_memory(resume_facts.saturating_sub(2)).await;
    let t = Instant::now();
    store.save("bench-resume", &big).await.unwrap();
    let save_big = t.elapsed();
    let fresh = LedgerContextStore::connect(&seeds, StoreOptions::default())
        .await
        .unwrap();
    let t = Instant::now();
    let loaded = fresh.load("bench-resume").await.unwrap().unwrap();
    let load = t.elapsed();
    let r2 = demo::engine(resume_facts.saturating_sub(2), 0, false)
        .run(loaded.state)
        .await
        .unwrap();
    let resume = t.elapsed();
    assert_eq!(
        r2.context.snapshot().merkle_root(),
        big.snapshot().merkle_root()
    );

    let s = |d: Duration| d.as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "steps": steps,
            "cycles": cycles,
            "facts": facts,
            "in_memory_s": s(mem),
            "in_memory_facts_per_s": facts as f64 / s(mem),
            "ledger_engine_s": s(engine_done),
            "ledger_persisted_s": s(persisted),
            "ledger_facts_per_s": facts as f64 / s(persisted),
            "added_ms_per_cycle": (s(persisted) - s(mem)) * 1000.0 / f64::from(cycles),
            "engine_slowdown_while_streaming": s(engine_done) / s(mem),
            "bridge": {"persisted": report.facts_persisted, "dropped": report.dropped, "failed": report.failed},
            "resume_facts": mapping::fact_count(&big),
            "cold_run_s": s(cold),
            "save_large_s": s(save_big),
            "load_s": s(load),
            "resume_s": s(resume),
            "resume_over_cold": s(resume) / s(cold),
        })
    );
    drop(nodes);
}
