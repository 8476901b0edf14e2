//! [`RecentEntries`]: the newest entries of a context with the Merkle root after each, and the
//! idempotency keys of those entries, so a writer ships what followers miss without reading
//! storage (and a follower stores shipped keys with their entries).

use crate::wire::KeyRecord;
use ledger_core::{Entry, Frontier, Hash};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Entries (and bytes) of the newest entries kept in memory for shipping without a read.
const RECENT_ENTRIES: usize = 2_048;
const RECENT_BYTES: usize = 8 << 20;
/// Most bytes of entries in one shipped batch (from memory or storage).
pub(crate) const MAX_BATCH_BYTES: usize = 4 << 20;

/// The log's tail as this node knows it: the frontier of everything stored (or, on the
/// writer, sequenced), the newest entries with the root after each, and idempotency keys.
#[derive(Debug)]
pub(crate) struct RecentEntries {
    frontier: Frontier,
    /// The newest stored entries, with the root after each.
    entries: VecDeque<(Arc<Entry>, Hash)>,
    bytes: usize,
    /// Idempotency keys of this node's entries, by sequence: the writer's own appends (to ship
    /// with them) and those shipped to it (to store with them). Kept for the entries in
    /// `entries`; a batch read back from storage goes without its keys.
    keys: BTreeMap<u64, (String, Hash)>,
}

impl RecentEntries {
    pub(crate) fn new() -> Self {
        RecentEntries {
            frontier: Frontier::new(),
            entries: VecDeque::new(),
            bytes: 0,
            keys: BTreeMap::new(),
        }
    }

    /// The frontier of the log's tail.
    pub(crate) fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// Starts again from `frontier` with no entries kept (after a quarantine, a rebuild, or a
    /// stored batch whose root differs from what was remembered). Keys stay.
    pub(crate) fn reset(&mut self, frontier: Frontier) {
        self.frontier = frontier;
        self.entries.clear();
        self.bytes = 0;
    }

    /// Keeps a stored entry (and the root after it) for shipping without a read.
    pub(crate) fn remember(&mut self, e: Arc<Entry>) {
        self.frontier.push_leaf(e.content_hash);
        self.bytes += e.encoded_len();
        self.entries.push_back((e, self.frontier.root()));
        while self.entries.len() > RECENT_ENTRIES || self.bytes > RECENT_BYTES {
            match self.entries.pop_front() {
                Some((old, _)) => self.bytes -= old.encoded_len(),
                None => break,
            }
        }
        let oldest = self.entries.front().map_or(u64::MAX, |(e, _)| e.sequence);
        while self
            .keys
            .first_key_value()
            .is_some_and(|(s, _)| *s < oldest)
        {
            self.keys.pop_first();
        }
    }

    /// Records the idempotency key of this writer's own entry at `sequence`.
    pub(crate) fn record_key(&mut self, sequence: u64, key: (String, Hash)) {
        self.keys.insert(sequence, key);
    }

    /// Keeps the idempotency keys shipped with a batch, to store them with its entries (those
    /// beyond `size`, the log's size).
    pub(crate) fn take_keys(&mut self, keys: Vec<KeyRecord>, size: u64) {
        for (sequence, key, fingerprint) in keys {
            if sequence > size {
                self.keys.insert(sequence, (key, fingerprint));
            }
        }
    }

    /// The idempotency keys of entries `after + 1 ..= upto` this node knows.
    pub(crate) fn keys_between(&self, after: u64, upto: u64) -> Vec<KeyRecord> {
        if after >= upto {
            return Vec::new();
        }
        self.keys
            .range(after + 1..=upto)
            .map(|(s, (k, f))| (*s, k.clone(), *f))
            .collect()
    }

    /// Entries `after + 1 ..= upto` (fewer if they exceed a batch's bytes) and the root after
    /// the last one, from memory if it still holds them (`size`: the log's size).
    pub(crate) fn cached(
        &self,
        after: u64,
        upto: u64,
        size: u64,
    ) -> Option<(Vec<Entry>, Option<Hash>)> {
        if upto <= after {
            return Some((Vec::new(), None));
        }
        if let Some((first, _)) = self.entries.front()
            && first.sequence <= after + 1
            && upto <= size
        {
            let skip = usize::try_from(after + 1 - first.sequence).unwrap_or(usize::MAX);
            let take = usize::try_from(upto - after).unwrap_or(usize::MAX);
            let mut bytes = 0;
            let mut out = Vec::new();
            let mut root = None;
            for (e, r) in self.entries.iter().skip(skip).take(take) {
                bytes += e.encoded_len();
                if !out.is_empty() && bytes > MAX_BATCH_BYTES {
                    break;
                }
                out.push((**e).clone());
                root = Some(*r);
            }
            return Some((out, root));
        }
        None
    }
}
