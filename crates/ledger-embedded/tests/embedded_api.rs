//! The embedded API on the in-memory store and on RocksDB: appends, reads, loads, proofs,
//! watches and the write stop after a storage failure.

mod common;

use common::{append_n, memory_ledger};
use ledger_core::merkle::{reference, verify_consistency, verify_inclusion};
use ledger_core::snapshot;
use ledger_core::{Hash, Metadata};
use ledger_embedded::{CloseOutcome, Ledger, LedgerConfig, LedgerError, NewEntry, ReadQuery};
use ledger_storage::{
    ContextCommit, ContextHead, IdempotencyRecord, LogStore, MemoryStore, ReadResult, StorageError,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

fn md(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn append_assigns_sequence_time_clock_id_and_hash() {
    let l = memory_ledger();
    let a = l
        .append("c", "facts", b"one".to_vec(), md(&[("agent", "x")]), None)
        .await
        .unwrap();
    let b = l
        .append("c", "evals", b"two".to_vec(), Metadata::new(), None)
        .await
        .unwrap();
    assert_eq!((a.sequence, b.sequence), (1, 2));
    assert_eq!((a.lamport_clock, b.lamport_clock), (1, 2));
    assert!(b.appended_at_ns >= a.appended_at_ns && a.appended_at_ns > 1_600_000_000_000_000_000);
    assert!(a.verify_content_hash() && b.verify_content_hash());
    let id = uuid::Uuid::parse_str(&a.id).unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert_ne!(a.id, b.id);
    assert_eq!(a.metadata.get("agent").map(String::as_str), Some("x"));
    // Another context starts at 1 again.
    let c = l
        .append("d", "facts", vec![], Metadata::new(), None)
        .await
        .unwrap();
    assert_eq!(c.sequence, 1);
}

#[tokio::test]
async fn received_lamport_clock_orders_across_contexts() {
    let l = memory_ledger();
    let a = l
        .append("a", "k", vec![], Metadata::new(), None)
        .await
        .unwrap();
    let a2 = l
        .append("a", "k", vec![], Metadata::new(), Some(41))
        .await
        .unwrap();
    assert_eq!(a2.lamport_clock, 42);
    let b = l
        .append("b", "k", vec![], Metadata::new(), Some(a2.lamport_clock))
        .await
        .unwrap();
    assert_eq!(b.lamport_clock, 43);
    let a3 = l
        .append("a", "k", vec![], Metadata::new(), Some(1))
        .await
        .unwrap();
    assert_eq!(a3.lamport_clock, 43, "max(42, 1) + 1");
    assert_eq!(a.lamport_clock, 1);
    assert!(matches!(
        l.append("a", "k", vec![], Metadata::new(), Some(u64::MAX))
            .await,
        Err(LedgerError::Invalid(_))
    ));
}

#[tokio::test]
async fn invalid_input_is_refused_and_stores_nothing() {
    let l = Ledger::with_store(
        Arc::new(MemoryStore::new()),
        LedgerConfig {
            limits: ledger_embedded::Limits {
                max_payload_bytes: 8,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let cases = [
        ("", "k", 0usize),
        ("c", "", 0),
        ("c\n", "k", 0),
        ("c", "k", 9),
    ];
    for (ctx, key, len) in cases {
        let e = l
            .append(ctx, key, vec![0; len], Metadata::new(), None)
            .await
            .unwrap_err();
        assert!(matches!(e, LedgerError::Invalid(_)), "{e}");
    }
    let e = l
        .append("c", "k", vec![0; 9], Metadata::new(), None)
        .await
        .unwrap_err();
    match e {
        LedgerError::Invalid(v) => assert!(v.is_resource_exhausted()),
        other => panic!("{other}"),
    }
    assert_eq!(l.current_sequence("c").await.unwrap(), 0);
}

#[tokio::test]
async fn get_pages_filters_and_reports_latest() {
    let l = memory_ledger();
    assert_eq!(
        l.get("nothing", None, 0, None).await.unwrap(),
        ReadResult::default()
    );
    for i in 0..20u64 {
        let key = if i % 2 == 0 { "facts" } else { "traces" };
        l.append("g", key, vec![i as u8], Metadata::new(), None)
            .await
            .unwrap();
    }
    let all = l.get("g", None, 0, None).await.unwrap();
    assert_eq!(all.entries.len(), 20);
    assert_eq!(all.latest_sequence, 20);
    let page = l.get("g", Some("traces"), 5, Some(3)).await.unwrap();
    assert_eq!(
        page.entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![6, 8, 10]
    );
    assert!(page.has_more);
    assert_eq!(page.next_after_sequence, 10);
    assert_eq!(page.latest_sequence, 20);
}

#[tokio::test]
async fn concurrent_appenders_get_gapless_sequences() {
    let l = memory_ledger();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            let ctx = format!("ctx-{}", w % 4);
            let mut seqs = Vec::new();
            for i in 0..100 {
                let e = l
                    .append(
                        &ctx,
                        "facts",
                        format!("{w}-{i}").into_bytes(),
                        Metadata::new(),
                        None,
                    )
                    .await
                    .unwrap();
                seqs.push(e.sequence);
            }
            (ctx, seqs)
        }));
    }
    for t in tasks {
        let (_, seqs) = t.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one writer sees increasing sequences"
        );
    }
    for c in 0..4 {
        let ctx = format!("ctx-{c}");
        let r = l.get(&ctx, None, 0, None).await.unwrap();
        assert!(r.entries.iter().map(|e| e.sequence).eq(1..=400));
        assert!(
            r.entries
                .windows(2)
                .all(|w| w[0].lamport_clock < w[1].lamport_clock)
        );
        let leaves: Vec<Hash> = r.entries.iter().map(|e| e.content_hash).collect();
        assert_eq!(
            l.head(&ctx).await.unwrap().unwrap().root(),
            reference::root(&leaves)
        );
    }
}

#[tokio::test]
async fn proofs_verify_against_reference_roots() {
    let l = memory_ledger();
    append_n(&l, "p", 45).await;
    let entries = l.get("p", None, 0, None).await.unwrap().entries;
    let leaves: Vec<Hash> = entries.iter().map(|e| e.content_hash).collect();
    for size in [1u64, 2, 7, 32, 33, 45] {
        let root = reference::root(&leaves[..size as usize]);
        for seq in 1..=size {
            let p = l.inclusion_proof("p", seq, size).await.unwrap();
            assert_eq!(p.root, root);
            assert_eq!(p.leaf_hash, leaves[seq as usize - 1]);
            verify_inclusion(p.leaf_index, p.tree_size, &p.leaf_hash, &p.path, &p.root).unwrap();
        }
        for first in 0..=size {
            let c = l.consistency_proof("p", first, size).await.unwrap();
            assert_eq!(c.second_root, root);
            verify_consistency(first, size, &c.first_root, &c.second_root, &c.path).unwrap();
        }
    }
    // tree_size 0 and second 0 mean "current".
    assert_eq!(l.inclusion_proof("p", 3, 0).await.unwrap().tree_size, 45);
    assert_eq!(l.consistency_proof("p", 3, 0).await.unwrap().second, 45);
    assert!(matches!(
        l.inclusion_proof("p", 46, 0).await,
        Err(LedgerError::OutOfRange(_))
    ));
    assert!(matches!(
        l.inclusion_proof("p", 1, 46).await,
        Err(LedgerError::OutOfRange(_))
    ));
    assert!(matches!(
        l.inclusion_proof("p", 0, 0).await,
        Err(LedgerError::InvalidArgument(_))
    ));
    assert!(matches!(
        l.consistency_proof("p", 9, 5).await,
        Err(LedgerError::InvalidArgument(_))
    ));
    assert!(matches!(
        l.inclusion_proof("none", 1, 0).await,
        Err(LedgerError::NotFound { .. })
    ));
}

#[tokio::test]
async fn snapshot_and_load_restore_exactly() {
    let l = memory_ledger();
    for i in 0..30u64 {
        l.append(
            "src",
            "facts",
            vec![i as u8; 3],
            md(&[("i", &i.to_string())]),
            Some(i * 3),
        )
        .await
        .unwrap();
    }
    let snap = l.snapshot("src").await.unwrap();
    assert_eq!(snap.sequence, 30);
    let decoded = snapshot::decode(&snap.bytes).unwrap();
    assert_eq!(decoded.context_id, "src");
    assert_eq!(decoded.merkle_root, snap.merkle_root);

    // Into an empty context, under another id: identical entries and root.
    let other = memory_ledger();
    let out = other.load("dst", snap.bytes.clone(), true).await.unwrap();
    assert_eq!((out.entries_restored, out.latest_sequence), (30, 30));
    assert_eq!(
        other.get("dst", None, 0, None).await.unwrap().entries,
        l.get("src", None, 0, None).await.unwrap().entries
    );
    assert_eq!(
        other.head("dst").await.unwrap().unwrap().root(),
        snap.merkle_root
    );
    // Appends continue the restored history and clock.
    let next = other
        .append("dst", "facts", vec![], Metadata::new(), None)
        .await
        .unwrap();
    assert_eq!(next.sequence, 31);
    assert_eq!(next.lamport_clock, decoded.lamport_clock + 1);

    // fail_if_exists on a non-empty context.
    assert!(matches!(
        other.load("dst", snap.bytes.clone(), true).await,
        Err(LedgerError::AlreadyExists { size: 31, .. })
    ));
    // An older prefix: nothing to do.
    let out = other.load("dst", snap.bytes.clone(), false).await.unwrap();
    assert_eq!((out.entries_restored, out.latest_sequence), (0, 31));
    assert_eq!(other.current_sequence("dst").await.unwrap(), 31);
}

#[tokio::test]
async fn load_appends_only_the_missing_tail() {
    let l = memory_ledger();
    append_n(&l, "src", 10).await;
    let early = l.snapshot("src").await.unwrap();
    append_n(&l, "src", 7).await;
    let late = l.snapshot("src").await.unwrap();

    let replica = memory_ledger();
    replica.load("r", early.bytes, false).await.unwrap();
    let out = replica.load("r", late.bytes.clone(), false).await.unwrap();
    assert_eq!((out.entries_restored, out.latest_sequence), (7, 17));
    assert_eq!(
        replica.head("r").await.unwrap().unwrap().root(),
        late.merkle_root
    );
    // Loading the same snapshot again changes nothing.
    let out = replica.load("r", late.bytes, false).await.unwrap();
    assert_eq!(out.entries_restored, 0);
}

#[tokio::test]
async fn load_of_diverging_history_names_the_first_differing_sequence() {
    let a = memory_ledger();
    let b = memory_ledger();
    for i in 0..12u64 {
        let payload = if i < 8 {
            vec![i as u8]
        } else {
            vec![100 + i as u8]
        };
        a.append("x", "facts", vec![i as u8], Metadata::new(), None)
            .await
            .unwrap();
        // b differs from sequence 9 on, and its entry ids differ everywhere.
        b.append("x", "facts", payload, Metadata::new(), None)
            .await
            .unwrap();
    }
    let snap_b = b.snapshot("x").await.unwrap();
    match a.load("x", snap_b.bytes.clone(), false).await {
        // Entry ids (UUIDv7) differ between the two ledgers, so they differ from sequence 1.
        Err(LedgerError::Diverged { sequence, .. }) => assert_eq!(sequence, 1),
        other => panic!("{other:?}"),
    }
    // Same ids, different later payload: built by loading a prefix first.
    let c = memory_ledger();
    let prefix = {
        let p = memory_ledger();
        p.load("x", a.snapshot("x").await.unwrap().bytes, false)
            .await
            .unwrap();
        p
    };
    let _ = prefix;
    c.load("x", a.snapshot("x").await.unwrap().bytes, false)
        .await
        .unwrap();
    let mut forged = snapshot::decode(&a.snapshot("x").await.unwrap().bytes).unwrap();
    for e in forged.entries.iter_mut().skip(8) {
        e.payload = b"rewritten".to_vec();
        e.content_hash = e.compute_content_hash();
    }
    forged.entries.truncate(10);
    let blob = snapshot::encode("x", 0, &forged.entries).unwrap();
    match c.load("x", blob, false).await {
        Err(LedgerError::Diverged { sequence, .. }) => assert_eq!(sequence, 9),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.current_sequence("x").await.unwrap(),
        12,
        "nothing overwritten"
    );
    // A longer forged history that rewrites the middle is refused too.
    let mut longer = snapshot::decode(&a.snapshot("x").await.unwrap().bytes).unwrap();
    longer.entries[4].payload = b"evil".to_vec();
    longer.entries[4].content_hash = longer.entries[4].compute_content_hash();
    let mut extra = longer.entries[11].clone();
    extra.sequence = 13;
    extra.lamport_clock += 1;
    extra.content_hash = extra.compute_content_hash();
    longer.entries.push(extra);
    let blob = snapshot::encode("x", 0, &longer.entries).unwrap();
    match c.load("x", blob, false).await {
        Err(LedgerError::Diverged { sequence, .. }) => assert_eq!(sequence, 5),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn load_rejects_malformed_snapshots() {
    let l = memory_ledger();
    append_n(&l, "s", 3).await;
    let mut blob = l.snapshot("s").await.unwrap().bytes;
    blob[20] ^= 1;
    assert!(matches!(
        l.load("t", blob, false).await,
        Err(LedgerError::Snapshot(_))
    ));
    assert!(matches!(
        l.load("t", b"garbage".to_vec(), false).await,
        Err(LedgerError::Snapshot(_))
    ));
    assert!(matches!(
        l.snapshot("none").await,
        Err(LedgerError::NotFound { .. })
    ));
    assert_eq!(l.current_sequence("t").await.unwrap(), 0);
}

#[tokio::test]
async fn watch_catches_up_then_follows_live_without_gaps() {
    let l = memory_ledger();
    append_n(&l, "w", 50).await;
    let mut w = l.watch("w", None, 0).unwrap();
    let writer = {
        let l = l.clone();
        tokio::spawn(async move { append_n(&l, "w", 500).await })
    };
    for want in 1..=550u64 {
        let e = w.next().await.unwrap();
        assert_eq!(e.sequence, want);
    }
    writer.await.unwrap();
}

#[tokio::test]
async fn watch_from_sequence_and_key_filter() {
    let l = memory_ledger();
    for i in 0..10u64 {
        l.append(
            "w",
            if i % 2 == 0 { "facts" } else { "evals" },
            vec![],
            Metadata::new(),
            None,
        )
        .await
        .unwrap();
    }
    let mut w = l.watch("w", Some("evals"), 4).unwrap();
    for want in [6, 8, 10] {
        assert_eq!(w.next().await.unwrap().sequence, want);
    }
    l.append("w", "facts", vec![], Metadata::new(), None)
        .await
        .unwrap();
    l.append("w", "evals", vec![], Metadata::new(), None)
        .await
        .unwrap();
    assert_eq!(w.next().await.unwrap().sequence, 12);
    assert_eq!(w.position(), 12);
}

#[tokio::test]
async fn stalled_watcher_recovers_from_storage_without_gaps() {
    let l = Ledger::with_store(
        Arc::new(MemoryStore::new()),
        LedgerConfig {
            watch_buffer: 8,
            ..Default::default()
        },
    );
    let mut w = l.watch("s", None, 0).unwrap();
    let mut fast = l.watch("s", None, 0).unwrap();
    // The stalled watcher reads nothing while 300 entries are appended (far beyond its buffer).
    append_n(&l, "s", 300).await;
    for want in 1..=300u64 {
        assert_eq!(fast.next().await.unwrap().sequence, want);
    }
    for want in 1..=300u64 {
        assert_eq!(w.next().await.unwrap().sequence, want);
    }
    assert!(w.storage_reads() >= 1);
    // And it rejoins live delivery.
    append_n(&l, "s", 1).await;
    assert_eq!(w.next().await.unwrap().sequence, 301);
}

#[tokio::test]
async fn watch_ends_with_shutting_down_on_close() {
    let l = memory_ledger();
    let mut w = l.watch("c", None, 0).unwrap();
    append_n(&l, "c", 1).await;
    assert_eq!(w.next().await.unwrap().sequence, 1);
    l.close().await;
    assert!(matches!(
        w.next().await,
        Err(LedgerError::WatchEnded { resume_from: 1 })
    ));
    assert!(matches!(
        l.append("c", "k", vec![], Metadata::new(), None).await,
        Err(LedgerError::ShuttingDown)
    ));
    assert!(l.watch("c", None, 0).is_err());
}

/// A store that fails every commit after the first `ok` ones.
#[derive(Debug)]
struct FailingStore {
    inner: MemoryStore,
    ok: usize,
    commits: AtomicUsize,
}

impl LogStore for FailingStore {
    fn commit(&self, batch: &[ContextCommit]) -> Result<(), StorageError> {
        if self.commits.fetch_add(1, Ordering::SeqCst) >= self.ok {
            return Err(StorageError::Io(std::io::Error::other(
                "injected disk failure",
            )));
        }
        self.inner.commit(batch)
    }
    fn head(&self, c: &str) -> Result<Option<ContextHead>, StorageError> {
        self.inner.head(c)
    }
    fn read(&self, c: &str, q: &ReadQuery) -> Result<ReadResult, StorageError> {
        self.inner.read(c, q)
    }
    fn nodes(&self, c: &str, ids: &[ledger_core::TreeNodeId]) -> Result<Vec<Hash>, StorageError> {
        self.inner.nodes(c, ids)
    }
    fn list_contexts(&self, a: Option<&str>, n: usize) -> Result<Vec<String>, StorageError> {
        self.inner.list_contexts(a, n)
    }
    fn sync(&self) -> Result<(), StorageError> {
        Ok(())
    }
    fn stage(&self, c: &ContextCommit) -> Result<(), StorageError> {
        self.inner.stage(c)
    }
    fn idempotency(&self, c: &str, k: &str) -> Result<Option<IdempotencyRecord>, StorageError> {
        self.inner.idempotency(c, k)
    }
    fn idempotency_count(&self, c: &str) -> Result<u64, StorageError> {
        self.inner.idempotency_count(c)
    }
    fn replication_state(&self, c: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.replication_state(c)
    }
    fn save_replication_state(&self, c: &str, state: &[u8]) -> Result<(), StorageError> {
        self.inner.save_replication_state(c, state)
    }
    fn quarantine(
        &self,
        c: &str,
        from: u64,
        reason: &str,
        at: u64,
    ) -> Result<Option<ledger_storage::Quarantined>, StorageError> {
        self.inner.quarantine(c, from, reason, at)
    }
    fn quarantines(
        &self,
        c: Option<&str>,
    ) -> Result<Vec<ledger_storage::QuarantineInfo>, StorageError> {
        self.inner.quarantines(c)
    }
    fn quarantined_entries(
        &self,
        c: &str,
        id: u64,
    ) -> Result<Option<Vec<ledger_core::Entry>>, StorageError> {
        self.inner.quarantined_entries(c, id)
    }
}

#[tokio::test]
async fn storage_failure_stops_writes_and_never_acknowledges() {
    let inner = MemoryStore::new();
    let store = Arc::new(FailingStore {
        inner: inner.clone(),
        ok: 3,
        commits: AtomicUsize::new(0),
    });
    let l = Ledger::with_store(store, LedgerConfig::default());
    append_n(&l, "f", 3).await;
    let e = l
        .append("f", "k", vec![], Metadata::new(), None)
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::StorageFailed(_)), "{e}");
    let e = l
        .append("g", "k", vec![], Metadata::new(), None)
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::WritesStopped { .. }), "{e}");
    assert!(e.to_string().contains("injected disk failure"));
    assert!(!l.is_writable());
    // Reads still work and show exactly the acknowledged entries.
    assert_eq!(l.get("f", None, 0, None).await.unwrap().entries.len(), 3);
    assert_eq!(inner.head("f").unwrap().unwrap().size(), 3);
    // Closing says storage failed, with the reason.
    match l.close().await {
        CloseOutcome::StorageFailed(reason) => {
            assert!(reason.contains("injected disk failure"), "{reason}")
        }
        CloseOutcome::Clean => panic!("close after a storage failure reported clean"),
    }
}

#[tokio::test]
async fn rocks_ledger_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let root = {
        let l = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
        append_n(&l, "r", 25).await;
        let root = l.head("r").await.unwrap().unwrap().root();
        assert_eq!(l.close().await, CloseOutcome::Clean);
        root
    };
    let l = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    assert_eq!(l.head("r").await.unwrap().unwrap().root(), root);
    let e = l
        .append("r", "facts", vec![], Metadata::new(), None)
        .await
        .unwrap();
    assert_eq!(e.sequence, 26);
    assert_eq!(
        l.list_contexts(None, 10).await.unwrap(),
        vec!["r".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_appends_apply_in_submission_order_while_acks_are_awaited_together() {
    // A queue of 4 makes most submissions wait for room, while other tasks compete for it.
    let config = LedgerConfig {
        queue_depth: 4,
        ..LedgerConfig::default()
    };
    let l = Ledger::with_store(Arc::new(MemoryStore::new()), config);
    let mut tasks = Vec::new();
    for t in 0..4 {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            let ctx = format!("submit-{t}");
            let mut acks = futures::stream::FuturesOrdered::new();
            for i in 1..=2_000u64 {
                let ack = l
                    .submit(NewEntry {
                        context_id: ctx.clone(),
                        key: "facts".into(),
                        payload: i.to_be_bytes().to_vec(),
                        ..NewEntry::default()
                    })
                    .await
                    .unwrap();
                acks.push_back(ack);
            }
            let mut i = 0u64;
            while let Some(e) = futures::StreamExt::next(&mut acks).await {
                i += 1;
                let e = e.unwrap();
                assert_eq!(e.sequence, i, "{ctx}: submission {i} stored out of order");
                assert_eq!(e.payload, i.to_be_bytes().to_vec());
            }
            i
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 2_000);
    }
    // A refused submission is refused at once and queues nothing.
    let err = l
        .submit(NewEntry {
            context_id: "submit-0".into(),
            ..NewEntry::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::Invalid(_)), "{err}");
    assert_eq!(l.current_sequence("submit-0").await.unwrap(), 2_000);
}

/// Every entry of `ctx` with key `key`, paged with `next_after_sequence`, as sequences.
async fn keyed_sequences(l: &Ledger, ctx: &str, key: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = l.get(ctx, Some(key), after, Some(1000)).await.unwrap();
        assert!(page.entries.iter().all(|e| e.key == key));
        out.extend(page.entries.iter().map(|e| e.sequence));
        if !page.has_more {
            return out;
        }
        after = page.next_after_sequence;
    }
}

/// A snapshot of 20,000 entries of three keys, loaded into RocksDB (several staged chunks, then
/// the apply): keyed reads see every loaded entry, also after a reopen, and after a quarantine
/// see only the kept prefix and what is appended after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_reads_after_snapshot_load_and_quarantine_on_rocksdb() {
    let keys = ["facts", "traces", "audit"];
    let src = memory_ledger();
    let mut pending = Vec::new();
    for i in 0..20_000u64 {
        let src = src.clone();
        pending.push(async move {
            src.append(
                "src",
                keys[(i / 7 % 3) as usize],
                i.to_be_bytes().to_vec(),
                Metadata::new(),
                None,
            )
            .await
            .unwrap()
        });
        if pending.len() == 500 {
            futures::future::join_all(std::mem::take(&mut pending)).await;
        }
    }
    futures::future::join_all(pending).await;
    let all = src.get("src", None, 0, None).await.unwrap();
    assert_eq!(all.entries.len(), 20_000);
    let want = |key: &str, upto: u64| -> Vec<u64> {
        all.entries
            .iter()
            .filter(|e| e.key == key && e.sequence <= upto)
            .map(|e| e.sequence)
            .collect()
    };
    let snap = src.snapshot("src").await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    {
        let l = common::rocks_ledger(dir.path());
        let out = l.load("dst", snap.bytes.clone(), true).await.unwrap();
        assert_eq!(out.latest_sequence, 20_000);
        for key in keys {
            assert_eq!(
                keyed_sequences(&l, "dst", key).await,
                want(key, 20_000),
                "{key}"
            );
        }
        assert_eq!(l.close().await, CloseOutcome::Clean);
    }
    let l = common::rocks_ledger(dir.path());
    for key in keys {
        assert_eq!(
            keyed_sequences(&l, "dst", key).await,
            want(key, 20_000),
            "{key} after reopen"
        );
    }
    l.quarantine("dst", 12_345, "diverged".into())
        .await
        .unwrap()
        .unwrap();
    let e = l
        .append(
            "dst",
            "audit",
            b"after the cut".to_vec(),
            Metadata::new(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(e.sequence, 12_345);
    for key in keys {
        let mut expected = want(key, 12_344);
        if key == "audit" {
            expected.push(12_345);
        }
        assert_eq!(
            keyed_sequences(&l, "dst", key).await,
            expected,
            "{key} after quarantine"
        );
    }
    l.close().await;
}
