//! The replication layer's state per context: saved durably, read back, kept across restarts,
//! and failing like any write.

mod common;

use common::{FaultyStore, memory_ledger, rocks_ledger};
use ledger_core::Metadata;
use ledger_embedded::{Ledger, LedgerConfig, LedgerError};
use std::sync::Arc;
use std::sync::atomic::Ordering;

#[tokio::test]
async fn replication_state_round_trips() {
    let l = memory_ledger();
    assert_eq!(l.replication_state("c").unwrap(), None);
    l.save_replication_state("c", b"promise 3".to_vec())
        .await
        .unwrap();
    assert_eq!(l.replication_state("c").unwrap().unwrap(), b"promise 3");
    l.save_replication_state("c", vec![0, 1, 255])
        .await
        .unwrap();
    assert_eq!(l.replication_state("c").unwrap().unwrap(), vec![0, 1, 255]);
    assert_eq!(l.replication_state("d").unwrap(), None);
    // A context with state and no entries has no head.
    assert!(l.head("c").await.unwrap().is_none());
    assert!(matches!(
        l.replication_state(""),
        Err(LedgerError::Invalid(_))
    ));
    assert!(l.save_replication_state("", vec![]).await.is_err());
}

#[tokio::test]
async fn replication_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = rocks_ledger(dir.path());
        l.save_replication_state("c", b"epoch 7".to_vec())
            .await
            .unwrap();
        l.append("c", "facts", vec![], Metadata::new(), None)
            .await
            .unwrap();
        l.close().await;
        // Refused once closed, like appends.
        assert!(matches!(
            l.save_replication_state("c", b"late".to_vec()).await,
            Err(LedgerError::ShuttingDown)
        ));
    }
    let l = rocks_ledger(dir.path());
    assert_eq!(l.replication_state("c").unwrap().unwrap(), b"epoch 7");
    assert_eq!(l.current_sequence("c").await.unwrap(), 1);
}

#[tokio::test]
async fn a_failed_replication_state_write_stops_writes() {
    let store = Arc::new(FaultyStore::default());
    let l = Ledger::with_store(store.clone(), LedgerConfig::default());
    l.save_replication_state("c", b"one".to_vec())
        .await
        .unwrap();
    store.fail_replication.store(true, Ordering::SeqCst);
    let e = l
        .save_replication_state("c", b"two".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::StorageFailed(_)), "{e}");
    assert!(e.to_string().contains("injected disk failure"), "{e}");
    let e = l
        .append("c", "facts", vec![], Metadata::new(), None)
        .await
        .unwrap_err();
    assert!(matches!(e, LedgerError::WritesStopped { .. }), "{e}");
    store.fail_replication.store(false, Ordering::SeqCst);
    assert!(matches!(
        l.save_replication_state("c", b"three".to_vec()).await,
        Err(LedgerError::WritesStopped { .. })
    ));
    assert_eq!(l.replication_state("c").unwrap().unwrap(), b"one");
    assert!(!l.is_writable());
}
