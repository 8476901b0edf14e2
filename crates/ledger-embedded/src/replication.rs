//! The replication layer's state per context (promised epoch, epoch history, commit index),
//! saved as opaque bytes next to the context's entries.

use crate::{Ledger, LedgerError};
use ledger_core::validate;
use std::sync::Arc;

impl Ledger {
    /// The replication state last saved for `context_id`, `None` if none was. A point read on
    /// the caller's thread.
    pub fn replication_state(&self, context_id: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        validate::validate_context_id(context_id)?;
        Ok(self.inner.store.replication_state(context_id)?)
    }

    /// Replaces the replication state of `context_id` with `state`. Returns once it is durable
    /// (per the durability mode: a synced write in `sync` mode). The write runs on the
    /// blocking pool, independent of appends (it neither waits for nor orders them).
    ///
    /// Errors: `ShuttingDown` once the ledger is closing, `WritesStopped` after a storage
    /// failure, `StorageFailed` if the write fails — which stops all writes, like a failed
    /// append.
    pub async fn save_replication_state(
        &self,
        context_id: &str,
        state: Vec<u8>,
    ) -> Result<(), LedgerError> {
        validate::validate_context_id(context_id)?;
        if self.inner.tx.read().is_none() {
            return Err(LedgerError::ShuttingDown);
        }
        self.inner.failed.check()?;
        let store = Arc::clone(&self.inner.store);
        let failed = Arc::clone(&self.inner.failed);
        let ctx = context_id.to_owned();
        tokio::task::spawn_blocking(move || {
            failed.check()?;
            store.save_replication_state(&ctx, &state).map_err(|e| {
                let reason = e.to_string();
                failed.fail(reason.clone());
                LedgerError::StorageFailed(reason)
            })
        })
        .await
        .map_err(|_| LedgerError::ShuttingDown)?
    }
}
