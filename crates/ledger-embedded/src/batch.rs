//! Batch appends: many entries of one context, stored all or none with consecutive sequences,
//! acknowledged once.
//!
//! A batch is validated whole on the caller's task (any invalid item refuses the batch, naming
//! the item's index), then sent to the sequencer as **one** command: the sequencer numbers its
//! items one after another into its context's commit of the current group, so no other append
//! of the context falls between them, and the group is one store commit (one RocksDB write
//! batch), so a crash stores all of them or none.
//!
//! Batch items cannot carry idempotency keys (refused with `INVALID_ARGUMENT`): a per-item key
//! that was already used would have to either drop the item (breaking "consecutive") or refuse
//! the whole batch, neither of which a caller retrying a batch expects. Append keyed entries
//! one by one.

use crate::sequencer::{BatchCmd, Command};
use crate::{Ledger, LedgerError};
use ledger_core::{Entry, NewEntry, validate};
use std::sync::Arc;
use tokio::sync::oneshot;

/// A queued batch (from [`Ledger::submit_batch`]): resolves to the stored entries, in order,
/// once they are durable, or to the error that stopped the batch (then none is stored).
pub type BatchAck = crate::append::Ack<Vec<Arc<Entry>>>;

/// A batch queued by [`Ledger::submit_batch_sequenced`]: `sequenced` resolves as soon as the
/// sequencer numbered its entries (before they are durable), `durable` like [`BatchAck`].
#[derive(Debug)]
pub struct SequencedBatch {
    pub sequenced: SequencedEntries,
    pub durable: BatchAck,
}

/// The first half of a [`SequencedBatch`]: the entries as they will be stored, or `None` if
/// the batch was not sequenced (`durable` then says why).
pub type SequencedEntries = crate::append::Sequenced<Vec<Arc<Entry>>>;

impl Ledger {
    /// Appends every item of `items` to `context_id`, atomically: all are stored, with
    /// consecutive sequences in the given order, or none is. Returns the stored entries once
    /// they are durable (per the durability mode).
    ///
    /// An item's `context_id` may be left empty (it is the batch's). Refused as a whole, with
    /// nothing stored: an empty batch, more than `limits.max_batch_items` items or payloads
    /// totalling more than `limits.max_batch_bytes` (resource exhausted), an invalid item or an
    /// item with an idempotency key (invalid argument naming the item's index).
    pub async fn append_batch(
        &self,
        context_id: &str,
        items: Vec<NewEntry>,
    ) -> Result<Vec<Arc<Entry>>, LedgerError> {
        self.submit_batch(context_id, items).await?.await
    }

    /// The first half of [`Self::append_batch`]: validates the batch and queues it for the
    /// sequencer, waiting only for room in the queue. Batches and appends queued one after
    /// another are applied in that order.
    pub async fn submit_batch(
        &self,
        context_id: &str,
        items: Vec<NewEntry>,
    ) -> Result<BatchAck, LedgerError> {
        self.queue_batch(context_id, items, None).await
    }

    /// Like [`Self::submit_batch`], and also tells when the entries are sequenced, before they
    /// are durable (see [`Self::submit_sequenced`]): nothing about them may be acknowledged or
    /// served before `durable` resolves.
    pub async fn submit_batch_sequenced(
        &self,
        context_id: &str,
        items: Vec<NewEntry>,
    ) -> Result<SequencedBatch, LedgerError> {
        let (tx, rx) = oneshot::channel();
        let durable = self.queue_batch(context_id, items, Some(tx)).await?;
        Ok(SequencedBatch {
            sequenced: crate::append::Sequenced(rx),
            durable,
        })
    }

    async fn queue_batch(
        &self,
        context_id: &str,
        mut items: Vec<NewEntry>,
        sequenced: Option<oneshot::Sender<Vec<Arc<Entry>>>>,
    ) -> Result<BatchAck, LedgerError> {
        validate::validate_batch(context_id, &items, &self.inner.config.limits)?;
        self.inner.failed.check()?;
        for e in &mut items {
            if e.context_id.is_empty() {
                e.context_id = context_id.to_owned();
            }
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::AppendBatch(BatchCmd {
            context_id: context_id.to_owned(),
            entries: items,
            reply,
            sequenced,
        }))
        .await?;
        Ok(crate::append::Ack(rx))
    }
}
