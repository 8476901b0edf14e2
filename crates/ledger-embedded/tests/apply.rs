//! A follower stores a writer's entries exactly, verified: `Ledger::apply`.

mod common;

use common::memory_ledger;
use ledger_core::{Entry, Hash, Metadata};
use ledger_embedded::{Ledger, LedgerError};

async fn writer_with(n: u64) -> Ledger {
    let w = memory_ledger();
    for i in 0..n {
        w.append(
            "c",
            "facts",
            format!("e{i}").into_bytes(),
            Metadata::new(),
            None,
        )
        .await
        .unwrap();
    }
    w
}

async fn entries(l: &Ledger, after: u64, n: usize) -> Vec<Entry> {
    l.get("c", None, after, Some(n)).await.unwrap().entries
}

async fn root_at(l: &Ledger, size: u64) -> Hash {
    l.tree_state("c", size).await.unwrap().root
}

#[tokio::test]
async fn a_follower_stores_the_writers_entries_exactly() {
    let w = writer_with(100).await;
    let f = memory_ledger();
    let mut watch = f.watch("c", None, 0).unwrap();
    for start in (0..100).step_by(30) {
        let batch = entries(&w, start, 30).await;
        let end = batch.last().unwrap().sequence;
        let out = f
            .apply("c", batch, Some(root_at(&w, end).await))
            .await
            .unwrap();
        assert_eq!(out.head.size(), end);
    }
    assert_eq!(entries(&f, 0, 1000).await, entries(&w, 0, 1000).await);
    assert_eq!(root_at(&f, 0).await, root_at(&w, 0).await);
    // Watchers on the follower see shipped entries like local ones, in order.
    for s in 1..=100 {
        assert_eq!(watch.next().await.unwrap().sequence, s);
    }
    // Shipping an overlapping batch again stores nothing new.
    let again = f.apply("c", entries(&w, 50, 60).await, None).await.unwrap();
    assert_eq!((again.entries_applied, again.head.size()), (0, 100));
}

#[tokio::test]
async fn bad_batches_are_refused_and_store_nothing() {
    let w = writer_with(20).await;
    let f = memory_ledger();
    f.apply("c", entries(&w, 0, 10).await, None).await.unwrap();
    let next = entries(&w, 10, 10).await;
    // A gap.
    let err = f.apply("c", next[1..].to_vec(), None).await.unwrap_err();
    assert!(matches!(err, LedgerError::InvalidArgument(_)), "{err}");
    // A payload changed in transit (its content hash no longer matches).
    let mut forged = next.clone();
    forged[3].payload = b"forged".to_vec();
    let err = f.apply("c", forged, None).await.unwrap_err();
    assert!(err.to_string().contains("content hash"), "{err}");
    // The wrong root for the batch's end.
    let err = f
        .apply("c", next.clone(), Some(Hash([7; 32])))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("root"), "{err}");
    assert_eq!(f.current_sequence("c").await.unwrap(), 10);
    // A follower whose history differs is told where.
    let other = memory_ledger();
    other
        .apply("c", entries(&w, 0, 4).await, None)
        .await
        .unwrap();
    other
        .append("c", "facts", b"local".to_vec(), Metadata::new(), None)
        .await
        .unwrap();
    let err = other
        .apply("c", entries(&w, 0, 10).await, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::Diverged { sequence: 5, .. }),
        "{err}"
    );
    // The good batch still applies.
    let out = f
        .apply("c", next, Some(root_at(&w, 20).await))
        .await
        .unwrap();
    assert_eq!((out.entries_applied, out.head.size()), (10, 20));
}

#[tokio::test]
async fn shipped_entries_wait_for_a_load_of_their_context() {
    let w = writer_with(5).await;
    let f = memory_ledger();
    let session = f.begin_load("c", false).await.unwrap();
    let err = f
        .apply("c", entries(&w, 0, 5).await, None)
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::LoadInProgress { .. }), "{err}");
    drop(session);
    assert_eq!(
        f.apply("c", entries(&w, 0, 5).await, None)
            .await
            .unwrap()
            .entries_applied,
        5
    );
}

#[tokio::test]
async fn idempotency_keys_shipped_with_entries_dedupe_retries_on_the_follower() {
    let w = memory_ledger();
    let keyed = |payload: &str, key: &str| {
        let mut e = ledger_core::NewEntry::new("c", "facts", payload.into(), Metadata::new(), None);
        e.idempotency_key = Some(key.into());
        e
    };
    let mut keys = Vec::new();
    for i in 0..5 {
        let e = keyed(&format!("p{i}"), &format!("k{i}"));
        let fp = ledger_core::idempotency::fingerprint(&e.key, &e.payload, &e.metadata);
        let stored = w.append_entry(e).await.unwrap();
        keys.push((stored.sequence, format!("k{i}"), fp));
    }
    let f = memory_ledger();
    // Keys of entries outside the batch are ignored; the batch's are stored with it.
    let mut shipped = keys.clone();
    shipped.push((99, "stray".into(), Hash([1; 32])));
    f.apply_with_keys("c", entries(&w, 0, 5).await, None, shipped)
        .await
        .unwrap();
    // The follower, writing the context now, answers a retry with the shipped entry.
    let retry = f.append_entry(keyed("p3", "k3")).await.unwrap();
    assert_eq!(retry.sequence, 4);
    assert_eq!(f.current_sequence("c").await.unwrap(), 5);
    // A different append under a shipped key is refused, not stored.
    let err = f.append_entry(keyed("other", "k1")).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::IdempotencyConflict { .. }),
        "{err}"
    );
    // The stray key was not recorded: it is free.
    let fresh = f.append_entry(keyed("new", "stray")).await.unwrap();
    assert_eq!(fresh.sequence, 6);
    // Without keys (plain `apply`) a retry is a new append.
    let g = memory_ledger();
    g.apply("c", entries(&w, 0, 5).await, None).await.unwrap();
    assert_eq!(g.append_entry(keyed("p3", "k3")).await.unwrap().sequence, 6);
}
