//! Live delivery of committed entries to watchers: one bounded broadcast channel per watched
//! context. The sequencer publishes after each commit; a full channel overwrites its oldest
//! entries instead of waiting, so a slow watcher can never slow appends. A watcher that falls
//! behind notices the gap (or a `Lagged` error) and reads the missing entries from storage.

use ledger_core::Entry;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Owner of the per-context broadcast senders.
#[derive(Debug)]
pub(crate) struct WatchHub {
    channels: RwLock<Option<HashMap<String, broadcast::Sender<Arc<Entry>>>>>,
    capacity: usize,
}

impl WatchHub {
    pub(crate) fn new(capacity: usize) -> Self {
        WatchHub {
            channels: RwLock::new(Some(HashMap::new())),
            capacity: capacity.max(1),
        }
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
