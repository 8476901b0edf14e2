//! Quarantine: a follower's divergent suffix moved aside — never deleted, never served, never
//! merged — and the context cut back to the prefix it shares with its writer.
//!
//! [`Ledger::quarantine`] sends a [`Command::Quarantine`] to the sequencer, which hands off
//! and waits for everything sequenced before it to be durable (as a load's start does), then,
//! on its own thread and before it sequences anything else:
//!
//! 1. stores the cut: one atomic write batch moves the entries to the `quarantine` column
//!    family and writes the prefix's head ([`ledger_storage::LogStore::quarantine`]);
//! 2. records the new head as durable ([`crate::commit::DurableView`]): reads, heads, proofs
//!    and snapshots are capped at the kept size;
//! 3. replaces its cached head (the next append or apply continues at `from_sequence`) and
//!    forgets the context's cached idempotency keys (the store deleted the moved ones);
//! 4. tells the watch hub, which ends watchers beyond the cut and makes the others re-read.
//!
//! A storage failure latches like any write's. Readers racing the cut may see the context
//! before or after it; one that fetched the old size and then reads the moved part may get an
//! error.

use crate::sequencer::{Command, QuarantineCmd, Sequencer, unix_ns};
use crate::{Ledger, LedgerError};
use ledger_core::{Entry, validate};
use ledger_storage::QuarantineInfo;
use tokio::sync::oneshot;

impl Ledger {
    /// Moves the entries `from_sequence ..= size` of `context_id` aside into a new quarantine
    /// and cuts the context back to exactly its state at size `from_sequence - 1`: Merkle root
    /// and frontier, Lamport clock and last append time as they were then. Durable (per the
    /// durability mode) before it returns. Returns what was moved, or `None` (changing
    /// nothing) when `from_sequence` is beyond the context's size.
    ///
    /// Afterwards reads, heads, snapshots, proofs and tree states see only the entries
    /// `1 ..= from_sequence - 1`; the next append or [`Ledger::apply`] stores sequence
    /// `from_sequence`; an idempotency key whose entry was moved no longer answers (a retry is
    /// stored as a new append). Watchers whose position is beyond the kept size end with
    /// [`LedgerError::Truncated`]; the others continue gaplessly with the entries stored later.
    /// The moved entries are never served by reads or watches and never merged back; list them
    /// with [`Ledger::quarantines`] and read them with [`Ledger::quarantined_entries`].
    ///
    /// Errors: `InvalidArgument` for `from_sequence` 0 or an invalid context id,
    /// `LoadInProgress` while a load holds the context, `WritesStopped` after a storage failure,
    /// `StorageFailed` if storing the cut fails (which stops all writes, like a failed append).
    pub async fn quarantine(
        &self,
        context_id: &str,
        from_sequence: u64,
        reason: String,
    ) -> Result<Option<QuarantineInfo>, LedgerError> {
        validate::validate_context_id(context_id)?;
        if from_sequence == 0 {
            return Err(LedgerError::InvalidArgument(
                "from_sequence must be at least 1 (sequences start at 1)".into(),
            ));
        }
        self.inner.failed.check()?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Quarantine(QuarantineCmd {
            context_id: context_id.to_owned(),
            from_sequence,
            reason,
            reply,
        }))
        .await?;
        rx.await.map_err(|_| LedgerError::ShuttingDown)?
    }

    /// Every quarantine of `context_id` in id order, or of every context when `None` (by
    /// storage order of the contexts, then id). A point read of the quarantine rows, on the
    /// caller's thread.
    pub fn quarantines(
        &self,
        context_id: Option<&str>,
    ) -> Result<Vec<QuarantineInfo>, LedgerError> {
        if let Some(c) = context_id {
            validate::validate_context_id(c)?;
        }
        Ok(self.inner.store.quarantines(context_id)?)
    }

    /// The entries quarantine `id` of `context_id` moved aside, exactly as they were stored
    /// (same ids, sequences, content hashes, clocks), in sequence order. `NoSuchQuarantine` if
    /// the context has no quarantine `id`. Reads them all, on the caller's thread.
    pub fn quarantined_entries(
        &self,
        context_id: &str,
        id: u64,
    ) -> Result<Vec<Entry>, LedgerError> {
        validate::validate_context_id(context_id)?;
        self.inner
            .store
            .quarantined_entries(context_id, id)?
            .ok_or_else(|| LedgerError::NoSuchQuarantine {
                context_id: context_id.to_owned(),
                id,
            })
    }
}

impl Sequencer {
    /// Carries out a quarantine, with nothing in flight (the caller waited for the committer).
    pub(crate) fn quarantine(
        &mut self,
        q: &QuarantineCmd,
    ) -> Result<Option<QuarantineInfo>, LedgerError> {
        self.failed.check()?;
        let context_id = q.context_id.as_str();
        if self.reserved.lock().contains_key(context_id) {
            return Err(LedgerError::LoadInProgress {
                context_id: context_id.to_owned(),
            });
        }
        let cut = self
            .store
            .quarantine(context_id, q.from_sequence, &q.reason, unix_ns())
            .map_err(|e| {
                let reason = e.to_string();
                self.failed.fail(reason.clone());
                LedgerError::StorageFailed(reason)
            })?;
        let Some(cut) = cut else {
            return Ok(None);
        };
        let size = cut.head.size();
        self.path.durable.set(cut.head.clone());
        self.heads.insert(context_id.to_owned(), cut.head);
        self.dedupe.forget(context_id);
        self.path.hub.cut(context_id, size);
        tracing::warn!(
            context_id,
            id = cut.info.id,
            from_sequence = cut.info.from_sequence,
            count = cut.info.count,
            reason = %cut.info.reason,
            "quarantined a suffix of the context"
        );
        Ok(Some(cut.info))
    }
}
