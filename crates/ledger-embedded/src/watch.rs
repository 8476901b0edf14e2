//! Gapless, ordered, duplicate-free watching of one context.
//!
//! A watcher subscribes to live delivery **before** it reads storage, then reads the committed
//! entries after its position, then takes live entries. Every entry is either committed before
//! the subscription (so the storage read sees it) or published after it (so the subscription
//! receives it); entries seen both ways are dropped by sequence. When live delivery skips ahead
//! (the watcher's buffer overflowed) it reads the missing entries from storage and rejoins.
//!
//! When a quarantine cuts the context back (see [`crate::hub`]), a watcher that delivered
//! entries beyond the cut ends with [`LedgerError::Truncated`]; one at or below it forgets
//! what it buffered beyond the cut, subscribes again and reads storage again, so it goes on
//! with the entries appended at the reused sequences, gaplessly. It never hands out an entry
//! it learnt of before a cut that removed it.

use crate::{Ledger, LedgerError};
use ledger_core::Entry;
use ledger_storage::ReadQuery;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Entries per storage read while catching up.
const CATCH_UP_CHUNK: usize = 1024;
/// Bytes per storage read while catching up.
const CATCH_UP_BYTES: usize = 8 << 20;

/// A stream of a context's entries with sequence above a starting point, in order, each once.
#[derive(Debug)]
pub struct WatchStream {
    ledger: Ledger,
    context_id: String,
    key: Option<String>,
    /// Every entry up to this sequence has been delivered or filtered out.
    position: u64,
    /// Every entry up to this sequence has been delivered, filtered out or is in `backlog`.
    fetched: u64,
    rx: broadcast::Receiver<Arc<Entry>>,
    backlog: VecDeque<Arc<Entry>>,
    caught_up: bool,
    storage_reads: u64,
    fallbacks: u64,
    /// The hub's cut count this stream has taken into account.
    cuts_seen: u64,
    /// Set once the stream ended because the context was cut back to this size below it.
    truncated_to: Option<u64>,
}

impl WatchStream {
    pub(crate) fn new(
        ledger: Ledger,
        context_id: String,
        key: Option<String>,
        from_sequence: u64,
        rx: broadcast::Receiver<Arc<Entry>>,
        cuts_seen: u64,
    ) -> Self {
        WatchStream {
            ledger,
            context_id,
            key,
            position: from_sequence,
            fetched: from_sequence,
            rx,
            backlog: VecDeque::new(),
            caught_up: false,
            storage_reads: 0,
            fallbacks: 0,
            cuts_seen,
            truncated_to: None,
        }
    }

    /// The sequence up to which this stream has delivered (or skipped by key filter).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// How many times this stream read from storage (the first catch-up included).
    pub fn storage_reads(&self) -> u64 {
        self.storage_reads
    }

    /// How many times live delivery left this stream behind (it lagged the buffer or skipped
    /// ahead) and it went back to storage.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks
    }

    /// The next entry. Waits for one to be appended if the stream is at the head.
    /// Ends with [`LedgerError::WatchEnded`] when the ledger closes, and with
    /// [`LedgerError::Truncated`] (every call from then on) when the context is cut back below
    /// the stream's position.
    pub async fn next(&mut self) -> Result<Arc<Entry>, LedgerError> {
        loop {
            self.check_cut()?;
            if let Some(e) = self.backlog.pop_front() {
                self.position = e.sequence;
                return Ok(e);
            }
            // Everything fetched is delivered or filtered out.
            self.position = self.fetched;
            if !self.caught_up {
                self.catch_up().await?;
                continue;
            }
            match self.rx.recv().await {
                Ok(e) => {
                    if self.check_cut()? {
                        continue; // `e` may be from before the cut: read storage again
                    }
                    if e.sequence <= self.fetched {
                        continue; // already delivered from storage
                    }
                    if e.sequence > self.fetched + 1 {
                        // Live delivery skipped ahead: fill the gap from storage.
                        self.caught_up = false;
                        self.fallbacks += 1;
                        continue;
                    }
                    self.fetched = e.sequence;
                    self.position = e.sequence;
                    if self.key.as_deref().is_none_or(|k| k == e.key) {
                        return Ok(e);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.caught_up = false;
                    self.fallbacks += 1;
                }
                Err(broadcast::error::RecvError::Closed) => {
                    if self.check_cut()? {
                        continue; // the channel ended for a cut, not for shutdown
                    }
                    return Err(LedgerError::WatchEnded {
                        resume_from: self.position,
                    });
                }
            }
        }
    }

    /// Takes the cuts of the context since the last check into account: `Ok(true)` if there
    /// was one at or above the position (the stream listens anew and reads storage again),
    /// [`LedgerError::Truncated`] if one went below it.
    fn check_cut(&mut self) -> Result<bool, LedgerError> {
        let truncated = |size| LedgerError::Truncated {
            context_id: self.context_id.clone(),
            size,
        };
        if let Some(size) = self.truncated_to {
            return Err(truncated(size));
        }
        let hub = &self.ledger.inner.hub;
        let Some(size) = hub.cut_since(&self.context_id, &mut self.cuts_seen) else {
            return Ok(false);
        };
        self.backlog.retain(|e| e.sequence <= size);
        if self.position > size {
            self.truncated_to = Some(size);
            self.backlog.clear();
            return Err(truncated(size));
        }
        self.fetched = self.fetched.min(size);
        self.caught_up = false;
        // Subscribe before reading storage again, as when the stream started; the old channel
        // may still hold entries from before the cut.
        self.rx = hub
            .subscribe(&self.context_id)
            .ok_or(LedgerError::WatchEnded {
                resume_from: self.position,
            })?;
        Ok(true)
    }

    async fn catch_up(&mut self) -> Result<(), LedgerError> {
        let query = ReadQuery {
            after_sequence: self.fetched,
            key: self.key.clone(),
            limit: Some(CATCH_UP_CHUNK),
            max_bytes: Some(CATCH_UP_BYTES),
            up_to: None,
        };
        let r = self.ledger.read(&self.context_id, query).await?;
        self.storage_reads += 1;
        self.caught_up = !r.has_more;
        self.fetched = r.next_after_sequence.max(self.fetched);
        self.backlog.extend(r.entries.into_iter().map(Arc::new));
        Ok(())
    }
}
