//! Helpers shared by the embedded ledger's test files.
#![allow(dead_code)]

use ledger_core::Metadata;
use ledger_embedded::{Ledger, LedgerConfig};
use ledger_storage::MemoryStore;
use std::sync::Arc;

/// A ledger on the in-memory reference store.
pub fn memory_ledger() -> Ledger {
    Ledger::with_store(Arc::new(MemoryStore::new()), LedgerConfig::default())
}

/// Appends `n` entries with key `facts` and payload `"<ctx>-<i>"`.
pub async fn append_n(l: &Ledger, ctx: &str, n: u64) {
    for i in 0..n {
        l.append(
            ctx,
            "facts",
            format!("{ctx}-{i}").into_bytes(),
            Metadata::new(),
            None,
        )
        .await
        .unwrap();
    }
}
