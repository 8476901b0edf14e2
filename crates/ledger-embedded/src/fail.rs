//! The write path's failure latch: set once, when storage fails; every later write is refused
//! with the reason, until the node restarts.

use crate::error::LedgerError;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once, when storage fails; every later write is refused with the reason.
#[derive(Debug, Default)]
pub(crate) struct FailState {
    failed: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl FailState {
    pub(crate) fn check(&self) -> Result<(), LedgerError> {
        if self.failed.load(Ordering::Acquire) {
            let reason = self.reason.lock().clone().unwrap_or_default();
            return Err(LedgerError::WritesStopped { reason });
        }
        Ok(())
    }

    pub(crate) fn fail(&self, reason: String) {
        tracing::error!(%reason, "storage failure: the ledger stops accepting writes");
        let mut r = self.reason.lock();
        if r.is_none() {
            *r = Some(reason);
        }
        self.failed.store(true, Ordering::Release);
    }

    /// The first failure's reason, if storage has failed.
    pub(crate) fn reason(&self) -> Option<String> {
        self.reason.lock().clone()
    }
}
