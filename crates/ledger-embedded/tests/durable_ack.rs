//! An append is acknowledged only once it is durable, on both write paths: the pipelined
//! committer and syncer threads (writes deferred, one fsync per group) and a lone small group
//! committed by the sequencer itself while nothing else is in flight (one synced write). The
//! store here tracks what a crash of the machine would keep (a `commit` is durable on return, a
//! deferred commit after the next `sync`), which a killed process cannot show: its unsynced
//! writes survive in the page cache.

mod common;

use common::FaultyStore;
use ledger_core::Metadata;
use ledger_embedded::{Ledger, LedgerConfig};
use std::sync::Arc;
use std::sync::atomic::Ordering;

async fn append_checked(ledger: &Ledger, store: &FaultyStore, ctx: &str, i: u64) {
    let e = common::append_one(ledger, ctx, i).await;
    assert!(
        store.durable_size(ctx) >= e.sequence,
        "{ctx}/{} acknowledged before it was durable (durable size {})",
        e.sequence,
        store.durable_size(ctx)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_writer_is_committed_by_the_sequencer_and_answered_once_durable() {
    let store = Arc::new(FaultyStore::default());
    let ledger = Ledger::with_store(store.clone(), LedgerConfig::default());
    for i in 0..200 {
        append_checked(&ledger, &store, "lone", i).await;
    }
    let stats = ledger.stats();
    let (commits, inline, syncs) = (
        stats.commits.load(Ordering::Relaxed),
        stats.inline_commits.load(Ordering::Relaxed),
        stats.syncs.load(Ordering::Relaxed),
    );
    assert_eq!(commits, 200, "one commit per append");
    assert_eq!(
        inline, 200,
        "with nothing else in flight the sequencer commits each append itself"
    );
    assert_eq!(syncs, 200, "each inline commit counts as one fsync");
    let r = ledger.get("lone", None, 0, None).await.unwrap();
    assert!(r.entries.iter().map(|e| e.sequence).eq(1..=200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_use_both_paths_and_every_answer_is_durable() {
    let store = Arc::new(FaultyStore::default());
    let ledger = Ledger::with_store(store.clone(), LedgerConfig::default());
    let mut tasks = Vec::new();
    for w in 0..32u64 {
        let (ledger, store) = (ledger.clone(), store.clone());
        tasks.push(tokio::spawn(async move {
            let ctx = format!("ctx-{}", w % 4);
            for i in 0..100 {
                append_checked(&ledger, &store, &ctx, w * 1000 + i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A group larger than a lone writer's goes through the committer and syncer.
    let inline_before = ledger.stats().inline_commits.load(Ordering::Relaxed);
    let commits_before = ledger.stats().commits.load(Ordering::Relaxed);
    let items: Vec<_> = (0..20)
        .map(|i| {
            ledger_core::NewEntry::new(
                "ctx-1",
                "facts",
                format!("batch-{i}").into_bytes(),
                Metadata::new(),
                None,
            )
        })
        .collect();
    let batch = ledger.append_batch("ctx-1", items).await.unwrap();
    let last = batch.last().unwrap().sequence;
    assert!(
        store.durable_size("ctx-1") >= last,
        "the batch was answered once durable"
    );
    let stats = ledger.stats();
    assert_eq!(stats.commits.load(Ordering::Relaxed), commits_before + 1);
    assert_eq!(
        stats.inline_commits.load(Ordering::Relaxed),
        inline_before,
        "20 entries are more than the sequencer commits itself"
    );
    // Then one writer again: nothing in flight, and once the last eight groups are all small
    // (the batch has left the sequencer's recent sizes), the sequencer commits each append
    // itself.
    for i in 0..20 {
        append_checked(&ledger, &store, "ctx-0", 100_000 + i).await;
    }
    assert_eq!(
        ledger.stats().inline_commits.load(Ordering::Relaxed) - inline_before,
        12,
        "the lone writer after the batch: inline from its ninth append on"
    );
    assert_eq!(
        ledger.stats().entries.load(Ordering::Relaxed),
        32 * 100 + 20 + 20
    );
    for c in 0..4 {
        let ctx = format!("ctx-{c}");
        let r = ledger.get(&ctx, None, 0, None).await.unwrap();
        let want = 8 * 100 + if c < 2 { 20 } else { 0 };
        assert!(
            r.entries.iter().map(|e| e.sequence).eq(1..=want),
            "{ctx} is gapless"
        );
        assert_eq!(store.durable_size(&ctx), want);
    }
}
