//! Live delivery of committed entries to watchers: one bounded broadcast channel per watched
//! context. The sequencer publishes after each commit; a full channel overwrites its oldest
//! entries instead of waiting, so a slow watcher can never slow appends. A watcher that falls
//! behind notices the gap (or a `Lagged` error) and reads the missing entries from storage.
//!
//! **Cuts.** When a quarantine cuts a context back, entries it published may be wrong for a
//! watcher still to come (they sit in its channel) and sequences get reused. The hub numbers
//! every cut (one counter for all contexts, so a watcher's check costs one atomic load when
//! nothing was cut anywhere), keeps each context's cuts, and drops the context's channel so
//! watchers waiting on it wake up. A watcher checks for cuts after every entry it receives
//! and before it hands out anything: a cut below what it delivered ends it
//! ([`crate::LedgerError::Truncated`]); otherwise it drops what it buffered beyond the cut,
//! subscribes to a new channel and reads storage again.

use ledger_core::Entry;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::broadcast;

/// Owner of the per-context broadcast senders.
#[derive(Debug)]
pub(crate) struct WatchHub {
    channels: RwLock<Option<HashMap<String, broadcast::Sender<Arc<Entry>>>>>,
    capacity: usize,
    /// Cuts so far, of all contexts.
    cuts: AtomicU64,
    /// Each cut context's cuts, oldest first: (cut number, size cut back to). One pair per
    /// quarantine, kept for the life of the ledger (quarantines are rare).
    cut_log: Mutex<HashMap<String, Vec<(u64, u64)>>>,
}

impl WatchHub {
    pub(crate) fn new(capacity: usize) -> Self {
        WatchHub {
            channels: RwLock::new(Some(HashMap::new())),
            capacity: capacity.max(1),
            cuts: AtomicU64::new(0),
            cut_log: Mutex::new(HashMap::new()),
        }
    }

    /// The number of cuts so far: a watcher takes it before subscribing, and later asks
    /// [`WatchHub::cut_since`] about cuts after it.
    pub(crate) fn cut_count(&self) -> u64 {
        self.cuts.load(Ordering::SeqCst)
    }

    /// Records that `context_id` was cut back to `size` entries and ends its live channel, so
    /// every watcher of it notices (after receiving what was published before the cut). Call
    /// after the cut is stored and before anything is published at the reused sequences.
    pub(crate) fn cut(&self, context_id: &str, size: u64) {
        // Under the channel lock: a watcher that has seen this cut and subscribes again gets
        // a channel created after it, never the one being dropped.
        let mut channels = self.channels.write();
        {
            let mut log = self.cut_log.lock();
            let n = self.cuts.fetch_add(1, Ordering::SeqCst) + 1;
            log.entry(context_id.to_owned())
                .or_default()
                .push((n, size));
        }
        if let Some(map) = channels.as_mut() {
            map.remove(context_id);
        }
    }

    /// The smallest size `context_id` was cut back to by a cut numbered above `*seen`, if
    /// any; advances `*seen` to the current count.
    pub(crate) fn cut_since(&self, context_id: &str, seen: &mut u64) -> Option<u64> {
        if self.cuts.load(Ordering::SeqCst) == *seen {
            return None;
        }
        let log = self.cut_log.lock();
        // Read under the lock: every cut numbered up to `now` is in the log.
        let now = self.cuts.load(Ordering::SeqCst);
        let since = *seen;
        *seen = now;
        log.get(context_id)?
            .iter()
            .filter(|(n, _)| *n > since && *n <= now)
            .map(|(_, size)| *size)
            .min()
    }

    /// A receiver of every entry committed to `context_id` from now on; `None` once closed.
    pub(crate) fn subscribe(&self, context_id: &str) -> Option<broadcast::Receiver<Arc<Entry>>> {
        if let Some(tx) = self.channels.read().as_ref()?.get(context_id) {
            return Some(tx.subscribe());
        }
        let mut guard = self.channels.write();
        let map = guard.as_mut()?;
        let tx = map
            .entry(context_id.to_owned())
            .or_insert_with(|| broadcast::channel(self.capacity).0);
        Some(tx.subscribe())
    }

    /// Sends committed entries to the context's watchers, if any. Never blocks.
    pub(crate) fn publish(&self, context_id: &str, entries: &[Arc<Entry>]) {
        let unwatched = {
            let guard = self.channels.read();
            let Some(tx) = guard.as_ref().and_then(|m| m.get(context_id)) else {
                return;
            };
            for e in entries {
                if tx.send(Arc::clone(e)).is_err() {
                    break; // no receivers left
                }
            }
            tx.receiver_count() == 0
        };
        if unwatched {
            let mut guard = self.channels.write();
            if let Some(map) = guard.as_mut()
                && map
                    .get(context_id)
                    .is_some_and(|tx| tx.receiver_count() == 0)
            {
                map.remove(context_id);
            }
        }
    }

    /// Drops every sender: watchers drain what they have, then see the stream end.
    pub(crate) fn close(&self) {
        self.channels.write().take();
    }

    /// Number of contexts that currently have watchers.
    pub(crate) fn watched_contexts(&self) -> usize {
        self.channels.read().as_ref().map_or(0, HashMap::len)
    }
}
