//! Reads: pages of entries, heads and sizes, always capped at what is durable.

use crate::{Ledger, LedgerError, blocking};
use ledger_core::validate;
use ledger_storage::{ContextHead, ReadQuery, ReadResult};
use std::sync::Arc;

impl Ledger {
    /// Entries of a context after `after_sequence`, optionally only those with key
    /// `key_filter`, at most `limit` of them and at most the configured response bytes.
    /// A context without entries reads as empty with `latest_sequence` 0.
    pub async fn get(
        &self,
        context_id: &str,
        key_filter: Option<&str>,
        after_sequence: u64,
        limit: Option<usize>,
    ) -> Result<ReadResult, LedgerError> {
        self.get_up_to(context_id, key_filter, after_sequence, limit, None)
            .await
    }

    /// [`Self::get`] that sees only the first `up_to` entries (all when `None`), and reports
    /// `latest_sequence` no higher: a cluster replica serves only what a quorum holds.
    pub async fn get_up_to(
        &self,
        context_id: &str,
        key_filter: Option<&str>,
        after_sequence: u64,
        limit: Option<usize>,
        up_to: Option<u64>,
    ) -> Result<ReadResult, LedgerError> {
        let mut r = self
            .read(
                context_id,
                ReadQuery {
                    after_sequence,
                    key: key_filter.map(str::to_owned),
                    limit,
                    max_bytes: Some(self.inner.config.max_read_bytes),
                    up_to,
                },
            )
            .await?;
        Self::report_durable(&mut r, up_to);
        Ok(r)
    }

    /// A read with every knob of [`ReadQuery`]. Only durable entries are visible.
    pub async fn read(
        &self,
        context_id: &str,
        mut query: ReadQuery,
    ) -> Result<ReadResult, LedgerError> {
        validate::validate_context_id(context_id)?;
        if let Some(k) = &query.key {
            validate::validate_key_filter(k)?;
        }
        let cap = self.cap_at_durable(context_id, &mut query);
        let store = Arc::clone(&self.inner.store);
        let ctx = context_id.to_owned();
        let mut r = blocking(move || store.read(&ctx, &query)).await?;
        Self::report_durable(&mut r, cap);
        Ok(r)
    }

    /// Caps a read at the context's durable size; returns the cap.
    pub(crate) fn cap_at_durable(&self, context_id: &str, query: &mut ReadQuery) -> Option<u64> {
        let cap = self.inner.durable.size(context_id);
        if let Some(cap) = cap {
            query.up_to = Some(query.up_to.map_or(cap, |u| u.min(cap)));
        }
        cap
    }

    /// Entries written but not yet durable are not reported, not even by number.
    pub(crate) fn report_durable(r: &mut ReadResult, cap: Option<u64>) {
        if let Some(cap) = cap {
            r.latest_sequence = r.latest_sequence.min(cap);
        }
    }

    /// Sequence of the context's last entry (0 if it has none).
    pub async fn current_sequence(&self, context_id: &str) -> Result<u64, LedgerError> {
        Ok(self.head(context_id).await?.map_or(0, |h| h.size()))
    }

    /// The context's head (size, Lamport clock, Merkle frontier and root); `None` if empty.
    pub async fn head(&self, context_id: &str) -> Result<Option<ContextHead>, LedgerError> {
        validate::validate_context_id(context_id)?;
        if let Some(h) = self.inner.durable.head(context_id) {
            return Ok((h.size() > 0).then_some(h));
        }
        let store = Arc::clone(&self.inner.store);
        let ctx = context_id.to_owned();
        blocking(move || store.head(&ctx)).await
    }

    /// The context's head after its first `size` entries (at most the durable size): size,
    /// Lamport clock, time and Merkle frontier, as the head was when it had that size.
    pub async fn head_at(&self, context_id: &str, size: u64) -> Result<ContextHead, LedgerError> {
        if let Some(h) = self.head(context_id).await?
            && h.size() == size
        {
            return Ok(h);
        }
        let frontier = self.frontier_at(context_id, size).await?;
        let (lamport_clock, last_appended_at_ns) = self.clock_at(context_id, size).await?;
        Ok(ContextHead {
            context_id: context_id.to_owned(),
            lamport_clock,
            last_appended_at_ns,
            frontier,
        })
    }

    pub(crate) async fn require_head(&self, context_id: &str) -> Result<ContextHead, LedgerError> {
        self.head(context_id)
            .await?
            .ok_or_else(|| LedgerError::NotFound {
                context_id: context_id.to_owned(),
            })
    }

    /// The durable size of a context (0 if it has no entries), read without touching entries.
    /// Small point reads like this one run on the caller's task: they take microseconds.
    pub(crate) fn durable_size(&self, context_id: &str) -> Result<u64, LedgerError> {
        validate::validate_context_id(context_id)?;
        match self.inner.durable.size(context_id) {
            Some(n) => Ok(n),
            None => Ok(self.inner.store.size(context_id)?),
        }
    }

    pub(crate) fn require_size(&self, context_id: &str) -> Result<u64, LedgerError> {
        match self.durable_size(context_id)? {
            0 => Err(LedgerError::NotFound {
                context_id: context_id.to_owned(),
            }),
            n => Ok(n),
        }
    }

    /// Context ids with entries, in storage order, after `after`, at most `limit`.
    pub async fn list_contexts(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, LedgerError> {
        let store = Arc::clone(&self.inner.store);
        let after = after.map(str::to_owned);
        blocking(move || store.list_contexts(after.as_deref(), limit)).await
    }
}
