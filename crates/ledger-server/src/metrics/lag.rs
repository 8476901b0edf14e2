//! [`LagTable`]: replica lag as the writer sees it, reported by the cluster runtime's hooks
//! and summed per peer at scrape time.

use parking_lot::Mutex;
use std::collections::HashMap;

/// Replica lag as the writer sees it: peer → context → entries not yet acknowledged.
#[derive(Debug, Default)]
pub struct LagTable {
    pub(crate) by_peer: Mutex<HashMap<String, HashMap<String, u64>>>,
}

impl LagTable {
    /// As writer of `context`, `peer` has `lag` stored entries unacknowledged.
    pub fn set(&self, context: &str, peer: &str, lag: u64) {
        let mut t = self.by_peer.lock();
        let per = t.entry(peer.to_owned()).or_default();
        match per.get_mut(context) {
            Some(v) => *v = lag,
            None => {
                per.insert(context.to_owned(), lag);
            }
        }
    }

    /// This node no longer writes `context`.
    pub fn forget(&self, context: &str) {
        let mut t = self.by_peer.lock();
        for per in t.values_mut() {
            per.remove(context);
        }
        t.retain(|_, per| !per.is_empty());
    }
}
