//! A real converge-core engine against a real 3-node ledger cluster of real processes.
//! Networks 90–95 (127.0.9x.10–12) are this file's.

mod support;

use converge_core::gates::GateDecision;
use converge_core::{ContextKey, ContextState, RunResult};
use ledger_converge::{BridgeOptions, LedgerContextStore, RetrySettings, StoreOptions, demo};
use std::time::Duration;
use support::{Cluster, assert_no_fact_twice, engine_run, entries, wait_for};
use tokio_stream::StreamExt;

async fn store(urls: &[String]) -> LedgerContextStore {
    let seeds: Vec<&str> = urls.iter().map(String::as_str).collect();
    LedgerContextStore::connect(&seeds, StoreOptions::default())
        .await
        .expect("store connects")
}

/// The same engine, in memory only: the reference result.
async fn in_memory(steps: u64) -> ContextState {
    demo::engine(steps, 0, false)
        .run(ContextState::new())
        .await
        .expect("converges")
        .context
}

fn root(s: &ContextState) -> String {
    s.snapshot().merkle_root().to_hex()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_sigkilled_mid_run_resumes_from_the_ledger_to_the_same_facts_and_root() {
    let cluster = Cluster::start(90).await;
    let addr = cluster.nodes[0].url.clone();
    let n = "30";

    let whole = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || engine_run(&["--addr", &addr, "--scope", "whole", "--cycles", n])
    })
    .await
    .unwrap();
    assert_eq!(whole["converged"], true);
    assert_eq!(whole["resumed_from_facts"], 0);
    assert_eq!(whole["context"], "converge/whole");

    // Interrupted: SIGKILL once some facts are in the ledger, then start again.
    let mut child = std::process::Command::new(support::engine_run_bin())
        .args([
            "--addr",
            &addr,
            "--scope",
            "cut",
            "--cycles",
            n,
            "--step-ms",
            "100",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("engine_run starts");
    wait_for("facts of the interrupted run in the ledger", || async {
        support::fact_ids(&entries(&addr, "converge/cut").await).len() >= 6
    })
    .await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let stored_at_kill = support::fact_ids(&cluster.acknowledged("converge/cut").await).len();
    assert!(
        stored_at_kill < 33,
        "killed before the end ({stored_at_kill} facts)"
    );

    let again = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || engine_run(&["--addr", &addr, "--scope", "cut", "--cycles", n])
    })
    .await
    .unwrap();
    assert_eq!(again["converged"], true);
    let resumed = again["resumed_from_facts"].as_u64().unwrap();
    assert!(resumed >= 6, "resumed from {resumed} facts");
    assert_eq!(again["facts"], whole["facts"]);
    assert_eq!(again["merkle_root"], whole["merkle_root"]);
    // And it is the engine's own result, in memory.
    let reference = in_memory(30).await;
    assert_eq!(whole["merkle_root"], root(&reference));
    assert_eq!(
        whole["facts"],
        ledger_converge::mapping::fact_count(&reference)
    );

    let stored = assert_no_fact_twice(&cluster.acknowledged("converge/cut").await);
    assert_eq!(stored as u64, again["facts"].as_u64().unwrap());
    // A third run finds everything and adds nothing.
    let third = tokio::task::spawn_blocking(move || {
        engine_run(&["--addr", &addr, "--scope", "cut", "--cycles", n])
    })
    .await
    .unwrap();
    assert_eq!(third["resumed_from_facts"], again["facts"]);
    assert_eq!(third["merkle_root"], whole["merkle_root"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_node_sigkilled_mid_run_the_run_continues_through_another_node_nothing_lost_or_doubled()
 {
    let mut cluster = Cluster::start(91).await;
    let store = store(&cluster.urls()).await;
    let scope = "failover";
    let ctx = store.context_id(scope);
    let steps = 40;

    let run = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut engine = demo::engine(steps, 50, false);
            let bridge = store.streaming(scope, None, BridgeOptions::default());
            engine.set_streaming(bridge.clone());
            let r = engine.run(ContextState::new()).await.expect("converges");
            store.save(scope, &r.context).await.expect("save");
            (r.context, bridge.shutdown().await)
        })
    };
    let url0 = cluster.nodes[0].url.clone();
    wait_for("some facts stored", || async {
        support::fact_ids(&entries(&url0, &ctx).await).len() >= 5
    })
    .await;
    let w = cluster.writer_index(0, &ctx).await.expect("a writer");
    cluster.nodes[w].kill();
    let (state, report) = run.await.expect("the run ends");
    assert_eq!(report.failed + report.dropped, 0, "{report:?}");

    let reference = in_memory(steps).await;
    assert_eq!(root(&state), root(&reference));
    let held = cluster.acknowledged(&ctx).await;
    assert_eq!(
        assert_no_fact_twice(&held) as u64,
        ledger_converge::mapping::fact_count(&reference)
    );
    // A new store (another process, say) loads the same context through a survivor.
    let fresh = store_without(&cluster, w).await;
    let loaded = fresh.load(scope).await.expect("load").expect("a context");
    assert_eq!(root(&loaded.state), root(&reference));
    assert_eq!(loaded.after_checkpoint, 0);
}

async fn store_without(cluster: &Cluster, dead: usize) -> LedgerContextStore {
    let urls: Vec<String> = cluster
        .urls()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != dead)
        .map(|(_, u)| u)
        .collect();
    store(&urls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hitl_pause_survives_the_process_and_another_process_resumes_it_from_the_ledger() {
    let cluster = Cluster::start(92).await;
    let addr = cluster.nodes[1].url.clone();
    let run = |extra: &'static [&'static str]| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "--addr", &addr, "--scope", "gate", "--cycles", "5", "--hitl",
            ];
            args.extend_from_slice(extra);
            engine_run(&args)
        })
    };
    let paused = run(&[]).await.unwrap();
    assert_eq!(paused["paused"], true, "{paused}");
    let gate = paused["gate_id"].as_str().unwrap().to_owned();
    // Hours later, nobody decided yet: still paused, at the same gate.
    let still = run(&[]).await.unwrap();
    assert_eq!(still["paused"], true);
    assert_eq!(still["gate_id"], gate.as_str());
    // A human approves, in another process, which resumes and converges.
    let done = run(&["--decide", "approve", "--by", "alice"])
        .await
        .unwrap();
    assert_eq!(done["converged"], true, "{done}");

    // The same gate approved within one process, in memory.
    let mut engine = demo::engine(5, 0, true);
    let RunResult::HitlPause(p) = engine.run_with_hitl(ContextState::new()).await else {
        panic!("pauses")
    };
    assert_eq!(p.request.gate_id.as_str(), gate);
    let RunResult::Complete(Ok(r)) = engine
        .resume(*p, GateDecision::approve(gate.as_str().into(), "alice"))
        .await
    else {
        panic!("converges")
    };
    assert!(
        r.context
            .get(ContextKey::Evaluations)
            .iter()
            .any(|f| f.id().as_str() == demo::RELEASE_ID)
    );
    assert_eq!(done["merkle_root"], root(&r.context));
    assert_eq!(
        done["facts"],
        ledger_converge::mapping::fact_count(&r.context)
    );
    let held = entries(&addr, "converge/gate").await;
    assert_no_fact_twice(&held);
    // Resumed once: a later run finds no pending pause and nothing to do.
    let after = run(&[]).await.unwrap();
    assert_eq!(after["converged"], true);
    assert_eq!(after["merkle_root"], done["merkle_root"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_gate_resumed_by_another_store_ends_with_the_rejection_recorded() {
    let cluster = Cluster::start(95).await;
    let scope = "gate-reject";
    let a = store(&cluster.urls()).await;
    let mut engine = demo::engine(3, 0, true);
    let RunResult::HitlPause(p) = engine.run_with_hitl(ContextState::new()).await else {
        panic!("pauses")
    };
    a.save_pause(scope, &p).await.expect("pause saved");
    drop((a, engine));

    let b = store(&cluster.urls()).await;
    let pending = b.pending_pause(scope).await.unwrap().expect("pending");
    let d = GateDecision::reject(pending.request.gate_id.clone(), "bob", Some("no".into()));
    b.record_decision(scope, &d).await.unwrap();
    let mut engine = demo::engine(3, 0, true);
    let RunResult::Complete(Ok(r)) = b.resume(scope, &mut engine, d).await.unwrap() else {
        panic!("converges")
    };
    b.save(scope, &r.context).await.unwrap();
    assert!(
        r.context
            .get(ContextKey::Diagnostic)
            .iter()
            .any(|f| f.id().as_str() == "hitl-rejected:release")
    );
    assert!(r.context.get(ContextKey::Evaluations).is_empty());
    assert!(b.pending_pause(scope).await.unwrap().is_none());
    let c = store(&cluster.urls()).await;
    let loaded = c.load(scope).await.unwrap().unwrap();
    assert_eq!(root(&loaded.state), root(&r.context));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_watching_a_read_replica_sees_every_fact_in_order() {
    let cluster = Cluster::start(93).await;
    let store = store(&cluster.urls()).await;
    let scope = "watched";
    let ctx = store.context_id(scope);
    // Create the context, so placement names its writer, then watch on another replica.
    let mut engine = demo::engine(0, 0, false);
    let first = engine.run(ContextState::new()).await.unwrap();
    store.save(scope, &first.context).await.unwrap();
    let w = cluster.writer_index(0, &ctx).await.expect("writer");
    let replica = (0..3).find(|i| *i != w).unwrap();
    let watcher = ledger_client::LedgerClient::connect(&cluster.nodes[replica].url)
        .await
        .unwrap();
    let mut stream = watcher.watch(&ctx, "", 0).await.expect("watch");

    let steps = 25;
    let mut engine = demo::engine(steps, 0, false);
    let bridge = store.streaming(scope, Some(&first.context), BridgeOptions::default());
    engine.set_streaming(bridge.clone());
    let r = engine.run(first.context.clone()).await.unwrap();
    store.save(scope, &r.context).await.unwrap();
    bridge.shutdown().await;

    let total = ledger_converge::mapping::fact_count(&r.context) as usize;
    let mut seen = Vec::new();
    let mut last_seq = 0;
    while seen.len() < total {
        let e = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the replica delivers every fact")
            .expect("stream open")
            .expect("entry");
        assert_eq!(e.sequence, last_seq + 1, "gapless, in order");
        last_seq = e.sequence;
        if let Some(key) = ledger_converge::mapping::context_key(&e.key) {
            seen.push((
                key,
                e.metadata[ledger_converge::mapping::META_FACT_ID].clone(),
            ));
        }
    }
    let steps_seen: Vec<&String> = seen
        .iter()
        .filter(|(k, _)| *k == ContextKey::Strategies)
        .map(|(_, id)| id)
        .collect();
    let expected: Vec<String> = r
        .context
        .get(ContextKey::Strategies)
        .iter()
        .map(|f| f.id().to_string())
        .collect();
    assert_eq!(steps_seen, expected.iter().collect::<Vec<_>>());
    let all: std::collections::BTreeSet<_> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(all.len(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fact_derived_from_another_context_is_appended_after_it_in_lamport_order() {
    let cluster = Cluster::start(94).await;
    let source = store(&cluster.urls()).await;
    let r = demo::engine(20, 0, false)
        .run(ContextState::new())
        .await
        .unwrap();
    source.save("source", &r.context).await.unwrap();
    let source_max = cluster
        .acknowledged("converge/source")
        .await
        .iter()
        .map(|e| e.lamport_clock)
        .max()
        .unwrap();
    assert!(source_max > 20);

    // Another process reads the source context, then derives a context from it.
    let derived = store(&cluster.urls()).await;
    let from = derived.load("source").await.unwrap().unwrap();
    let r2 = demo::engine(1, 0, false)
        .run(ContextState::new())
        .await
        .unwrap();
    derived.save("derived", &r2.context).await.unwrap();
    let first_derived = cluster.acknowledged("converge/derived").await[0].lamport_clock;
    assert!(
        first_derived > source_max,
        "derived entry {first_derived} after its source {source_max}"
    );
    assert!(from.facts > 0);

    // Without reading the source, a fresh context starts its own clock.
    let unrelated = store(&cluster.urls()).await;
    unrelated.save("unrelated", &r2.context).await.unwrap();
    assert_eq!(
        cluster.acknowledged("converge/unrelated").await[0].lamport_clock,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ledger_unreachable_the_run_continues_and_the_bridge_reports_what_was_not_persisted()
 {
    let (mut node, _dir) = support::single_node();
    let options = StoreOptions {
        retry: RetrySettings {
            attempt_timeout: Duration::from_millis(300),
            give_up_after: Duration::from_millis(600),
            initial_backoff: Duration::from_millis(20),
        },
        ..StoreOptions::default()
    };
    let store = LedgerContextStore::connect(&[node.url.as_str()], options)
        .await
        .unwrap();
    node.kill();
    let mut engine = demo::engine(200, 0, false);
    let bridge = store.streaming(
        "offline",
        None,
        BridgeOptions {
            capacity: 8,
            window: 2,
            ..BridgeOptions::default()
        },
    );
    engine.set_streaming(bridge.clone());
    let r = tokio::time::timeout(Duration::from_secs(30), engine.run(ContextState::new()))
        .await
        .expect("the engine is not held up by the ledger")
        .expect("converges");
    let total = ledger_converge::mapping::fact_count(&r.context);
    let report = bridge.shutdown().await;
    assert_eq!(report.facts_persisted, 0);
    assert_eq!(report.dropped + report.failed, total, "{report:?}");
    assert!(
        report.dropped > 0,
        "the bounded buffer overflowed: {report:?}"
    );
    assert_eq!(report.not_persisted.len() as u64, total);
    assert!(report.last_error.is_some());
    let err = store.save("offline", &r.context).await.unwrap_err();
    assert!(
        matches!(
            converge_core::traits::StoreError::from(err),
            converge_core::traits::StoreError::Unavailable { .. }
        ),
        "an unreachable ledger is Unavailable"
    );

    // Back up: the next save persists everything.
    node.restart().expect("restarts");
    let store = LedgerContextStore::connect(&[node.url.as_str()], StoreOptions::default())
        .await
        .unwrap();
    let report = store.save("offline", &r.context).await.unwrap();
    assert_eq!(report.facts_appended, total);
    let loaded = store.load("offline").await.unwrap().unwrap();
    assert_eq!(root(&loaded.state), root(&r.context));
}
