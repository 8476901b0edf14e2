//! Appends: validated on the caller's task, sequenced by the single writer, acknowledged once
//! durable.

use crate::sequencer::{AppendCmd, Command};
use crate::{Ledger, LedgerError};
use ledger_core::{Entry, Metadata, NewEntry, validate};
use std::sync::Arc;
use tokio::sync::oneshot;

/// A queued write's acknowledgement: resolves to what was stored once it is durable, or to
/// the error that stopped it (then nothing is stored). [`AppendAck`] for an append (the entry),
/// [`crate::BatchAck`] for a batch (its entries, in order).
#[derive(Debug)]
#[must_use = "the write is queued either way; the ack tells whether and how it was stored"]
pub struct Ack<T>(pub(crate) oneshot::Receiver<Result<T, LedgerError>>);

impl<T> std::future::Future for Ack<T> {
    type Output = Result<T, LedgerError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(LedgerError::ShuttingDown)))
    }
}

/// A queued append (from [`Ledger::submit`]): resolves to the stored entry once it is durable,
/// or to the error that stopped it.
pub type AppendAck = Ack<Arc<Entry>>;

/// An append queued by [`Ledger::submit_sequenced`]: `sequenced` resolves as soon as the
/// sequencer numbered it (before it is durable), `durable` like [`AppendAck`].
#[derive(Debug)]
pub struct SequencedAppend {
    /// The entry as it will be stored (id, sequence, time, clock, hash), or `None` if it was
    /// not sequenced: `durable` then says why. An idempotent retry yields the entry stored
    /// earlier, with its earlier sequence.
    pub sequenced: Sequenced,
    pub durable: AppendAck,
}

/// The first half of a [`SequencedAppend`] (`T` = the entry) or of a
/// [`crate::SequencedBatch`] (`T` = the batch's entries): what the sequencer numbered, as soon
/// as it did (before it is durable), or `None` if it was not sequenced (the `durable` half then
/// says why).
#[derive(Debug)]
#[must_use = "resolves once the append is sequenced"]
pub struct Sequenced<T = Arc<Entry>>(pub(crate) oneshot::Receiver<T>);

impl<T> std::future::Future for Sequenced<T> {
    type Output = Option<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(Result::ok)
    }
}

impl Ledger {
    /// Appends one entry and returns it as stored: with its id, sequence, time, Lamport clock
    /// and content hash. Returns once the entry is durable (per the durability mode).
    ///
    /// `received_lamport_clock` is the clock of an event in another context that caused this
    /// one; the entry's clock is then `max(local, received) + 1`.
    pub async fn append(
        &self,
        context_id: &str,
        key: &str,
        payload: Vec<u8>,
        metadata: Metadata,
        received_lamport_clock: Option<u64>,
    ) -> Result<Arc<Entry>, LedgerError> {
        self.submit(NewEntry::new(
            context_id,
            key,
            payload,
            metadata,
            received_lamport_clock,
        ))
        .await?
        .await
    }

    /// Appends `entry` (every option of an append) and returns it as stored, once durable.
    pub async fn append_entry(&self, entry: NewEntry) -> Result<Arc<Entry>, LedgerError> {
        self.submit(entry).await?.await
    }

    /// The first half of an append: validates it and queues it for the sequencer, waiting only
    /// for room in the queue. The returned [`AppendAck`] resolves to the stored entry once it
    /// is durable.
    ///
    /// Appends queued one after another (each `submit` awaited before the next starts) are
    /// applied in that order, while their acknowledgements are awaited concurrently: this is
    /// how a pipelined stream keeps many appends of one context in flight without reordering
    /// them.
    pub async fn submit(&self, e: NewEntry) -> Result<AppendAck, LedgerError> {
        self.queue_append(e, None).await
    }

    /// Like [`Self::submit`], and also tells when the entry is sequenced, before it is durable:
    /// a cluster writer ships entries to its followers while its own disk syncs them. Nothing
    /// about the entry may be acknowledged or served before `durable` resolves (a crash before
    /// then loses it here).
    pub async fn submit_sequenced(&self, e: NewEntry) -> Result<SequencedAppend, LedgerError> {
        let (tx, rx) = oneshot::channel();
        let durable = self.queue_append(e, Some(tx)).await?;
        Ok(SequencedAppend {
            sequenced: Sequenced(rx),
            durable,
        })
    }

    async fn queue_append(
        &self,
        e: NewEntry,
        sequenced: Option<oneshot::Sender<Arc<Entry>>>,
    ) -> Result<AppendAck, LedgerError> {
        validate::validate_append(
            &e.context_id,
            &e.key,
            &e.payload,
            &e.metadata,
            e.received_lamport_clock,
            &self.inner.config.limits,
        )?;
        if let Some(k) = &e.idempotency_key {
            validate::validate_idempotency_key(k)?;
        }
        self.inner.failed.check()?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append(AppendCmd {
            entry: e,
            reply,
            sequenced,
        }))
        .await?;
        Ok(Ack(rx))
    }
}
