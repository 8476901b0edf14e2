//! Every ending of a load leaves the context's task in step with storage: a one-member
//! cluster in process (fake discovery, in-memory store), loads whose caller goes away or
//! whose outcome never reaches the task, then appends at `ack = quorum`.

use ledger_cluster::{Cluster, ClusterError, ClusterSettings, LoadFailure, NoMetrics, membership};
use ledger_core::NewEntry;
use ledger_discovery::{Discovery, FakeCluster, GossipRole, NodeMeta};
use ledger_embedded::{Ledger, LedgerConfig, LedgerError, LoadOutcome};
use ledger_replication::AckLevel;
use ledger_storage::MemoryStore;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const INCARNATION: &str = "00000000000000a1";

/// A cluster of one member, `n1`, over an in-memory ledger.
async fn one_member() -> Arc<Cluster> {
    let meta = NodeMeta {
        grpc_addr: "127.0.0.1:1".into(),
        public_key: Vec::new(),
        version: "test".into(),
        role: GossipRole::Member,
        incarnation: INCARNATION.into(),
        mirror_prefixes: Vec::new(),
        views_settled: 0,
    };
    let discovery: Arc<dyn Discovery> = Arc::new(FakeCluster::new().start("n1", meta));
    let settings = ClusterSettings {
        advertise_addr: "127.0.0.1:1".into(),
        seeds: Vec::new(),
        ack: AckLevel::Quorum,
        role: GossipRole::Member,
        mirror_prefixes: Vec::new(),
        dead_member_timeout: None,
        protocol: ledger_replication::Settings::default(),
        anti_entropy_interval: Duration::from_secs(3600),
        context_idle: None,
        placement_views: false,
    };
    let ledger = Ledger::with_store(Arc::new(MemoryStore::new()), LedgerConfig::default());
    Cluster::start(
        settings,
        membership::voter("n1", INCARNATION),
        ledger,
        discovery,
        Arc::new(NoMetrics),
        None,
    )
    .await
    .expect("start a one-member cluster")
}

/// A snapshot of `n` entries (of another ledger's context `src`).
async fn snapshot_of(n: usize) -> Vec<u8> {
    let src = Ledger::with_store(Arc::new(MemoryStore::new()), LedgerConfig::default());
    for i in 0..n {
        src.append_entry(entry("src", i)).await.unwrap();
    }
    src.snapshot("src").await.unwrap().bytes
}

fn entry(ctx: &str, i: usize) -> NewEntry {
    NewEntry::new(
        ctx,
        "facts",
        format!("{ctx}-{i}").into_bytes(),
        Default::default(),
        None,
    )
}

/// An append at `ack = quorum`, retried (like the server does) while it is refused before
/// anything was stored or a load still holds the context; anything else is its answer.
async fn append_acknowledged(c: &Arc<Cluster>, ctx: &str, i: usize) -> Result<u64, ClusterError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.append_here(entry(ctx, i), AckLevel::Quorum).await {
            Ok(e) => return Ok(e.sequence),
            Err(e)
                if Instant::now() < deadline
                    && (e.is_retryable()
                        || matches!(
                            e,
                            ClusterError::Ledger(LedgerError::LoadInProgress { .. })
                        )) =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Appends three entries after a load of five into an empty context: each is acknowledged
/// at quorum at the next sequence, and the task reports what storage holds, all committed.
async fn appends_follow_the_load(c: &Arc<Cluster>, ctx: &str) {
    for (i, expected) in (6..=8).enumerate() {
        let sequence = append_acknowledged(c, ctx, i)
            .await
            .unwrap_or_else(|e| panic!("append {i} after the load: {e}"));
        assert_eq!(sequence, expected, "the append follows the loaded entries");
    }
    assert_serves(c, ctx, 8).await;
}

/// The context's task writes it, holds `size` entries as storage does, and reads here serve
/// all of them (its commit index reached them).
async fn assert_serves(c: &Arc<Cluster>, ctx: &str, size: u64) {
    let state = c.context_state(ctx).await.expect("the context's state");
    assert_eq!((state.role, state.size), ("writer", size));
    assert_eq!(c.ledger.current_sequence(ctx).await.unwrap(), size);
    let mut cap = c.read_cap(ctx).await;
    assert!(
        cap.wait_for(size, Duration::from_secs(5)).await,
        "committed: {}",
        cap.committed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_whose_caller_leaves_after_the_final_apply_keeps_the_writer_in_step() {
    let c = one_member().await;
    let blob = snapshot_of(5).await;
    let (applied, applied_rx) = oneshot::channel();
    let ledger = c.ledger.clone();
    let load = async move {
        let r = ledger.load("ctx", blob, false).await;
        let _ = applied.send(());
        // The load's own caller has not seen its outcome yet when it goes away.
        tokio::task::yield_now().await;
        r.map_err(|e| e.to_string())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    tokio::select! {
        biased;
        _ = applied_rx => {}
        r = c.load_here("ctx", AckLevel::Quorum, deadline, load) => {
            panic!("the load answered before its caller left: {:?}", r.map_err(|_| ()))
        }
    }
    // The caller is gone, its load stored five entries: the writer takes them as its own.
    appends_follow_the_load(&c, "ctx").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_stored_entries_but_reports_failure_is_reconciled_with_storage() {
    let c = one_member().await;
    let blob = snapshot_of(5).await;
    let ledger = c.ledger.clone();
    // The load's entries are stored, but its outcome is lost on the way (as when the reply
    // of the final apply never reaches it): the task is told only that it ended.
    let load = async move {
        ledger
            .load("ctx", blob, false)
            .await
            .map_err(|e| e.to_string())?;
        Err::<LoadOutcome, String>("the outcome was lost".into())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    match c.load_here("ctx", AckLevel::Quorum, deadline, load).await {
        Err(LoadFailure::Load(why)) => assert_eq!(why, "the outcome was lost"),
        other => panic!(
            "the load's own failure is its answer: {:?}",
            other.map_err(|_| ())
        ),
    }
    appends_follow_the_load(&c, "ctx").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_fails_before_storing_leaves_the_context_writable() {
    let c = one_member().await;
    assert_eq!(append_acknowledged(&c, "ctx", 0).await.unwrap(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let load = async { Err::<LoadOutcome, String>("the client went away".into()) };
    assert!(matches!(
        c.load_here("ctx", AckLevel::Quorum, deadline, load).await,
        Err(LoadFailure::Load(_))
    ));
    assert_eq!(append_acknowledged(&c, "ctx", 1).await.unwrap(), 2);
    assert_serves(&c, "ctx", 2).await;
    c.shutdown().await;
}
