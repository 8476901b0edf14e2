//! Loads are all or nothing, no request can block a context, retries with idempotency keys
//! store once, and snapshots are size-checked and streamable.

mod common;

use common::{append_n, memory_ledger};
use ledger_core::lamport::MAX_RECEIVED_LAMPORT;
use ledger_core::snapshot;
use ledger_core::{Metadata, NewEntry};
use ledger_embedded::{Ledger, LedgerConfig, LedgerError};
use ledger_storage::MemoryStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn new(ctx: &str, payload: &[u8], key: Option<&str>) -> NewEntry {
    NewEntry {
        context_id: ctx.into(),
        key: "facts".into(),
        payload: payload.to_vec(),
        idempotency_key: key.map(str::to_owned),
        ..NewEntry::default()
    }
}

/// A snapshot of `n` entries made on a scratch ledger.
async fn snapshot_of(n: u64) -> Vec<u8> {
    let src = memory_ledger();
    append_n(&src, "src", n).await;
    src.snapshot("src").await.unwrap().bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_a_load_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    append_n(&l, "dst", 5).await;
    let blob = {
        // dst's own history extended: a copy of it with 60,000 more entries.
        let copy = memory_ledger();
        copy.load("dst", l.snapshot("dst").await.unwrap().bytes, true)
            .await
            .unwrap();
        append_n(&copy, "dst", 60_000).await;
        copy.snapshot("dst").await.unwrap().bytes
    };
    let done = Arc::new(AtomicBool::new(false));
    let seen = {
        let (l, done) = (l.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            while !done.load(Ordering::Acquire) {
                let page = l.get("dst", None, 0, Some(1)).await.unwrap();
                seen.insert(page.latest_sequence);
                seen.insert(l.current_sequence("dst").await.unwrap());
                if let Ok(t) = l.tree_state("dst", 0).await {
                    seen.insert(t.size);
                }
            }
            seen
        })
    };
    let out = l.load("dst", blob, false).await.unwrap();
    done.store(true, Ordering::Release);
    assert_eq!(
        (out.entries_restored, out.latest_sequence),
        (60_000, 60_005)
    );
    let seen = seen.await.unwrap();
    assert!(
        seen.iter().all(|s| *s == 5 || *s == 60_005),
        "a reader saw a partial load: sizes {seen:?}"
    );
    // The loaded context verifies and accepts appends after it.
    let e = l
        .append("dst", "facts", vec![], Metadata::new(), None)
        .await
        .unwrap();
    assert_eq!(e.sequence, 60_006);
}

#[tokio::test]
async fn a_failed_load_leaves_the_context_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    append_n(&l, "c", 3).await;
    let before = l.head("c").await.unwrap().unwrap();
    // 40,000 entries, the last byte of the checksum flipped: every entry decodes and is staged
    // before the checksum is found wrong.
    let mut blob = snapshot_of(40_000).await;
    let last = blob.len() - 1;
    blob[last] ^= 1;
    let mut session = l.begin_load("fresh", true).await.unwrap();
    session.feed(&blob).unwrap();
    let err = session.finish().await.unwrap_err();
    assert!(matches!(err, LedgerError::Snapshot(_)), "{err}");
    assert!(l.head("fresh").await.unwrap().is_none());
    assert!(
        !l.list_contexts(None, 100)
            .await
            .unwrap()
            .contains(&"fresh".into())
    );
    // A retry with fail_if_exists works: nothing of the failed load exists.
    blob[last] ^= 1;
    let out = l.load("fresh", blob.clone(), true).await.unwrap();
    assert_eq!(out.latest_sequence, 40_000);
    // A diverging load into "c" fails; "c" keeps exactly its entries and appends continue.
    assert!(matches!(
        l.load("c", blob, false).await,
        Err(LedgerError::Diverged { sequence: 1, .. })
    ));
    assert_eq!(l.head("c").await.unwrap().unwrap(), before);
    append_n(&l, "c", 1).await;
    assert_eq!(l.current_sequence("c").await.unwrap(), 4);
    drop(l);
    // After a reopen the abandoned staged rows are still invisible.
    let l = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    assert_eq!(l.current_sequence("c").await.unwrap(), 4);
    assert_eq!(l.current_sequence("fresh").await.unwrap(), 40_000);
}

#[tokio::test]
async fn appends_wait_out_a_load_of_their_context_only() {
    let l = memory_ledger();
    append_n(&l, "busy", 1).await;
    let session = l.begin_load("busy", false).await.unwrap();
    let err = l
        .append("busy", "facts", vec![], Metadata::new(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::LoadInProgress { .. }), "{err}");
    assert!(matches!(
        l.begin_load("busy", false).await,
        Err(LedgerError::LoadInProgress { .. })
    ));
    // Other contexts are not held back.
    append_n(&l, "other", 3).await;
    drop(session);
    append_n(&l, "busy", 1).await;
    assert_eq!(l.current_sequence("busy").await.unwrap(), 2);
}

#[tokio::test]
async fn load_streams_in_pieces_of_any_size() {
    let blob = snapshot_of(3_000).await;
    for piece in [1usize, 7, 4096, blob.len()] {
        let l = memory_ledger();
        let mut session = l.begin_load("p", true).await.unwrap();
        for chunk in blob.chunks(piece) {
            session.feed(chunk).unwrap();
        }
        let out = session.finish().await.unwrap();
        assert_eq!(out.latest_sequence, 3_000, "piece size {piece}");
        let snap = l.snapshot("p").await.unwrap();
        assert_eq!(
            snap.merkle_root,
            snapshot::decode(&blob).unwrap().merkle_root
        );
    }
}

#[tokio::test]
async fn a_received_clock_cannot_block_a_context() {
    let l = memory_ledger();
    let e = l
        .append(
            "lamp",
            "k",
            b"first".to_vec(),
            Metadata::new(),
            Some(MAX_RECEIVED_LAMPORT),
        )
        .await
        .unwrap();
    assert_eq!(e.lamport_clock, MAX_RECEIVED_LAMPORT + 1);
    // The context still advances, plainly and with the largest received clock again.
    for received in [None, Some(MAX_RECEIVED_LAMPORT), Some(0)] {
        l.append("lamp", "k", vec![], Metadata::new(), received)
            .await
            .unwrap();
    }
    for bad in [MAX_RECEIVED_LAMPORT + 1, u64::MAX - 1, u64::MAX] {
        let err = l
            .append("lamp", "k", vec![], Metadata::new(), Some(bad))
            .await
            .unwrap_err();
        assert!(matches!(err, LedgerError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("2^63"), "{err}");
    }
    assert_eq!(l.current_sequence("lamp").await.unwrap(), 4);
}

#[tokio::test]
async fn a_snapshot_with_clocks_past_the_bound_is_refused() {
    use ledger_core::Entry;
    let entries = vec![Entry::new(
        "id".into(),
        "k".into(),
        vec![],
        1,
        1,
        Metadata::new(),
        u64::MAX,
    )];
    let blob = snapshot::encode("evil", 1, &entries).unwrap();
    let l = memory_ledger();
    let err = l.load("evil", blob, true).await.unwrap_err();
    assert!(err.to_string().contains("2^63"), "{err}");
    assert!(l.head("evil").await.unwrap().is_none());
}

#[tokio::test]
async fn a_retried_append_is_stored_once() {
    let l = memory_ledger();
    let first = l.append_entry(new("r", b"x", Some("op-1"))).await.unwrap();
    let again = l.append_entry(new("r", b"x", Some("op-1"))).await.unwrap();
    assert_eq!(again, first, "same sequence, id, time, clock and hash");
    assert_eq!(l.current_sequence("r").await.unwrap(), 1);
    // The same key with another payload is refused, naming the stored sequence.
    let err = l
        .append_entry(new("r", b"different", Some("op-1")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::IdempotencyConflict { sequence: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("sequence 1"), "{err}");
    // Keys are per context; other keys and unkeyed appends store as usual.
    let other = l.append_entry(new("s", b"x", Some("op-1"))).await.unwrap();
    assert_eq!(other.sequence, 1);
    l.append_entry(new("r", b"x", Some("op-2"))).await.unwrap();
    l.append_entry(new("r", b"x", None)).await.unwrap();
    assert_eq!(l.current_sequence("r").await.unwrap(), 3);
    // Invalid keys are refused before anything is queued.
    let long = "k".repeat(129);
    for bad in ["", long.as_str(), "a\nb"] {
        let err = l.append_entry(new("r", b"x", Some(bad))).await.unwrap_err();
        assert!(matches!(err, LedgerError::Invalid(_)), "{bad:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_append_store_it_once() {
    let l = memory_ledger();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let l = l.clone();
        tasks.push(tokio::spawn(async move {
            l.append_entry(new("race", b"once", Some("op")))
                .await
                .unwrap()
        }));
    }
    let mut entries = Vec::new();
    for t in tasks {
        entries.push(t.await.unwrap());
    }
    assert!(entries.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(l.current_sequence("race").await.unwrap(), 1);
}

#[tokio::test]
async fn idempotency_keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let l = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
        let e = l.append_entry(new("p", b"x", Some("k1"))).await.unwrap();
        l.close().await;
        e
    };
    let l = Ledger::open(dir.path(), LedgerConfig::default()).unwrap();
    let again = l.append_entry(new("p", b"x", Some("k1"))).await.unwrap();
    assert_eq!(*again, *first);
    assert_eq!(l.current_sequence("p").await.unwrap(), 1);
    assert!(matches!(
        l.append_entry(new("p", b"y", Some("k1"))).await,
        Err(LedgerError::IdempotencyConflict { sequence: 1, .. })
    ));
}

#[tokio::test]
async fn a_key_past_its_window_and_count_may_be_used_again() {
    let config = LedgerConfig {
        idempotency_window_ns: 0,
        idempotency_min_keys: 2,
        ..LedgerConfig::default()
    };
    let l = Ledger::with_store(Arc::new(MemoryStore::new()), config);
    l.append_entry(new("w", b"a", Some("k"))).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    // Still among the last two keyed appends: honoured.
    l.append_entry(new("w", b"b", Some("k2"))).await.unwrap();
    assert_eq!(
        l.append_entry(new("w", b"a", Some("k")))
            .await
            .unwrap()
            .sequence,
        1
    );
    // Two newer keys later, and older than the window: a new append.
    l.append_entry(new("w", b"c", Some("k3"))).await.unwrap();
    let e = l.append_entry(new("w", b"z", Some("k"))).await.unwrap();
    assert_eq!(e.sequence, 4);
}

#[tokio::test]
async fn snapshots_are_size_checked_and_stream_in_pieces() {
    let l = memory_ledger();
    append_n(&l, "s", 2_000).await;
    let whole = l.snapshot("s").await.unwrap();
    let err = l
        .snapshot_within("s", Some(whole.bytes.len() / 2), None)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::SnapshotTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("SnapshotStream"), "{err}");
    assert_eq!(
        l.snapshot_within("s", Some(whole.bytes.len()), None)
            .await
            .unwrap()
            .sequence,
        2_000
    );
    let mut stream = l.snapshot_stream("s", 4096, None).await.unwrap();
    assert_eq!(stream.info.sequence, 2_000);
    let mut bytes = Vec::new();
    let mut pieces = 0;
    let mut last_through = 0;
    while let Some(p) = stream.next().await {
        let p = p.unwrap();
        assert!(p.entries_through >= last_through);
        last_through = p.entries_through;
        bytes.extend_from_slice(&p.data);
        pieces += 1;
    }
    assert!(pieces > 10, "{pieces} pieces");
    assert_eq!(last_through, 2_000);
    let decoded = snapshot::decode(&bytes).unwrap();
    assert_eq!(decoded.merkle_root, whole.merkle_root);
    assert_eq!(decoded.tree_size(), 2_000);
}

#[tokio::test]
async fn reads_and_snapshots_stop_at_an_upper_bound() {
    let l = memory_ledger();
    append_n(&l, "s", 100).await;
    let at_40 = l.tree_state("s", 40).await.unwrap();
    let snap = l.snapshot_within("s", None, Some(40)).await.unwrap();
    assert_eq!(snap.sequence, 40);
    assert_eq!(snap.merkle_root, at_40.root);
    assert_eq!(snap.lamport_clock, at_40.lamport_clock);
    let decoded = snapshot::decode(&snap.bytes).unwrap();
    assert_eq!(decoded.tree_size(), 40);
    assert_eq!(decoded.merkle_root, at_40.root);
    let mut stream = l.snapshot_stream("s", 512, Some(40)).await.unwrap();
    let mut bytes = Vec::new();
    while let Some(p) = stream.next().await {
        bytes.extend_from_slice(&p.unwrap().data);
    }
    assert_eq!(snapshot::decode(&bytes).unwrap().entries, decoded.entries);
    // A bound past the end changes nothing.
    assert_eq!(
        l.snapshot_within("s", None, Some(1_000))
            .await
            .unwrap()
            .sequence,
        100
    );
    let head = l.head_at("s", 40).await.unwrap();
    assert_eq!((head.size(), head.root()), (40, at_40.root));
    let page = l.get_up_to("s", None, 30, None, Some(40)).await.unwrap();
    assert_eq!(page.entries.len(), 10);
    assert_eq!(page.entries.last().unwrap().sequence, 40);
    assert_eq!(page.latest_sequence, 40);
    assert!(!page.has_more);
    // Nothing visible: the context reads as not found.
    assert!(matches!(
        l.snapshot_within("s", None, Some(0)).await,
        Err(LedgerError::NotFound { .. })
    ));
}
