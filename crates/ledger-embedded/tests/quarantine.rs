//! Quarantine: a divergent suffix moved aside, the context cut back to exactly its prefix, and
//! everything that caches or follows the context (heads, durable view, idempotency keys,
//! watchers) agreeing with the cut.

mod common;

use common::{FaultyStore, append_n, memory_ledger, rocks_ledger};
use ledger_core::merkle::{reference, verify_consistency, verify_inclusion};
use ledger_core::{Entry, Hash, Metadata, NewEntry};
use ledger_embedded::{ErrorKind, Ledger, LedgerConfig, LedgerError, WatchStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn keyed(ctx: &str, payload: &str, key: Option<&str>) -> NewEntry {
    NewEntry {
        context_id: ctx.into(),
        key: "facts".into(),
        payload: payload.as_bytes().to_vec(),
        idempotency_key: key.map(str::to_owned),
        ..NewEntry::default()
    }
}

async fn all(l: &Ledger, ctx: &str) -> Vec<Entry> {
    l.get(ctx, None, 0, None).await.unwrap().entries
}

/// Every inclusion proof and every consistency proof to the current size verify against the
/// current root, which is the reference root of the stored entries.
async fn proofs_verify(l: &Ledger, ctx: &str) {
    let entries = all(l, ctx).await;
    let leaves: Vec<Hash> = entries.iter().map(|e| e.content_hash).collect();
    let head = l.head(ctx).await.unwrap().unwrap();
    assert_eq!(head.root(), reference::root(&leaves));
    let n = head.size();
    for seq in 1..=n {
        let p = l.inclusion_proof(ctx, seq, 0).await.unwrap();
        assert_eq!((p.tree_size, p.root), (n, head.root()));
        verify_inclusion(p.leaf_index, p.tree_size, &p.leaf_hash, &p.path, &p.root).unwrap();
    }
    for m in 0..=n {
        let c = l.consistency_proof(ctx, m, 0).await.unwrap();
        assert_eq!(c.second_root, head.root());
        verify_consistency(m, n, &c.first_root, &c.second_root, &c.path).unwrap();
    }
}

async fn cut_back_to_the_prefix(l: Ledger) {
    for i in 1..=20u64 {
        let key = match i {
            2 => Some("kept"),
            15 => Some("moved"),
            _ => None,
        };
        l.append_entry(keyed("c", &format!("e{i}"), key))
            .await
            .unwrap();
    }
    let before = all(&l, "c").await;
    let at_12 = l.tree_state("c", 12).await.unwrap();
    let frontier_12 = l.frontier_at("c", 12).await.unwrap();

    let info = l
        .quarantine("c", 13, "diverged from epoch 3".into())
        .await
        .unwrap()
        .expect("entries to move");
    assert_eq!(
        (
            info.id,
            info.from_sequence,
            info.count,
            info.reason.as_str()
        ),
        (1, 13, 8, "diverged from epoch 3")
    );
    assert!(info.quarantined_at_ns > 0);

    // The head is exactly the head at 12.
    let head = l.head("c").await.unwrap().unwrap();
    assert_eq!(head.size(), 12);
    assert_eq!(head.root(), at_12.root);
    assert_eq!(head.frontier, frontier_12);
    assert_eq!(head.lamport_clock, at_12.lamport_clock);
    assert_eq!(head.last_appended_at_ns, at_12.appended_at_ns);
    assert_eq!(l.tree_state("c", 0).await.unwrap(), at_12);
    assert_eq!(l.current_sequence("c").await.unwrap(), 12);

    // Reads, proofs and snapshots see the prefix only.
    let page = l.get("c", None, 0, None).await.unwrap();
    assert_eq!(page.entries, before[..12]);
    assert_eq!(page.latest_sequence, 12);
    assert!(l.get("c", None, 12, None).await.unwrap().entries.is_empty());
    assert!(matches!(
        l.tree_state("c", 13).await,
        Err(LedgerError::OutOfRange(_))
    ));
    assert!(matches!(
        l.inclusion_proof("c", 13, 0).await,
        Err(LedgerError::OutOfRange(_))
    ));
    assert!(matches!(
        l.consistency_proof("c", 1, 20).await,
        Err(LedgerError::OutOfRange(_))
    ));
    proofs_verify(&l, "c").await;
    let blob = l.snapshot("c").await.unwrap();
    assert_eq!((blob.sequence, blob.merkle_root), (12, at_12.root));
    let copy = memory_ledger();
    copy.load("copy", blob.bytes, true).await.unwrap();
    assert_eq!(copy.head("copy").await.unwrap().unwrap().root(), at_12.root);
    assert_eq!(all(&copy, "copy").await, before[..12]);

    // The moved entries, listed and read back exactly.
    assert_eq!(l.quarantines(Some("c")).unwrap(), vec![info.clone()]);
    assert!(l.quarantines(None).unwrap().contains(&info));
    assert!(l.quarantines(Some("other")).unwrap().is_empty());
    assert_eq!(l.quarantined_entries("c", 1).unwrap(), before[12..]);
    let e = l.quarantined_entries("c", 2).unwrap_err();
    assert!(
        matches!(e, LedgerError::NoSuchQuarantine { id: 2, .. }),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::NotFound);

    // Idempotency: the moved entry's key no longer answers (the retry is stored, at the cut);
    // the kept entry's key still does.
    let retried = l
        .append_entry(keyed("c", "e15", Some("moved")))
        .await
        .unwrap();
    assert_eq!(retried.sequence, 13);
    assert_ne!(retried.id, before[14].id);
    let kept = l
        .append_entry(keyed("c", "e2", Some("kept")))
        .await
        .unwrap();
    assert_eq!(kept.sequence, 2);
    assert_eq!(kept.id, before[1].id);
    // And now the retried key answers with its new entry.
    let again = l
        .append_entry(keyed("c", "e15", Some("moved")))
        .await
        .unwrap();
    assert_eq!(again.id, retried.id);

    // Appends continue after the cut with correct roots, past the old size.
    append_n(&l, "c", 10).await;
    let now = all(&l, "c").await;
    assert!(now.iter().map(|e| e.sequence).eq(1..=23));
    assert_eq!(now[..12], before[..12]);
    assert!(
        now[12..]
            .iter()
            .all(|e| before.iter().all(|b| b.id != e.id)),
        "no moved entry is served"
    );
    assert!(now[13].lamport_clock > now[12].lamport_clock);
    proofs_verify(&l, "c").await;
    // The quarantine is untouched by the appends at its sequences.
    assert_eq!(l.quarantined_entries("c", 1).unwrap(), before[12..]);

    // Nothing to move, or a sequence that cannot be.
    assert!(l.quarantine("c", 24, "r".into()).await.unwrap().is_none());
    assert!(l.quarantine("none", 1, "r".into()).await.unwrap().is_none());
    assert!(matches!(
        l.quarantine("c", 0, "r".into()).await,
        Err(LedgerError::InvalidArgument(_))
    ));
    assert_eq!(l.current_sequence("c").await.unwrap(), 23);
    assert!(l.is_writable());
}

#[tokio::test]
async fn quarantine_cuts_back_to_the_prefix_in_memory() {
    cut_back_to_the_prefix(memory_ledger()).await;
}

#[tokio::test]
async fn quarantine_cuts_back_to_the_prefix_on_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    cut_back_to_the_prefix(rocks_ledger(dir.path())).await;
}

#[tokio::test]
async fn quarantine_cuts_back_to_the_prefix_on_rocksdb_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = LedgerConfig::default();
    config.rocks.durability = ledger_embedded::Durability::Buffered;
    cut_back_to_the_prefix(Ledger::open(dir.path(), config).unwrap()).await;
}

#[tokio::test]
async fn quarantine_of_every_entry_empties_the_context() {
    let l = memory_ledger();
    append_n(&l, "c", 5).await;
    let info = l.quarantine("c", 1, "r".into()).await.unwrap().unwrap();
    assert_eq!(info.count, 5);
    assert!(l.head("c").await.unwrap().is_none());
    assert_eq!(l.get("c", None, 0, None).await.unwrap().latest_sequence, 0);
    assert!(matches!(
        l.tree_state("c", 0).await,
        Err(LedgerError::NotFound { .. })
    ));
    let e = l
        .append("c", "facts", b"x".to_vec(), Metadata::new(), None)
        .await
        .unwrap();
    assert_eq!((e.sequence, e.lamport_clock), (1, 1));
}

#[tokio::test]
async fn a_follower_quarantines_its_divergent_suffix_then_applies_the_writers() {
    let w = memory_ledger();
    append_n(&w, "c", 30).await;
    let shipped = all(&w, "c").await;
    let f = memory_ledger();
    f.apply("c", shipped[..20].to_vec(), None).await.unwrap();
    // The follower's own suffix (written while it believed it was the writer).
    append_n(&f, "c", 5).await;
    let own = all(&f, "c").await[20..].to_vec();
    assert!(matches!(
        f.apply("c", shipped[20..].to_vec(), None).await,
        Err(LedgerError::Diverged { sequence: 21, .. })
    ));
    let info = f
        .quarantine("c", 21, "diverged".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.count, 5);
    let root = w.head("c").await.unwrap().unwrap().root();
    let applied = f
        .apply("c", shipped[20..].to_vec(), Some(root))
        .await
        .unwrap();
    assert_eq!((applied.entries_applied, applied.head.root()), (10, root));
    assert_eq!(all(&f, "c").await, shipped);
    assert_eq!(f.quarantined_entries("c", info.id).unwrap(), own);
}

/// The next entries of `w` are exactly `new` (same sequences and ids).
async fn expect_new(w: &mut WatchStream, new: &[Arc<Entry>]) {
    for n in new {
        let e = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("an entry in time")
            .unwrap();
        assert_eq!((e.sequence, &e.id), (n.sequence, &n.id), "a new entry");
    }
}

async fn watchers_around_the_cut(l: Ledger) {
    // A watcher following live delivery from before the first append.
    let mut live = l.watch("c", None, 0).unwrap();
    let first = {
        let l = l.clone();
        let pending = tokio::spawn(async move {
            let e = live.next().await.unwrap();
            (live, e)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        append_n(&l, "c", 20).await;
        pending.await.unwrap()
    };
    let (mut live, e1) = first;
    assert_eq!(e1.sequence, 1);
    let old = all(&l, "c").await;
    for s in 2..=10 {
        assert_eq!(live.next().await.unwrap().sequence, s);
    }
    // Watchers at several positions; each caught up from storage with all 20 entries buffered.
    async fn at(l: &Ledger, n: u64) -> WatchStream {
        let mut w = l.watch("c", None, 0).unwrap();
        for s in 1..=n {
            assert_eq!(w.next().await.unwrap().sequence, s);
        }
        w
    }
    let mut low = at(&l, 10).await;
    let mut edge = at(&l, 12).await;
    let mut mid = at(&l, 15).await;
    let mut high = at(&l, 20).await;
    let waiting = tokio::spawn(async move {
        let r = high.next().await;
        (high, r)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;

    l.quarantine("c", 13, "diverged".into())
        .await
        .unwrap()
        .unwrap();

    // A watcher idle at 20 wakes up and ends; so does one at 15, on its next call.
    let (mut high, r) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting watcher ends promptly")
        .unwrap();
    let e = r.unwrap_err();
    assert!(
        matches!(&e, LedgerError::Truncated { context_id, size: 12 } if context_id == "c"),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::Aborted);
    assert!(e.to_string().contains("at or below 12"), "{e}");
    assert!(matches!(
        high.next().await,
        Err(LedgerError::Truncated { size: 12, .. })
    ));
    assert!(matches!(
        mid.next().await,
        Err(LedgerError::Truncated { size: 12, .. })
    ));

    let new: Vec<Arc<Entry>> = {
        let mut v = Vec::new();
        for i in 0..5 {
            v.push(
                l.append(
                    "c",
                    "new",
                    format!("n{i}").into_bytes(),
                    Metadata::new(),
                    None,
                )
                .await
                .unwrap(),
            );
        }
        v
    };
    assert_eq!(new[0].sequence, 13);
    // Below the cut: the rest of the prefix, then the new entries, never a moved one.
    for w in [&mut low, &mut live] {
        for s in 11..=12 {
            let e = w.next().await.unwrap();
            assert_eq!(e.id, old[s - 1].id);
        }
        expect_new(w, &new).await;
    }
    // At the cut: straight to the new entries.
    expect_new(&mut edge, &new).await;
    // Watchers started afterwards see the new history only.
    let mut late = l.watch("c", None, 0).unwrap();
    for s in 1..=12 {
        assert_eq!(late.next().await.unwrap().id, old[s - 1].id);
    }
    expect_new(&mut late, &new).await;
    let mut resumed = l.watch("c", None, 12).unwrap();
    expect_new(&mut resumed, &new).await;
    // Live delivery goes on after the cut.
    let next = l
        .append("c", "new", b"last".to_vec(), Metadata::new(), None)
        .await
        .unwrap();
    for w in [&mut low, &mut live, &mut edge, &mut late, &mut resumed] {
        let e = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((e.sequence, &e.id), (18, &next.id));
    }
}

#[tokio::test]
async fn watchers_beyond_the_cut_end_and_the_others_continue_in_memory() {
    watchers_around_the_cut(memory_ledger()).await;
}

#[tokio::test]
async fn watchers_beyond_the_cut_end_and_the_others_continue_on_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    watchers_around_the_cut(rocks_ledger(dir.path())).await;
}

#[tokio::test]
async fn a_watcher_with_a_key_filter_is_judged_by_its_position() {
    let l = memory_ledger();
    for i in 1..=10u64 {
        let key = if i % 2 == 0 { "even" } else { "odd" };
        l.append("c", key, vec![], Metadata::new(), None)
            .await
            .unwrap();
    }
    // Delivered 2, 4, 6: its position is 6 even though 7 was filtered out later.
    let mut w = l.watch("c", Some("even"), 0).unwrap();
    for s in [2, 4, 6] {
        assert_eq!(w.next().await.unwrap().sequence, s);
    }
    l.quarantine("c", 7, "r".into()).await.unwrap().unwrap();
    l.append("c", "even", b"new".to_vec(), Metadata::new(), None)
        .await
        .unwrap();
    let e = w.next().await.unwrap();
    assert_eq!((e.sequence, e.payload.as_slice()), (7, &b"new"[..]));
}

#[tokio::test]
async fn quarantine_waits_for_appends_queued_before_it() {
    let l = memory_ledger();
    let mut acks = Vec::new();
    for i in 0..10 {
        acks.push(
            l.submit(NewEntry::new(
                "c",
                "facts",
                format!("{i}").into_bytes(),
                Metadata::new(),
                None,
            ))
            .await
            .unwrap(),
        );
    }
    // Queued after all ten: it sees them stored and moves 5..=10.
    let info = l.quarantine("c", 5, "r".into()).await.unwrap().unwrap();
    assert_eq!(info.count, 6);
    for (i, ack) in acks.into_iter().enumerate() {
        assert_eq!(ack.await.unwrap().sequence, i as u64 + 1);
    }
    assert_eq!(l.current_sequence("c").await.unwrap(), 4);
    assert_eq!(l.quarantined_entries("c", 1).unwrap().len(), 6);
}

#[tokio::test]
async fn quarantine_runs_while_other_contexts_append() {
    let l = memory_ledger();
    append_n(&l, "q", 30).await;
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let l = l.clone();
            tokio::spawn(async move {
                let ctx = format!("other-{t}");
                for i in 0..150 {
                    let e = l
                        .append(
                            &ctx,
                            "facts",
                            format!("{i}").into_bytes(),
                            Metadata::new(),
                            None,
                        )
                        .await
                        .unwrap();
                    assert_eq!(e.sequence, i + 1);
                }
            })
        })
        .collect();
    let mut size = 30;
    for round in 0..8u64 {
        let info = l
            .quarantine("q", size - 3, format!("round {round}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((info.id, info.count), (round + 1, 4));
        size -= 4;
        append_n(&l, "q", 6).await;
        size += 6;
        tokio::task::yield_now().await;
    }
    for w in writers {
        w.await.unwrap();
    }
    for t in 0..4 {
        let ctx = format!("other-{t}");
        let entries = all(&l, &ctx).await;
        assert!(entries.iter().map(|e| e.sequence).eq(1..=150));
        proofs_verify(&l, &ctx).await;
    }
    assert_eq!(l.current_sequence("q").await.unwrap(), size);
    proofs_verify(&l, "q").await;
    assert_eq!(l.quarantines(Some("q")).unwrap().len(), 8);
}

#[tokio::test]
async fn quarantine_is_refused_while_a_load_holds_the_context() {
    let l = memory_ledger();
    append_n(&l, "c", 3).await;
    let session = l.begin_load("c", false).await.unwrap();
    assert!(matches!(
        l.quarantine("c", 2, "r".into()).await,
        Err(LedgerError::LoadInProgress { .. })
    ));
    drop(session);
    assert_eq!(
        l.quarantine("c", 2, "r".into())
            .await
            .unwrap()
            .unwrap()
            .count,
        2
    );
}

#[tokio::test]
async fn a_failed_quarantine_stops_writes() {
    let store = Arc::new(FaultyStore::default());
    let l = Ledger::with_store(store.clone(), LedgerConfig::default());
    append_n(&l, "c", 3).await;
    store.fail_quarantine.store(true, Ordering::SeqCst);
    let e = l.quarantine("c", 2, "r".into()).await.unwrap_err();
    assert!(matches!(e, LedgerError::StorageFailed(_)), "{e}");
    let e = l
        .append("c", "facts", vec![], Metadata::new(), None)
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::WritesStopped { .. }), "{e}");
    assert!(matches!(
        l.quarantine("c", 2, "r".into()).await,
        Err(LedgerError::WritesStopped { .. })
    ));
    // Nothing was cut.
    assert_eq!(l.current_sequence("c").await.unwrap(), 3);
}

#[tokio::test]
async fn rocks_ledger_reopens_after_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    let (head, moved) = {
        let l = rocks_ledger(dir.path());
        append_n(&l, "c", 40).await;
        let moved = all(&l, "c").await[16..].to_vec();
        l.quarantine("c", 17, "diverged".into())
            .await
            .unwrap()
            .unwrap();
        let head = l.head("c").await.unwrap().unwrap();
        l.close().await;
        (head, moved)
    };
    let l = rocks_ledger(dir.path());
    assert_eq!(l.head("c").await.unwrap().unwrap(), head);
    assert_eq!(l.quarantines(Some("c")).unwrap()[0].count, 24);
    assert_eq!(l.quarantined_entries("c", 1).unwrap(), moved);
    let mut w = l.watch("c", None, 16).unwrap();
    append_n(&l, "c", 3).await;
    assert_eq!(w.next().await.unwrap().sequence, 17);
    assert_eq!(l.current_sequence("c").await.unwrap(), 19);
    proofs_verify(&l, "c").await;
    let snap = l.snapshot("c").await.unwrap();
    let copy = memory_ledger();
    copy.load("c", snap.bytes, true).await.unwrap();
    assert_eq!(
        copy.head("c").await.unwrap().unwrap().root(),
        l.head("c").await.unwrap().unwrap().root()
    );
}
