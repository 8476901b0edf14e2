//! Gapless, ordered, duplicate-free watching of one context.
//!
//! A watcher subscribes to live delivery **before** it reads storage, then reads the committed
//! entries after its position, then takes live entries. Every entry is either committed before
//! the subscription (so the storage read sees it) or published after it (so the subscription
//! receives it); entries seen both ways are dropped by sequence. When live delivery skips ahead
//! (the watcher's buffer overflowed) it reads the missing entries from storage and rejoins.

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
    rx: broadcast::Receiver<Arc<Entry>>,
    backlog: VecDeque<Arc<Entry>>,
    caught_up: bool,
    storage_reads: u64,
}

impl WatchStream {
    pub(crate) fn new(
        ledger: Ledger,
        context_id: String,
        key: Option<String>,
        from_sequence: u64,
        rx: broadcast::Receiver<Arc<Entry>>,
    ) -> Self {
        WatchStream {
            ledger,
            context_id,
            key,
            position: from_sequence,
            rx,
            backlog: VecDeque::new(),
            caught_up: false,
            storage_reads: 0,
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

    /// The next entry. Waits for one to be appended if the stream is at the head.
    /// Ends with [`LedgerError::ShuttingDown`] when the ledger closes.
    pub async fn next(&mut self) -> Result<Arc<Entry>, LedgerError> {
        loop {
            if let Some(e) = self.backlog.pop_front() {
                return Ok(e);
            }
            if !self.caught_up {
                self.catch_up().await?;
                continue;
            }
            match self.rx.recv().await {
                Ok(e) => {
                    if e.sequence <= self.position {
                        continue; // already delivered from storage
                    }
                    if e.sequence > self.position + 1 {
                        // Live delivery skipped ahead: fill the gap from storage.
                        self.caught_up = false;
                        continue;
                    }
                    self.position = e.sequence;
                    if self.key.as_deref().is_none_or(|k| k == e.key) {
                        return Ok(e);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.caught_up = false,
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(LedgerError::WatchEnded {
                        resume_from: self.position,
                    });
                }
            }
        }
    }

    async fn catch_up(&mut self) -> Result<(), LedgerError> {
        let query = ReadQuery {
            after_sequence: self.position,
            key: self.key.clone(),
            limit: Some(CATCH_UP_CHUNK),
            max_bytes: Some(CATCH_UP_BYTES),
            up_to: None,
        };
        let r = self.ledger.read(&self.context_id, query).await?;
        self.storage_reads += 1;
        self.caught_up = !r.has_more;
        self.position = r.next_after_sequence.max(self.position);
        self.backlog.extend(r.entries.into_iter().map(Arc::new));
        Ok(())
    }
}
